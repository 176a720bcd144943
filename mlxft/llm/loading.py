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
    if (out / "config.json").is_file() and glob.glob(str(out / "model*.safetensors")):
        return out
    return import_gguf(path, out)


def load_tokenizer(spec: str, *, trust_remote_code: bool = False):
    """Only the tokenizer (with its chat template) of what `load_model` takes: no weights are read or downloaded.

    Token counts need no weights, so a model folder here needs only its tokenizer files, and a
    catalogue key or Hub id fetches only configs and tokenizer files.
    """
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    path = Path(spec).expanduser()
    folder = path if path.is_dir() else resolve_model_path(spec, patterns=TOKENIZER_PATTERNS)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    try:
        return mlx_load_tokenizer(folder, {"trust_remote_code": trust_remote_code}, eos_token_ids=config.get("eos_token_id"))
    except Exception as exc:  # tokenizers raise many types; name the folder either way
        raise ModelError(f"{folder}: cannot load the tokenizer ({type(exc).__name__}: {exc})", hint="the folder needs tokenizer.json or tokenizer.model") from None


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
    from mlx_lm.utils import load_model as mlx_load_model
    from mlx_lm.utils import load_tokenizer

    path = resolve_model_path(spec)
    try:
        model, config = mlx_load_model(path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise ModelError(f"{path}: mlx-lm cannot build this model ({exc})", hint="check model_type in config.json is supported by mlx-lm") from None
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: {exc}") from None
    try:
        tokenizer = load_tokenizer(path, {"trust_remote_code": trust_remote_code}, eos_token_ids=config.get("eos_token_id"))
    except Exception as exc:  # tokenizers raise many types; name the folder either way
        raise ModelError(f"{path}: cannot load the tokenizer ({type(exc).__name__}: {exc})", hint="the folder needs tokenizer.json or tokenizer.model") from None

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
