"""Find a causal LM (catalogue key, Hub id, folder or .gguf), load it through mlx-lm, and set its compute dtype."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxft.errors import ModelError
from mlxft.llm.model_files import (
    MODEL_CONFIG_HINT,
    check_model_config,
    check_model_weights,
    check_tokenizer_files,
    read_json_file,
    tokenizer_code_reference,
)

# Only these are fetched from the Hub: safetensors weights, configs and tokenizer files. No pickles.
HUB_PATTERNS = ["*.json", "model*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
TOKENIZER_PATTERNS = [p for p in HUB_PATTERNS if "safetensors" not in p]  # what token counts need


def cache_root() -> Path:
    return Path(os.environ.get("MLXFT_CACHE", Path.home() / ".cache" / "mlxft"))


def on_cpu() -> bool:
    return mx.default_device().type == mx.DeviceType.cpu


def device_name() -> str:
    dev = mx.default_device()
    if dev.type == mx.DeviceType.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "gpu"


def compute_dtype(requested: str = "auto") -> mx.Dtype:
    """float32 on MLX's CPU backend (bf16/fp16 matmuls are ~10-60x slower there), bfloat16 on a GPU."""
    if requested == "auto":
        return mx.float32 if on_cpu() else mx.bfloat16
    return getattr(mx, requested)


def resolve_model_path(spec: str, *, allow_download: bool = True, patterns: list[str] = HUB_PATTERNS) -> Path:
    """A local folder for `spec`: a folder, a .gguf (imported once into the cache), a catalogue key, or a Hub id.

    `patterns` are the Hub files fetched for a Hub id (default: weights, configs, tokenizer).
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"{spec}: no such GGUF file", hint="check the path (Ollama keeps blobs under ~/.ollama/models/blobs)")
        return import_gguf_cached(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json in this folder", hint="point at a Hugging Face-layout model folder (config.json + *.safetensors)")
        if not glob.glob(str(path / "model*.safetensors")):
            pickles = glob.glob(str(path / "*.bin")) + glob.glob(str(path / "*.pt"))
            hint = "convert the weights to safetensors first" if pickles else "the folder has no model*.safetensors"
            raise ModelError(f"{path}: no safetensors weights (mlxft loads safetensors only, never pickles)", hint=hint)
        return path
    if path.exists():
        raise ModelError(f"{spec}: not a model folder or a .gguf file")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelError(f"{spec}: no such folder", hint="check the path; a Hub id looks like owner/name")
    from mlxft.llm.catalogue import find_model

    entry = find_model(spec)
    repo = entry.hub_id if entry is not None else spec
    if "/" not in repo:
        raise ModelError(f"{spec!r} is not a folder, a .gguf file, a catalogue key or a Hub id", hint="`mlxft models` lists the catalogue")
    return download_model(repo, allow_download=allow_download, patterns=patterns)


def download_model(repo: str, *, allow_download: bool = True, patterns: list[str] = HUB_PATTERNS) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=not allow_download))
    except GatedRepoError:
        raise ModelError(f"{repo} is gated on the Hugging Face Hub", hint="accept its license on the model page, then `hf auth login`") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{repo}: no such model on the Hugging Face Hub", hint="check the id, or log in if it is private") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{repo}: not in the local cache and the Hub cannot be reached", hint="connect to the internet once, or pass a local folder or .gguf") from None
    except HFValidationError as exc:
        raise ModelError(f"{repo!r} is not a valid Hub id ({exc})", hint="a Hub id looks like owner/name; a local model is a folder path") from None
    except OSError as exc:
        raise ModelError(f"{repo}: download failed ({exc})", hint="check the network, or pass a local folder or .gguf") from None


def import_gguf_cached(path: Path) -> Path:
    """Import a GGUF once; later calls reuse the folder (keyed by the file's path, size and mtime)."""
    from mlxft.llm.gguf import import_gguf

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_root() / "gguf" / f"{path.stem}-{key}"
    if _import_finished(out) and (out / "config.json").is_file() and glob.glob(str(out / "model*.safetensors")):
        try:
            check_model_weights(out)
            return out
        except ModelError:
            pass  # a damaged cache (disk full, a copy cut short) is rebuilt from the GGUF
    return import_gguf(path, out)


def _import_finished(folder: Path) -> bool:
    """The import's marker says it completed (an import killed half-way is done again, not reused)."""
    from mlxft.llm.gguf import MARKER

    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def load_tokenizer(spec: str, *, trust_remote_code: bool = False):
    """Only the tokenizer (with its chat template) of what `load_model` takes: no weights are read or downloaded.

    Token counts need no weights, so a model folder here needs only its tokenizer files, and a
    catalogue key or Hub id fetches only configs and tokenizer files.
    """
    path = Path(spec).expanduser()
    folder = path if path.is_dir() else resolve_model_path(spec, patterns=TOKENIZER_PATTERNS)
    config = read_json_file(folder / "config.json", "the model's config", hint=MODEL_CONFIG_HINT) if (folder / "config.json").exists() else {}
    return _checked_tokenizer(folder, config, trust_remote_code)


def _checked_tokenizer(folder: Path, config: dict, trust_remote_code: bool):
    """mlx-lm's tokenizer for `folder`, its files checked first; any failure names the folder (or the code it refused)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    check_tokenizer_files(folder)
    eos = config.get("eos_token_id")
    if not (eos is None or _is_int(eos) or (isinstance(eos, list) and all(_is_int(e) for e in eos))):
        raise ModelError(f"{folder / 'config.json'}: eos_token_id: must be a token id or a list of them, got {eos!r}",
                         hint=MODEL_CONFIG_HINT)
    try:
        return mlx_load_tokenizer(folder, {"trust_remote_code": trust_remote_code}, eos_token_ids=eos)
    except Exception as exc:  # tokenizers raise many types; name the folder either way
        code = None if trust_remote_code else tokenizer_code_reference(folder)
        if code is not None:
            raise ModelError(
                f"{code}, the model's own tokenizer code, which transformers would import and run; "
                "mlxft runs a model's own code only when trust_remote_code is on, and it is off",
                hint="read that code first; if you trust it, set `trust_remote_code: true` in the recipe "
                "(or call mlxft.load(..., trust_remote_code=True))",
            ) from None
        raise ModelError(f"{folder}: cannot load the tokenizer ({type(exc).__name__}: {_first_lines(exc)})",
                         hint="copy the tokenizer files (tokenizer.json, tokenizer_config.json) from the model's original repository") from None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _first_lines(exc: BaseException, n: int = 3) -> str:
    """An exception's first lines: mlx-lm and transformers can list hundreds of parameter names."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:n]) + (f"; ... ({len(lines) - n} more lines)" if len(lines) > n else "")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object  # mlx_lm's TokenizerWrapper
    config: dict
    path: Path
    notes: list[str] = field(default_factory=list)  # what was done to the weights, for the run log

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def dequantize_model(model: nn.Module, dtype: mx.Dtype) -> None:
    """Replace quantized layers by dense ones in `dtype` (the fast path on CPU)."""
    swaps = []
    for name, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode).astype(dtype)
            dense = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
            dense.weight = w
            if "bias" in m:
                dense.bias = m.bias.astype(dtype)
            swaps.append((name, dense))
        elif isinstance(m, nn.QuantizedEmbedding):
            w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits, mode=m.mode).astype(dtype)
            emb = nn.Embedding(w.shape[0], w.shape[1])
            emb.weight = w
            swaps.append((name, emb))
    if swaps:
        from mlx.utils import tree_unflatten

        model.update_modules(tree_unflatten(swaps))


def _own_arrays(module: nn.Module) -> dict[str, mx.array]:
    return {k: v for k, v in module.items() if isinstance(v, mx.array)}


def cast_model(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast floating-point parameters to `dtype`; quantized layers keep their packed weights and scales."""
    for _, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        for k, v in _own_arrays(m).items():
            if mx.issubdtype(v.dtype, mx.floating) and v.dtype != dtype:
                m[k] = v.astype(dtype)


def quantize_model(model: nn.Module, bits: int, group_size: int) -> None:
    """Quantize linear and embedding layers (QLoRA's frozen base); layers whose width doesn't divide are left dense."""

    def predicate(_path, module):
        if not hasattr(module, "to_quantized"):
            return False
        return module.weight.shape[-1] % group_size == 0

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)


def load_model(spec: str, *, dtype: str = "auto", quantize: tuple[int, int] | None = None, trust_remote_code: bool = False, keep_quantized: bool | None = None) -> LoadedModel:
    """Load weights and tokenizer through mlx-lm, then apply the device's dtype policy.

    - dense weights are cast to the compute dtype (float32 on CPU);
    - `quantize=(bits, group_size)` quantizes the base (QLoRA);
    - an already-quantized checkpoint stays quantized on a GPU; on CPU (where quantized matmuls
      are slow) it is dequantized unless `keep_quantized` is True.
    """
    path = resolve_model_path(spec)
    # Every file is checked before mlx-lm reads any: a broken one is named, not met as a traceback deep in MLX.
    checked = check_model_config(path, trust_remote_code=trust_remote_code)
    check_model_weights(path)
    check_tokenizer_files(path)
    model, config = _build_model(path, custom_code="model_file" in checked, trust_remote_code=trust_remote_code)
    tokenizer = _checked_tokenizer(path, config, trust_remote_code)

    target = compute_dtype(dtype)
    notes = []
    if is_quantized(model):
        keep = keep_quantized if keep_quantized is not None else (quantize is not None or not on_cpu())
        if not keep:
            dequantize_model(model, target)
            notes.append(f"dequantized the {config.get('quantization', {}).get('bits', '?')}-bit checkpoint to {target} (quantized matmuls are slow on MLX's CPU backend)")
        elif on_cpu():
            notes.append("training on a quantized base on CPU: quantized matmuls are several times slower here than float32 (memory is saved)")
    cast_model(model, target)
    if quantize is not None and not is_quantized(model):
        bits, group = quantize
        quantize_model(model, bits, group)
        notes.append(f"quantized the base to {bits} bits (group size {group})")
        if on_cpu():
            notes.append("QLoRA on CPU: the base takes ~{:.0%} of float32 memory, but quantized matmuls are several times slower than float32".format(bits / 32 + 2 * 32 / group / 32))
    mx.eval(model.parameters())
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, path=path, notes=notes)


def _build_model(path: Path, *, custom_code: bool, trust_remote_code: bool):
    """mlx-lm's model and config for a checked folder; what still fails (weights that do not fit the config) is named."""
    from mlx_lm.utils import load_model as mlx_load_model

    try:
        return mlx_load_model(path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        text = str(exc)
        if "parameters" in text or "shape" in text:  # load_weights(strict=True): names and shapes that do not match
            raise ModelError(f"{path}: the weights do not fit the model config.json describes ({_first_lines(exc)})",
                             hint="download the model again, or put back the config.json that came with these weights") from None
        raise ModelError(f"{path}: mlx-lm cannot build this model ({_first_lines(exc)})", hint=MODEL_CONFIG_HINT) from None
    except (TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ModelError(f"{path}: mlx-lm cannot build this model from config.json ({type(exc).__name__}: {_first_lines(exc)})",
                         hint=MODEL_CONFIG_HINT) from None
    except Exception as exc:
        if not custom_code:
            raise
        raise ModelError(f"{path}: the model's own code (config.json's model_file) failed: {type(exc).__name__}: {_first_lines(exc)}",
                         hint="that code ships with the model, not with mlxft: ask its authors") from None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; quantized weights count at their logical size."""
    total = 0
    for _, m in model.named_modules():
        for k, v in _own_arrays(m).items():
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
                total += v.size * 32 // m.bits if k == "weight" else (0 if k in ("scales", "biases") else v.size)
            else:
                total += v.size
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    return trainable, total
