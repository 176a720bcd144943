"""Applying LoRA and DoRA layers (`mlxft/lora.py`) to a causal LM, and saving/loading adapters in mlx-lm's format
(loading also reads PEFT adapter folders, through `mlxft/llm/peft_format.py`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxft.atomic import atomic_write_text, publish_dir, temp_dir_for
from mlxft.errors import BrokenFileError, ModelError
from mlxft.lora import swap_in_adapters
from mlxft.llm.model_files import check_safetensors, load_safetensors_checked, read_json_file
from mlxft.llm.peft_format import PEFT_WEIGHTS, is_peft_folder
from mlxft.runs import ADAPTER_DIR

ADAPTER_WEIGHTS = "adapters.safetensors"  # the names mlx_lm.generate --adapter-path reads
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_LEAVES = ("lora_a", "lora_b", "m")


def resolve_target_keys(model: nn.Module, targets, num_layers: int) -> list[str]:
    """Module paths inside one block (e.g. 'self_attn.q_proj') that the targets name."""
    blocks = model.layers[-num_layers:] if num_layers else []
    linears = set()
    for block in blocks:
        for name, module in block.named_modules():
            if isinstance(module, (nn.Linear, nn.QuantizedLinear)):
                linears.add(name)
    if targets == "all-linear":
        return sorted(linears)
    keys, missing = [], []
    for t in targets:
        matched = sorted(k for k in linears if k == t or k.endswith("." + t))
        (keys.extend(matched) if matched else missing.append(t))
    if missing:
        raise ModelError(
            f"LoRA targets {missing} match no linear layer of this model",
            hint=f"choose from: {', '.join(sorted({k.split('.')[-1] for k in linears}))} (or 'all-linear')",
        )
    return sorted(set(keys))


def apply_adapters(model: nn.Module, method: str, rank: int, scale: float, dropout: float, keys: list[str], num_layers: int) -> None:
    """Freeze the model and swap LoRA/DoRA layers in for `keys` of the last `num_layers` blocks."""
    model.freeze()
    for block in model.layers[-num_layers:]:
        swap_in_adapters(block, keys, method, rank, scale, dropout)


def adapter_layer_count(model: nn.Module, layers) -> int:
    n = len(model.layers)
    return n if layers == "all" else min(int(layers), n)


def adapter_config(method: str, num_layers: int, rank: int, scale: float, dropout: float, keys: list[str], alpha: float | None = None, base_model: str | None = None) -> dict:
    """The adapter_config.json mlx-lm reads (`lora_parameters.scale` is alpha/rank), plus our own provenance keys."""
    cfg = {"fine_tune_type": method, "num_layers": num_layers}
    if method != "full":
        cfg["lora_parameters"] = {"rank": rank, "scale": scale, "dropout": dropout, "keys": keys}
    cfg["mlxft"] = {"alpha": alpha, "base_model": base_model}
    return cfg


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def save_adapter(model: nn.Module, folder: str | Path, config: dict, weights: dict | None = None, also=None) -> Path:
    """Write adapters.safetensors + adapter_config.json into `folder` atomically (a complete folder or the old one).

    `weights` default to every trainable weight; `also(tmp)` writes more files into the folder before it is published.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(folder)
    weights = trainable_weights(model) if weights is None else weights
    mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), weights, metadata={"format": "mlx"})
    atomic_write_text(tmp / ADAPTER_CONFIG, json.dumps(config, indent=2))
    if also is not None:
        also(tmp)
    publish_dir(tmp, folder)
    return folder


CONFIG_HINT = "restore the adapter_config.json that was saved with these weights (mlxft train writes both into RUN/adapter)"
WEIGHTS_HINT = "copy the adapter again from where it was trained, or train it again"


def read_adapter_config(folder: str | Path) -> dict:
    """The adapter_config.json of an adapter folder or run directory, checked: every bad field is named at once."""
    path = resolve_adapter_dir(folder) / ADAPTER_CONFIG
    cfg = read_json_file(path, "the adapter's config", hint=CONFIG_HINT)
    problems = adapter_config_problems(cfg)
    if problems:
        raise BrokenFileError(path, f"{len(problems)} problem(s) in the adapter's config:\n  " + "\n  ".join(problems),
                              hint=CONFIG_HINT)
    return cfg


def adapter_config_problems(cfg: dict) -> list[str]:
    """What is missing or of the wrong type in an adapter_config.json, as `field: problem` lines."""

    def whole(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x > 0

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    problems = []
    method = cfg.get("fine_tune_type", "lora")
    if method not in ("lora", "dora", "full"):
        problems.append(f"fine_tune_type: must be lora, dora or full, got {method!r}")
    if not whole(cfg.get("num_layers")):
        problems.append("num_layers: missing" if "num_layers" not in cfg else f"num_layers: must be a positive integer, got {cfg['num_layers']!r}")
    if method == "full":
        return problems
    lp = cfg.get("lora_parameters")
    if not isinstance(lp, dict):
        problems.append("lora_parameters: missing (a LoRA or DoRA adapter needs its rank, scale and keys)" if lp is None
                        else f"lora_parameters: must be an object with rank, scale and keys, got {lp!r}")
        return problems
    if not whole(lp.get("rank")):
        problems.append("lora_parameters.rank: missing" if "rank" not in lp else f"lora_parameters.rank: must be a positive integer, got {lp['rank']!r}")
    if not number(lp.get("scale")):
        problems.append("lora_parameters.scale: missing" if "scale" not in lp else f"lora_parameters.scale: must be a number, got {lp['scale']!r}")
    dropout = lp.get("dropout", 0.0)
    if not (number(dropout) and 0 <= dropout < 1):
        problems.append(f"lora_parameters.dropout: must be a number in [0, 1), got {dropout!r}")
    keys = lp.get("keys")
    if keys is not None and not (isinstance(keys, list) and keys and all(isinstance(k, str) and k for k in keys)):
        problems.append(f"lora_parameters.keys: must be a list of module names (e.g. self_attn.q_proj), got {keys!r}")
    return problems


def resolve_adapter_dir(path: str | Path) -> Path:
    """The folder holding adapter_config.json: `path` itself, or a run directory's (or checkpoint's) adapter/."""
    path = Path(path)
    for folder in (path, path / ADAPTER_DIR):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    hint = ("pass an adapter folder (mlx-lm: adapter_config.json + adapters.safetensors; PEFT: adapter_config.json + "
            "adapter_model.safetensors), a run directory or one of its checkpoints")
    if not path.exists():
        raise ModelError(f"{path}: no such adapter folder", hint=hint)
    if not path.is_dir():
        raise ModelError(f"{path}: an adapter is a folder, not a file", hint=hint)
    for folder in (path, path / ADAPTER_DIR):
        for weights in (ADAPTER_WEIGHTS, PEFT_WEIGHTS):
            if (folder / weights).is_file():
                raise BrokenFileError(folder / ADAPTER_CONFIG, f"the adapter's config is missing ({weights} is here without it)",
                                      hint=f"copy the adapter_config.json saved with these weights into {folder}")
    raise ModelError(f"{path}: no adapter found", hint=hint)


def check_adapter(path: str | Path) -> tuple[Path, dict]:
    """(adapter folder, checked config) once its config and its weights file's header are found sound; no model needed.

    A PEFT adapter folder is read as the mlx-lm adapter it converts to (its config in mlx-lm's terms).
    """
    folder = resolve_adapter_dir(path)
    if is_peft_folder(folder):
        return folder, _read_peft(folder, num_model_layers=None, load=False).config
    cfg = read_adapter_config(folder)
    check_safetensors(folder / ADAPTER_WEIGHTS, "the adapter weights file", hint=WEIGHTS_HINT)
    return folder, cfg


def _read_peft(folder: Path, num_model_layers: int | None, load: bool):
    """A PEFT LoRA/DoRA adapter of a causal LM as mlx-lm's (a sequence classifier's is refused: its head has no place here)."""
    from mlxft.llm.peft_format import read_peft_adapter

    adapter = read_peft_adapter(folder, num_model_layers=num_model_layers, load=load)
    if adapter.head_shape is not None:
        raise ModelError(f"{folder}: a sequence classifier's adapter (task_type SEQ_CLS, with its score head), not a causal LM's",
                         hint=f"`mlxft import-adapter {folder}` turns it into an mlxft folder: the body's adapter and score.safetensors")
    return adapter


def _check_targets_exist(model: nn.Module, cfg: dict, where: Path) -> None:
    """Every module the (converted) adapter adapts is a linear layer in each of the model's last num_layers blocks."""
    keys, n = cfg["lora_parameters"]["keys"], cfg["num_layers"]
    if n > len(model.layers):
        raise ModelError(f"{where}: the adapter covers {n} blocks, this model has {len(model.layers)}",
                         hint="was it trained on another base model? (its base_model_name_or_path names the one it was)")
    linears = [{k for k, m in block.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))} for block in model.layers[-n:]]
    missing = sorted({k for k in keys for have in linears if k not in have})
    if missing:
        leaves = sorted({k.split(".")[-1] for have in linears for k in have})
        raise ModelError(f"{where}: target_modules: {', '.join(missing)} are not linear layers of this model's blocks",
                         hint=f"was it trained on another base model? This model's blocks have: {', '.join(leaves)}")


def load_adapter(model: nn.Module, path: str | Path) -> dict:
    """Apply the adapter at `path` (an mlx-lm or PEFT adapter folder, or a run directory) to `model`; returns its config
    (mlx-lm's, for a PEFT adapter the one it converts to).

    Every tensor is checked against the model before any is loaded: a wrong name or shape, and for LoRA/DoRA a
    missing tensor (which would silently stay at its initial value), is named with both shapes.
    """
    folder = resolve_adapter_dir(path)
    if is_peft_folder(folder):
        adapter = _read_peft(folder, num_model_layers=len(model.layers), load=True)
        cfg, weights, weights_path = adapter.config, adapter.weights, folder / PEFT_WEIGHTS
        _check_targets_exist(model, cfg, folder / PEFT_WEIGHTS)
    else:
        folder, cfg = check_adapter(folder)
        weights_path = folder / ADAPTER_WEIGHTS
        weights = load_safetensors_checked(weights_path, "the adapter weights file", hint=WEIGHTS_HINT)
    method = cfg.get("fine_tune_type", "lora")
    if method != "full":
        lp = cfg["lora_parameters"]
        keys = lp.get("keys") or resolve_target_keys(model, ["q_proj", "v_proj"], cfg["num_layers"])
        apply_adapters(model, method, lp["rank"], lp["scale"], lp.get("dropout", 0.0), keys, cfg["num_layers"])
    params = dict(tree_flatten(model.parameters()))
    expected = trainable_weights(model) if method != "full" else {}
    problems = [f"{k}: not a parameter of this model ({len(model.layers)} layers)" for k in sorted(weights) if k not in params]
    problems += [f"{k}: the adapter has shape {tuple(weights[k].shape)}, this model {tuple(params[k].shape)}"
                 for k in sorted(weights) if k in params and params[k].shape != weights[k].shape]
    problems += [f"{k}: missing from the adapter" for k in sorted(expected) if k not in weights]
    if problems:
        shown = "\n  ".join(problems[:6]) + (f"\n  ... and {len(problems) - 6} more" if len(problems) > 6 else "")
        base = cfg.get("mlxft", {}).get("base_model") if isinstance(cfg.get("mlxft"), dict) else None
        raise ModelError(
            f"{weights_path}: {len(problems)} adapter tensor(s) do not fit this model:\n  {shown}",
            hint=f"was it trained on another base model (its adapter_config.json says base_model {base}), or saved incompletely?"
            if base else "was it trained on another base model, or saved incompletely?",
        )
    model.load_weights(list(weights.items()), strict=False)
    mx.eval(model.parameters())
    return cfg
