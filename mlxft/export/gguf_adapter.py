"""The `gguf-adapter` export: the run's LoRA adapter as the GGUF file llama.cpp's `--lora` and Ollama's ADAPTER read.

The file is what llama.cpp's convert_lora_to_gguf.py writes: general.type=adapter, adapter.type=lora,
adapter.lora.alpha (llama.cpp scales by alpha / rank, mlx-lm by `scale`, so alpha = scale * rank), and for each
adapted weight `blk.N.<name>.weight.lora_a` (numpy [r, in], mlx's lora_a transposed) and `.lora_b` ([out, r], mlx's
lora_b transposed; for the llama architecture the q/k rows permuted as the base's are). Tensors are F32.
DoRA is refused: llama.cpp has no magnitude vector, and the adapter without it computes something else.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mlxft.atomic import atomic_write_text
from mlxft.errors import MlxftError
from mlxft.export.gguf_write import Tensor, architecture, gguf_name, require_gguf, tensor_kind, to_llama_cpp_rows, write_gguf

ADAPTER_FILE = "adapter.gguf"
BASE_FILE = "base.gguf"
MODELFILE = "Modelfile"
_LEAF = re.compile(r"^(.+)\.(lora_a|lora_b)$")


def adapter_tensors(weights: dict, config: dict, permuted: bool) -> list[Tensor]:
    """The GGUF tensors of an mlx-lm LoRA adapter's weights ({"model.layers.0.self_attn.q_proj.lora_a": [in, r], ...})."""
    pairs: dict[str, dict[str, np.ndarray]] = {}
    odd = []
    for key, value in weights.items():
        m = _LEAF.match(key)
        target = gguf_name(m.group(1) + ".weight") if m else None
        if target is None:
            odd.append(key)
            continue
        pairs.setdefault(m.group(1), {})[m.group(2)] = value
    if odd:
        raise MlxftError(f"the adapter has tensors a GGUF LoRA cannot carry: {', '.join(sorted(odd)[:5])}",
                         hint="llama.cpp adapters hold LoRA pairs on block weights; export --format gguf (fused) instead")
    tensors = []
    for module in sorted(pairs, key=_order):
        pair = pairs[module]
        if set(pair) != {"lora_a", "lora_b"}:
            raise MlxftError(f"the adapter has {module}.{next(iter(pair))} without its other half", hint="train or copy the adapter again")
        a = np.array(pair["lora_a"], dtype=np.float32).T          # [r, in]
        b = np.array(pair["lora_b"], dtype=np.float32).T          # [out, r]
        b = to_llama_cpp_rows(b, module + ".weight", config, permuted)
        target = gguf_name(module + ".weight")
        tensors.append(Tensor(f"{target}.lora_a", a.shape, "F32", lambda a=a: a))
        tensors.append(Tensor(f"{target}.lora_b", b.shape, "F32", lambda b=b: b))
    return tensors


def _order(module: str):
    parts = module.split(".")
    return (int(parts[2]) if parts[:2] == ["model", "layers"] else -1, module)


def refuse_non_lora(adapter_config: dict) -> None:
    """Only LoRA becomes a GGUF adapter: DoRA and full fine-tunes are refused with the reason and what to use instead."""
    method = adapter_config.get("fine_tune_type", "lora")
    if method == "dora":
        raise MlxftError("a DoRA adapter cannot be a GGUF adapter: llama.cpp has no DoRA (no per-row magnitude), and the "
                         "low-rank part alone computes something else",
                         hint="export --format gguf (DoRA fused into the weights), or --format peft")
    if method != "lora":
        raise MlxftError(f"a {method} fine-tune has no adapter to write", hint="export --format gguf: the tuned weights as one model file")


def write_adapter_gguf(path: str | Path, weights: dict, adapter_config: dict, base_config: dict, name: str | None = None) -> int:
    """Write an mlx-lm LoRA adapter (its weights and adapter_config.json) for a base with `base_config`; returns the size."""
    gguf = require_gguf()
    refuse_non_lora(adapter_config)
    arch, permuted = architecture(base_config)
    lp = adapter_config["lora_parameters"]
    alpha = float(lp["scale"]) * int(lp["rank"])
    writer = gguf.GGUFWriter(None, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if name:
        writer.add_name(name)
    return write_gguf(Path(path), writer, adapter_tensors(weights, base_config, permuted))


def write(run, recipe, folder: Path, options) -> list[str]:
    from mlxft.export.mlx_copy import result_folder
    from mlxft.llm.adapters import ADAPTER_WEIGHTS, check_adapter
    from mlxft.llm.loading import TOKENIZER_PATTERNS, resolve_model_path
    from mlxft.llm.model_files import load_safetensors_checked, read_json_file

    require_gguf()
    with_base = bool(options.extra.get("with_base"))
    if options.quantize is not None:
        raise MlxftError("--quantize does not apply to a GGUF adapter (its tensors are F32)",
                         hint="with --with-base, --dtype q8_0 sets the base file's type")
    if options.dtype is not None and not with_base:
        raise MlxftError("--dtype applies to the base written with --with-base; the adapter's own tensors are always F32",
                         hint="add --with-base, or leave --dtype out")
    source, cfg = check_adapter(result_folder(run, recipe))
    spec = options.base or recipe.model
    refuse_non_lora(cfg)  # before the base is looked at
    base_dir = resolve_model_path(spec, patterns=TOKENIZER_PATTERNS)  # a Hub id fetches configs only
    base_config = read_json_file(base_dir / "config.json", "the base model's config")
    architecture(base_config, where=f"the base model {spec}")
    weights = load_safetensors_checked(source / ADAPTER_WEIGHTS, "the adapter weights file")
    size = write_adapter_gguf(folder / ADAPTER_FILE, {k: _numpy(v) for k, v in weights.items()}, cfg, base_config,
                              name=f"{run.path.name} (LoRA on {recipe.model})")
    lp = cfg["lora_parameters"]
    notes = [f"{ADAPTER_FILE}: {size / 1e6:.2f} MB, {len(weights) // 2} LoRA pairs, rank {lp['rank']}, "
             f"alpha {float(lp['scale']) * int(lp['rank']):g} (llama.cpp scales by alpha/rank = {float(lp['scale']):g}, as mlx-lm does)"]
    base_file = None
    if with_base:
        from mlxft.export.gguf_model import write_model_gguf
        from mlxft.llm.loading import load_model

        kind = tensor_kind(options.dtype, "f16")
        loaded = load_model(spec, dtype="float32", keep_quantized=False, trust_remote_code=recipe.trust_remote_code)
        info = write_model_gguf(folder / BASE_FILE, loaded.model, loaded.config, loaded.tokenizer, kind, name=str(spec))
        base_file = f"./{BASE_FILE}"
        notes.append(f"{BASE_FILE}: the base model ({spec}) at {kind.upper()}, {info.size / 1e6:.1f} MB")
        notes += info.notes
    elif Path(spec).suffix.lower() == ".gguf" and Path(spec).is_file():
        base_file = str(Path(spec).resolve())  # trained from a GGUF: that file is the base
    if recipe.kind == "lm-qlora" or recipe.quantize is not None:
        notes.append("the adapter was trained on a quantized base; over an F16/Q8_0 base GGUF it behaves as QLoRA adapters do on the full-precision base")
    write_modelfile(folder / MODELFILE, spec, base_file)
    if base_file is None:
        notes.append(f"edit the FROM line of {MODELFILE}: it must name {spec} as a GGUF file or an Ollama model of the same weights "
                     "(or export again with --with-base to write base.gguf next to the adapter)")
    return notes


def write_modelfile(path: Path, base_spec: str, base_file: str | None) -> None:
    """An Ollama Modelfile: FROM the base, ADAPTER this file."""
    lines = [
        "# Ollama: ollama create NAME -f Modelfile && ollama run NAME",
        f"# llama.cpp: llama-cli -m BASE.gguf --lora {ADAPTER_FILE} -cnv",
        f"# FROM must be the model this adapter was trained on ({base_spec}): a GGUF file of it (F16 or Q8_0 keeps the",
        "# fine-tune best; a 4-bit one works too) or an Ollama model of the same weights, never another model or size.",
        f"FROM {base_file or './base.gguf'}",
        f"ADAPTER ./{ADAPTER_FILE}",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _numpy(array) -> np.ndarray:
    import mlx.core as mx

    return np.array(array.astype(mx.float32), copy=False)
