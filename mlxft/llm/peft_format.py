"""Hugging Face PEFT's LoRA/DoRA adapter format <-> mlx-lm's, both ways: tensor names and layouts, and the configs.

mlx-lm (and mlxft) keep `model.layers.N.<module>.lora_a` [in, r], `lora_b` [r, out] and DoRA's magnitude `m` [out], with
`lora_parameters.scale` and "the last `num_layers` blocks". PEFT keeps `base_model.model.model.layers.N.<module>.lora_A.weight`
[r, in] = lora_a.T, `lora_B.weight` [out, r] = lora_b.T and `lora_magnitude_vector` [out] (the same per-row magnitude:
both compute (m / ||W + scale B A||_row) (W x + scale B A x), the norm held constant), with `lora_alpha = scale * r`,
leaf `target_modules` and `layers_to_transform` + `layers_pattern` for a subset of blocks. A sequence classifier's
`score` head travels in `modules_to_save` as `base_model.model.score.weight`.

Nothing here needs torch: tensors are mx.arrays, and a model is described only by its block count and, when known,
the linear layers its checkpoint has (name -> (out, in)). Every problem found in an input is named at once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from mlxft.errors import BrokenFileError, ModelError
from mlxft.llm.model_files import check_safetensors, load_safetensors_checked, read_json_file

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PICKLE = "adapter_model.bin"  # older PEFT saves: a torch pickle, never loaded here
PEFT_CONFIG = "adapter_config.json"  # the same file name as mlx-lm's; a PEFT one has `peft_type`
PREFIX = "base_model.model."  # PeftModel wraps the transformers model as base_model.model
LAYERS_PATTERN = "layers"
HEAD_MODULES = ("score", "classifier")  # what PEFT puts in modules_to_save for SEQ_CLS
TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS")

_MLX_LEAF_TO_PEFT = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "m": "lora_magnitude_vector"}
_MLX_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(lora_a|lora_b|m)$")
_PEFT_NAME = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?)$")
_PEFT_HEAD = re.compile(r"^base_model\.model\.(score|classifier)\.weight$")
_PEFT_LEAF_TO_MLX = {"lora_A.weight": "lora_a", "lora_B.weight": "lora_b", "lora_magnitude_vector": "m", "lora_magnitude_vector.weight": "m"}

# PEFT LoraConfig fields that say nothing about the weights' meaning once trained (provenance, matching, init of A).
_HARMLESS = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "r", "lora_alpha", "lora_dropout",
             "target_modules", "exclude_modules", "bias", "fan_in_fan_out", "use_rslora", "use_dora", "modules_to_save",
             "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "auto_mapping",
             "peft_version", "megatron_core", "qalora_group_size", "runtime_config", "loftq_config", "eva_config",
             "lora_ga_config", "ensure_weight_tying"}
# Fields that change what the weights do (or add weights mlx-lm's format has no place for), when set.
_UNSUPPORTED = {
    "lora_bias": "LoRA with a trained bias on lora_B",
    "layer_replication": "layers replicated from others",
    "target_parameters": "LoRA on raw parameters (e.g. MoE experts) rather than linear layers",
    "trainable_token_indices": "trained embedding rows",
    "alora_invocation_tokens": "activated LoRA (the adapter switches on after invocation tokens)",
    "use_qalora": "QA-LoRA (pooled inputs to lora_A)",
    "use_bdlora": "block-diagonal LoRA",
    "megatron_config": "Megatron-parallel layers",
    "corda_config": "CorDA (the base weights were changed when the adapter was made)",
    "arrow_config": "Arrow routing over several adapters",
    "kasa_config": "KaSA (a singular-value adapter)",
    "monteclora_config": "MonteCLoRA (a sampled adapter)",
    "velora_config": "VeLoRA",
}
# init_lora_weights values that rewrite the base model's weights: the adapter is meaningless on the original base.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")
CONFIG_HINT = "mlxft reads PEFT LoRA and DoRA adapters of linear layers (save_pretrained of a LoraConfig, safetensors)"


class PeftFormatError(ModelError):
    """An adapter that cannot be converted: `problems` lists every `field: reason`."""

    def __init__(self, where, problems: list[str], hint: str | None = None, what: str = "cannot be converted"):
        shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        super().__init__(f"{where}: {what}: {len(problems)} problem(s)\n  {shown}" if len(problems) > 1 else f"{where}: {what}: {problems[0]}", hint)
        self.problems = problems


@dataclass
class BlockLayout:
    """Which modules of which blocks an adapter holds."""

    layers: list[int]  # block indices, ascending
    keys: list[str]  # module paths inside a block (self_attn.q_proj), sorted
    rank: int
    dora: bool
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (in, out)


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _layout(entries: dict[tuple[int, str], dict[str, tuple]], leaf_names: dict[str, str], dora: bool, rank: int | None,
            a_shape, b_shape) -> tuple[BlockLayout | None, list[str]]:
    """Check that every (block, module) holds A, B (and DoRA's magnitude), of one rank, the same modules in every block.

    `entries[(block, key)][leaf] = shape`; `a_shape(shape) -> (in, r)` and `b_shape(shape) -> (r, out)` read each side's
    layout; `leaf_names` spell the leaves (and the rank's field) as the input names them, for messages.
    """
    problems = []
    if not entries:
        return None, ["no LoRA tensors in the weights file"]
    layers = sorted({i for i, _ in entries})
    keys = sorted({k for _, k in entries})
    wanted = {"lora_a", "lora_b"} | ({"m"} if dora else set())
    ranks, dims = set(), {}
    for (i, k), leaves in sorted(entries.items()):
        missing = sorted(wanted - set(leaves))
        extra = sorted(set(leaves) - wanted)
        if missing:
            problems.append(f"layers.{i}.{k}: lacks {', '.join(leaf_names[m] for m in missing)}")
        if extra:
            problems.append(f"layers.{i}.{k}: has {', '.join(leaf_names[e] for e in extra)}, which only a DoRA adapter has (use_dora is off)")
        if "lora_a" not in leaves or "lora_b" not in leaves:
            continue
        flat = [leaf_names[x] for x in ("lora_a", "lora_b") if len(leaves[x]) != 2]
        if flat:
            problems.append(f"layers.{i}.{k}: {', '.join(flat)} must be 2-D (a linear layer's), got {tuple(leaves['lora_a'])} and {tuple(leaves['lora_b'])}")
            continue
        (din, ra), (rb, dout) = a_shape(leaves["lora_a"]), b_shape(leaves["lora_b"])
        if ra != rb:
            problems.append(f"layers.{i}.{k}: {leaf_names['lora_a']} has rank {ra} but {leaf_names['lora_b']} rank {rb}")
            continue
        ranks.add(ra)
        if "m" in leaves and tuple(leaves["m"]) != (dout,):
            problems.append(f"layers.{i}.{k}: {leaf_names['m']} has shape {tuple(leaves['m'])}, expected ({dout},) (one per output)")
        if dims.setdefault(k, (din, dout)) != (din, dout):
            problems.append(f"layers.{i}.{k}: shapes differ from the same module in another block ({(din, dout)} vs {dims[k]})")
    for i in layers:
        lacking = [k for k in keys if (i, k) not in entries]
        if lacking:
            problems.append(f"layers.{i}: has no adapter on {', '.join(lacking)} (other blocks do); mlx-lm's format adapts the same modules in every block")
    if len(ranks) > 1:
        problems.append(f"rank: the modules have different ranks {sorted(ranks)}; mlx-lm's format has one rank")
    elif rank is not None and ranks and ranks != {rank}:
        problems.append(f"{leaf_names['rank']}: the config says rank {rank} but the tensors have rank {ranks.pop()}")
    if problems:
        return None, problems
    return BlockLayout(layers, keys, ranks.pop() if ranks else rank or 0, dora, dims), []


def _last_blocks_problem(layers: list[int], num_model_layers: int | None) -> str | None:
    """mlx-lm adapts the last N blocks: the blocks must be contiguous and end at the model's last."""
    if layers != list(range(layers[0], layers[-1] + 1)):
        return f"layers_to_transform: blocks {layers} are not contiguous; mlx-lm's format adapts the last N blocks"
    if num_model_layers is not None and layers[-1] >= num_model_layers:
        return f"layers_to_transform: the adapter has block {layers[-1]}, this model only blocks 0..{num_model_layers - 1} (made for another base model?)"
    if num_model_layers is not None and layers[-1] != num_model_layers - 1:
        return (f"layers_to_transform: blocks {layers[0]}..{layers[-1]} are not the last blocks of this {num_model_layers}-block model; "
                "mlx-lm's format adapts the last N blocks")
    return None


# -- mlx-lm -> PEFT ------------------------------------------------------------------------------------------


def _alpha_for(scale: float, rank: int, recorded) -> float | int:
    """lora_alpha for PEFT's scaling = lora_alpha / r: the recorded alpha when it gives back the scale exactly, else scale * r
    or the float next to it that does. (Some scales, e.g. 0.1 at r 3, are no float divided by r: then within one ulp.)"""
    candidates = [recorded] if _number(recorded) else []
    x = below = above = scale * rank
    candidates.append(x)
    for _ in range(4):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        candidates += [below, above]
    for alpha in candidates:
        if alpha / rank == scale:
            return int(alpha) if float(alpha).is_integer() else float(alpha)
    return x


def _peft_would_adapt(targets, layers_to_transform, names) -> set[str]:
    """The module names PEFT's matching picks from `names` for a list of targets (the rule of check_target_module_exists)."""
    if isinstance(targets, str):
        return {n for n in names if re.fullmatch(targets, n)}
    out = set()
    for n in names:
        if n in targets:
            out.add(n)
            continue
        if not any(n.endswith("." + t) for t in targets):
            continue
        if layers_to_transform is not None:
            m = re.match(rf"(?:^|.*?\.){LAYERS_PATTERN}\.(?P<idx>\d+)\.", n)
            if m is None or int(m.group("idx")) not in layers_to_transform:
                continue
        out.add(n)
    return out


def choose_target_modules(layout: BlockLayout, num_model_layers: int, base_linears: dict[str, tuple] | None):
    """(target_modules, layers_to_transform) that make PEFT adapt exactly the modules this adapter holds.

    Leaf names (q_proj) as PEFT users write them; the paths inside a block (self_attn.q_proj) when two modules share a
    leaf or a leaf would also catch a module left alone; else a regex of the exact modules. Without the base's module
    list (`base_linears`), only the adapter's own modules are known.
    """
    layers = None if layout.layers == list(range(num_model_layers)) else list(layout.layers)
    adapted = {f"model.layers.{i}.{k}" for i in layout.layers for k in layout.keys}
    names = set(base_linears) | adapted if base_linears is not None else adapted
    leaves = sorted({k.rsplit(".", 1)[-1] for k in layout.keys})
    tries = ([leaves] if len(leaves) == len(layout.keys) else []) + [list(layout.keys)]
    for targets in tries:
        if _peft_would_adapt(targets, layers, names) == adapted:
            return targets, layers
    blocks = "|".join(str(i) for i in layout.layers)
    modules = "|".join(re.escape(k) for k in layout.keys)
    return rf"model\.layers\.(?:{blocks})\.(?:{modules})", None


def mlx_layout(cfg: dict, shapes: dict[str, tuple]) -> BlockLayout:
    """The blocks and modules of an mlx-lm adapter (its config and its tensors' shapes), checked."""
    method = cfg.get("fine_tune_type", "lora")
    if method == "full":
        raise ModelError("a full fine-tune has no LoRA to write in PEFT's format (every weight of its blocks changed)",
                         hint="export the whole model instead: mlxft export RUN --format fused")
    entries: dict[tuple[int, str], dict[str, tuple]] = {}
    strays = []
    for name, shape in shapes.items():
        m = _MLX_NAME.match(name)
        if m is None:
            strays.append(f"{name}: not a LoRA tensor of a block (model.layers.N.<module>.lora_a | lora_b | m)")
            continue
        entries.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = tuple(shape)
    lp = cfg.get("lora_parameters") or {}
    layout, problems = _layout(entries, {"lora_a": "lora_a", "lora_b": "lora_b", "m": "m", "rank": "lora_parameters.rank"}, method == "dora", lp.get("rank"),
                               a_shape=lambda s: (s[0], s[1]), b_shape=lambda s: (s[0], s[1]))
    problems = strays + problems
    if layout is not None and cfg.get("num_layers") is not None and len(layout.layers) != min(cfg["num_layers"], layout.layers[-1] + 1):
        problems.append(f"num_layers: the config says the last {cfg['num_layers']} blocks, the tensors cover blocks {layout.layers}")
    if layout is not None and lp.get("keys") and sorted(lp["keys"]) != layout.keys:
        problems.append(f"lora_parameters.keys: the config names {sorted(lp['keys'])}, the tensors hold {layout.keys}")
    if layout is not None:
        bad = _last_blocks_problem(layout.layers, None)
        problems += [bad] if bad else []
    if problems:
        raise PeftFormatError("the mlx-lm adapter", problems, hint="was adapters.safetensors saved with this adapter_config.json?")
    return layout


def peft_config_from_mlx(cfg: dict, layout: BlockLayout, *, num_model_layers: int, base_model: str | None, task_type: str = "CAUSAL_LM",
                         modules_to_save: list[str] | None = None, base_linears: dict[str, tuple] | None = None) -> dict:
    """PEFT's adapter_config.json for an mlx-lm adapter (with only the fields PEFT has long read, so older versions load it)."""
    lp = cfg["lora_parameters"]
    mlxft = cfg.get("mlxft") if isinstance(cfg.get("mlxft"), dict) else {}
    targets, layers = choose_target_modules(layout, num_model_layers, base_linears)
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model, "revision": None, "inference_mode": True,
        "r": layout.rank, "lora_alpha": _alpha_for(float(lp["scale"]), layout.rank, mlxft.get("alpha")),
        "lora_dropout": float(lp.get("dropout", 0.0)), "target_modules": targets,
        "layers_to_transform": layers, "layers_pattern": LAYERS_PATTERN if layers is not None else None,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": layout.dora,
        "modules_to_save": modules_to_save or None, "init_lora_weights": True, "rank_pattern": {}, "alpha_pattern": {},
    }


def peft_weights_from_mlx(weights: dict[str, mx.array], head: dict[str, mx.array] | None = None, dtype: mx.Dtype | None = None) -> dict[str, mx.array]:
    """PEFT's tensor names and layouts: lora_A = lora_a.T [r, in], lora_B = lora_b.T [out, r], lora_magnitude_vector = m."""
    out = {}
    for name, w in weights.items():
        m = _MLX_NAME.match(name)
        leaf = m.group(3)
        out[f"{PREFIX}model.layers.{m.group(1)}.{m.group(2)}.{_MLX_LEAF_TO_PEFT[leaf]}"] = w if leaf == "m" else w.T
    for name, w in (head or {}).items():
        out[PREFIX + name] = w
    if dtype is not None:
        out = {k: v.astype(dtype) for k, v in out.items()}
    return out


# -- PEFT -> mlx-lm ------------------------------------------------------------------------------------------


def is_peft_folder(folder: str | Path) -> bool:
    """A PEFT adapter folder: its adapter_config.json has `peft_type`, or PEFT's weights file is there without mlx-lm's."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
        if isinstance(cfg, dict):
            return "peft_type" in cfg
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        pass
    return ((folder / PEFT_WEIGHTS).is_file() or (folder / PEFT_PICKLE).is_file()) and not (folder / "adapters.safetensors").is_file()


def peft_config_problems(cfg: dict) -> list[str]:
    """What in a PEFT adapter_config.json mlxft cannot take, as `field: reason` lines (every one)."""
    problems = []
    kind = cfg.get("peft_type")
    if kind != "LORA":
        what = f"a {kind} adapter" if isinstance(kind, str) else f"{kind!r}"
        return [f"peft_type: {what}; mlxft reads LORA adapters (with use_dora for DoRA), not other PEFT methods"]
    task = cfg.get("task_type")
    if task is not None and task not in TASK_TYPES:
        problems.append(f"task_type: {task}; mlxft reads adapters of causal LMs (CAUSAL_LM) and their sequence classifiers (SEQ_CLS)")
    if not _whole(cfg.get("r")):
        problems.append(f"r: must be a positive integer, got {cfg.get('r')!r}")
    if not _number(cfg.get("lora_alpha")):
        problems.append(f"lora_alpha: must be a number, got {cfg.get('lora_alpha')!r}")
    dropout = cfg.get("lora_dropout", 0.0)
    if not (_number(dropout) and 0 <= dropout < 1):
        problems.append(f"lora_dropout: must be a number in [0, 1), got {dropout!r}")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias: {cfg['bias']!r} (the adapter trained biases too); mlx-lm's format holds LoRA weights only: bias must be 'none'")
    if cfg.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out: true (GPT-2 style Conv1D layers); mlxft adapts linear layers")
    for name, default in (("rank_pattern", cfg.get("r")), ("alpha_pattern", cfg.get("lora_alpha"))):
        pattern = cfg.get(name) or {}
        if not isinstance(pattern, dict):
            problems.append(f"{name}: must be an object of module -> value, got {pattern!r}")
        elif any(v != default for v in pattern.values()):
            shown = ", ".join(f"{k}: {v}" for k, v in list(pattern.items())[:4])
            problems.append(f"{name}: varies by module ({shown}); mlx-lm's format has one rank and one scale")
    for name, what in _UNSUPPORTED.items():
        if cfg.get(name):
            problems.append(f"{name}: set ({what}); mlxft reads plain LoRA and DoRA")
    init = cfg.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(f"init_lora_weights: {init!r} changes the base model's weights when the adapter is made, so the adapter "
                        "only fits that changed base; save it with PEFT's path_initial_model_for_weight_conversion to get a plain LoRA")
    saved = cfg.get("modules_to_save") or []
    if not isinstance(saved, list) or not all(isinstance(m, str) for m in saved):
        problems.append(f"modules_to_save: must be a list of module names, got {saved!r}")
    else:
        others = [m for m in saved if m not in HEAD_MODULES]
        if others:
            problems.append(f"modules_to_save: {others} (whole modules trained alongside the LoRA); mlx-lm's format holds LoRA weights "
                            f"only (a sequence classifier's {'/'.join(HEAD_MODULES)} head is read)")
    unknown = sorted(k for k, v in cfg.items() if k not in _HARMLESS and k not in _UNSUPPORTED and v not in (None, False, {}, [], "", 0))
    problems += [f"{k}: set to {cfg[k]!r}, a PEFT setting mlxft does not know; it may change what the weights mean" for k in unknown]
    return problems


def read_peft_config(folder: str | Path) -> dict:
    path = Path(folder) / PEFT_CONFIG
    cfg = read_json_file(path, "the PEFT adapter's config", hint="copy the adapter_config.json saved with adapter_model.safetensors into the folder")
    problems = peft_config_problems(cfg)
    if problems:
        raise PeftFormatError(path, problems, hint=CONFIG_HINT, what="mlxft cannot read this adapter")
    return cfg


def peft_weights_file(folder: str | Path) -> Path:
    """PEFT's safetensors weights file of `folder`; a pickle-only adapter is refused (nothing pickled is loaded)."""
    folder = Path(folder)
    path = folder / PEFT_WEIGHTS
    if not path.is_file() and (folder / PEFT_PICKLE).is_file():
        raise ModelError(f"{folder / PEFT_PICKLE}: the adapter's weights are a torch pickle; mlxft loads safetensors only, never pickles",
                         hint="re-save it with PEFT (model.save_pretrained(dir) writes safetensors by default), or convert the .bin you trust")
    return path


@dataclass
class PeftAdapter:
    """A PEFT adapter read as mlx-lm's: its config and tensors in mlx-lm's names, plus a classifier's head and notes."""

    config: dict  # mlx-lm's adapter_config.json
    layout: BlockLayout
    peft_config: dict
    weights: dict[str, mx.array] | None = None  # mlx-lm names; None when only the headers were read
    head: dict[str, mx.array] | None = None  # SEQ_CLS: {"score.weight": [labels, hidden]}
    head_shape: tuple | None = None
    notes: list[str] = field(default_factory=list)


def mlx_adapter_from_peft(peft_cfg: dict, shapes: dict[str, tuple], *, num_model_layers: int | None, where) -> PeftAdapter:
    """mlx-lm's config for a (checked) PEFT config and its tensors' shapes; `num_model_layers` None: not known here."""
    dora = bool(peft_cfg.get("use_dora"))
    entries: dict[tuple[int, str], dict[str, tuple]] = {}
    problems, head_shape = [], None
    for name, shape in sorted(shapes.items()):
        m = _PEFT_NAME.match(name)
        if m is not None:
            entries.setdefault((int(m.group(1)), m.group(2)), {})[_PEFT_LEAF_TO_MLX[m.group(3)]] = tuple(shape)
            continue
        h = _PEFT_HEAD.match(name)
        if h is not None and peft_cfg.get("task_type") == "SEQ_CLS":
            head_shape = tuple(shape)
            continue
        if ".default." in name or name.endswith(".default"):
            problems.append(f"{name}: carries PEFT's adapter name (.default.); a save_pretrained file has it removed")
        elif "lora_embedding" in name:
            problems.append(f"{name}: LoRA on an embedding; mlxft adapts linear layers of the blocks")
        elif name.startswith(PREFIX) and not name.startswith(PREFIX + "model.layers."):
            problems.append(f"{name}: outside the transformer blocks (model.layers.N); mlx-lm's format adapts the blocks only")
        else:
            problems.append(f"{name}: not a LoRA weight of a linear layer in a block (base_model.model.model.layers.N.<module>.lora_A.weight)")
    names = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "m": "lora_magnitude_vector", "rank": "r"}
    layout, found = _layout(entries, names, dora, peft_cfg.get("r") if not peft_cfg.get("rank_pattern") else None,
                            a_shape=lambda s: (s[1], s[0]), b_shape=lambda s: (s[1], s[0]))
    problems += found
    wanted = peft_cfg.get("layers_to_transform")
    if layout is not None:
        bad = _last_blocks_problem(layout.layers, num_model_layers)
        problems += [bad] if bad else []
        if isinstance(wanted, int):
            wanted = [wanted]
        if isinstance(wanted, list) and sorted(wanted) != layout.layers:
            problems.append(f"layers_to_transform: the config names blocks {sorted(wanted)}, the tensors cover {layout.layers}")
    if peft_cfg.get("task_type") == "SEQ_CLS" and head_shape is None:
        problems.append("modules_to_save: a SEQ_CLS adapter without base_model.model.score.weight (its classification head)")
    if problems:
        raise PeftFormatError(where, problems, hint=CONFIG_HINT, what="mlxft cannot read this adapter")
    r, alpha = layout.rank, peft_cfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if peft_cfg.get("use_rslora") else alpha / r
    n = len(layout.layers)
    config = {"fine_tune_type": "dora" if dora else "lora", "num_layers": n,
              "lora_parameters": {"rank": r, "scale": scale, "dropout": float(peft_cfg.get("lora_dropout", 0.0)), "keys": layout.keys},
              "mlxft": {"alpha": alpha, "base_model": peft_cfg.get("base_model_name_or_path")}}
    notes = []
    if peft_cfg.get("use_rslora"):
        notes.append(f"rank-stabilised LoRA: scale = lora_alpha / sqrt(r) = {scale:g}")
    return PeftAdapter(config=config, layout=layout, peft_config=peft_cfg, head_shape=head_shape, notes=notes)


def mlx_weights_from_peft(weights: dict[str, mx.array]) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
    """(mlx-lm's tensors: lora_a = lora_A.T, lora_b = lora_B.T, m = lora_magnitude_vector; the head as {score.weight})."""
    out, head = {}, {}
    for name, w in weights.items():
        m = _PEFT_NAME.match(name)
        if m is not None:
            leaf = _PEFT_LEAF_TO_MLX[m.group(3)]
            out[f"model.layers.{m.group(1)}.{m.group(2)}.{leaf}"] = w if leaf == "m" else w.T
        elif _PEFT_HEAD.match(name):
            head["score.weight"] = w
    return out, head


def read_peft_adapter(folder: str | Path, *, num_model_layers: int | None = None, load: bool = True) -> PeftAdapter:
    """A PEFT adapter folder as mlx-lm's adapter (config checked, every tensor's name and shape checked; `load`: the tensors too)."""
    folder = Path(folder)
    cfg = read_peft_config(folder)
    path = peft_weights_file(folder)
    hint = "copy the adapter again (adapter_model.safetensors saved with this adapter_config.json)"
    infos = check_safetensors(path, "the PEFT adapter's weights file", hint=hint)
    adapter = mlx_adapter_from_peft(cfg, {k: v.shape for k, v in infos.items()}, num_model_layers=num_model_layers, where=path)
    if load:
        adapter.weights, head = mlx_weights_from_peft(load_safetensors_checked(path, "the PEFT adapter's weights file", hint=hint))
        adapter.head = head or None
    return adapter


# -- mlxft import-adapter ---------------------------------------------------------------------------------------

CLASSIFIER_SIDECAR = "mlxft_classifier.json"  # an exported lm-classify run's labels and prompt (mlxft's classifier.json), beside PEFT's files


def base_layer_count(spec: str | None) -> int | None:
    """The block count of a base model named by a folder, catalogue key or Hub id, when its config is at hand (never downloaded)."""
    if not spec:
        return None
    from mlxft.llm.catalogue import config_at_hand

    try:
        config = config_at_hand(spec)
    except ModelError:
        config = None
    if config is None and re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec, "config.json")
            config = json.loads(Path(cached).read_text(encoding="utf-8")) if isinstance(cached, str) else None
        except (OSError, ValueError, ImportError):
            config = None
    if not isinstance(config, dict):
        return None
    n = config.get("num_hidden_layers", (config.get("text_config") or {}).get("num_hidden_layers"))
    return n if _whole(n) else None


def import_peft_adapter(src: str | Path, out: str | Path, *, base: str | None = None) -> tuple[Path, list[str]]:
    """Write the PEFT adapter in `src` as an mlx-lm adapter folder `out` (atomically; never over a non-empty folder).

    (folder, notes). A SEQ_CLS adapter's head goes to score.safetensors, and an mlxft export's classifier config back to
    classifier.json, so the folder is again what an lm-classify run leaves. `base` (a folder, catalogue key or Hub id) says
    how many blocks the model has, where PEFT's base_model_name_or_path is not at hand.
    """
    from mlxft.atomic import atomic_save_safetensors, atomic_write_text, publish_dir, temp_dir_for
    from mlxft.errors import MlxftError, write_error
    from mlxft.llm.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ModelError(f"{src}: no such folder" if not src.exists() else f"{src}: a PEFT adapter is a folder, not a file",
                         hint="pass the folder PEFT's save_pretrained wrote (adapter_config.json + adapter_model.safetensors)")
    if not is_peft_folder(src):
        raise ModelError(f"{src}: not a PEFT adapter folder (no adapter_config.json with peft_type)",
                         hint="an mlx-lm adapter folder needs no import: pass it to --adapter as it is")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MlxftError(f"{out}: already exists and is not an empty folder; nothing is written over it",
                         hint="name a new folder with --out, or remove that one yourself")
    peft_cfg = read_peft_config(src)
    spec = base or peft_cfg.get("base_model_name_or_path")
    n_layers = base_layer_count(spec)
    adapter = read_peft_adapter(src, num_model_layers=n_layers)
    notes = list(adapter.notes)
    if n_layers is None:
        if peft_cfg.get("layers_to_transform") is not None:
            raise ModelError(f"{src}: layers_to_transform: blocks {adapter.layout.layers} are adapted, and whether they are the base model's "
                             f"last blocks (all mlx-lm's format can say) depends on the base, whose config is not at hand ({spec or 'not named'})",
                             hint="pass the base model with --base (a folder, catalogue key or Hub id in the local cache)")
        notes.append(f"the base model's config is not at hand ({spec or 'not named'}): blocks 0..{adapter.layout.layers[-1]} are taken to be all of them")
    if base:
        adapter.config["mlxft"]["base_model"] = base
    sidecar = src / CLASSIFIER_SIDECAR
    classifier = read_json_file(sidecar, "the exported classifier's config") if adapter.head and sidecar.is_file() else None
    if classifier is not None and classifier.get("num_labels") != adapter.head_shape[0]:
        raise BrokenFileError(sidecar, f"num_labels: {classifier.get('num_labels')!r}, but the score head has {adapter.head_shape[0]} rows",
                              hint="was it copied from another export?")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(out)
    except OSError as exc:
        raise write_error(exc, out, "create the adapter folder") from None
    try:
        mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), adapter.weights, metadata={"format": "mlx"})
        atomic_write_text(tmp / ADAPTER_CONFIG, json.dumps(adapter.config, indent=2))
        if adapter.head:
            atomic_save_safetensors(tmp / "score.safetensors", adapter.head, metadata={"format": "mlx"})
            if classifier is not None:
                atomic_write_text(tmp / "classifier.json", json.dumps(classifier, indent=2))
        publish_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(exc, getattr(exc, "filename", None) or out, "write the imported adapter") from None
        raise
    lp = adapter.config["lora_parameters"]
    notes.insert(0, f"{adapter.config['fine_tune_type']} r{lp['rank']} (scale {lp['scale']:g}) on {', '.join(lp['keys'])} of the last "
                    f"{adapter.config['num_layers']} blocks; base model: {adapter.config['mlxft']['base_model'] or 'not named'}")
    if adapter.head:
        k, hidden = adapter.head_shape
        notes.append(f"a sequence classifier: its score head ({k} labels x {hidden}) is in score.safetensors"
                     + ("" if classifier is not None else "; without mlxft's classifier config (labels, prompt template) `mlxft predict` cannot use it"))
    return out, notes
