"""Writing GGUF files llama.cpp and Ollama read: architecture names, hyperparameters, tensor names, layouts and types.

The names are the importer's (mlxft/llm/gguf.py) read the other way, so what `mlxft export --format gguf` writes,
`mlxft import` reads back. Two layout facts llama.cpp's own converter applies and this one does too:
- numpy order: a weight that is [out, in] in Hugging Face layout is written as the array [out, in]; GGUF lists a
  tensor's dimensions fastest-first, so its header (and gguf's reader, `.shape`) says [in, out];
- rope: llama.cpp's `llama` architecture rotates interleaved pairs, Hugging Face's Llama rotates halves, so the rows
  of q_proj/k_proj (weights, biases, and a LoRA's B) are permuted per head; qwen2/qwen3 rotate halves in both.
Tensors are written one at a time (planned first, then streamed), so a model is never held twice in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlxft.errors import MlxftError, ModelError
from mlxft.llm.gguf import _PER_LAYER, _TOP_LEVEL, llama3_rope_factors, permute_rows

# Hugging Face / mlx-lm model_type -> (llama.cpp architecture, q/k rows permuted for llama.cpp's rope)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", True),
    "mistral": ("llama", True),  # llama.cpp writes and runs Mistral (7B, Nemo, Small) as `llama`
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}

# what users may ask for -> the GGUF tensor type of the 2-D weights (1-D norms and biases stay F32, as llama.cpp's do)
TENSOR_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}
_ALIASES = {"float32": "f32", "fp32": "f32", "float16": "f16", "fp16": "f16", "half": "f16", "bfloat16": "bf16", "q8": "q8_0"}
# llama.cpp's general.file_type (LlamaFileType) for each
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
Q8_BLOCK = 32

_MODULE_TO_GGUF = {v: k for k, v in _TOP_LEVEL.items()}
_LAYER_TO_GGUF = {v: k for k, v in _PER_LAYER.items()}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

INSTALL_HINT = "install the gguf package: pip install 'mlxft[gguf]' (or pip install gguf)"


def require_gguf():
    """The `gguf` package (llama.cpp's own reader and writer), or an error saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise MlxftError("writing GGUF needs the gguf package, which is not installed", hint=INSTALL_HINT) from None
    return gguf


def tensor_kind(requested: str | None, default: str) -> str:
    """A user's --dtype for a GGUF (f16, float16, Q8_0, ...) as one of TENSOR_TYPES' keys."""
    if requested is None:
        return default
    kind = requested.strip().lower()
    kind = _ALIASES.get(kind, kind)
    if kind not in TENSOR_TYPES:
        raise MlxftError(f"--dtype {requested}: not a GGUF tensor type this export writes",
                         hint="choose f16 (the default), bf16, f32 or q8_0; for 4-bit files run llama.cpp's llama-quantize on the f16 GGUF")
    return kind


def architecture(config: dict, where: str = "the base model") -> tuple[str, bool]:
    """(llama.cpp architecture, whether q/k rows are permuted) for a model's config.json."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ModelError(f"{where} is a {model_type!r} model; the GGUF export writes {', '.join(sorted(ARCHITECTURES))}",
                         hint="export --format fused (a Hugging Face folder) and convert it with llama.cpp's convert_hf_to_gguf.py")
    return ARCHITECTURES[model_type]


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face / mlx-lm parameter ("model.layers.3.self_attn.q_proj.weight" ->
    "blk.3.attn_q.weight"), or None when GGUF has no place for it."""
    module, _, suffix = hf_name.rpartition(".")
    if suffix not in ("weight", "bias"):
        return None
    m = _LAYER.match(module)
    if m:
        sub = _LAYER_TO_GGUF.get(m.group(2))
        return f"blk.{m.group(1)}.{sub}.{suffix}" if sub else None
    top = _MODULE_TO_GGUF.get(module)
    return f"{top}.{suffix}" if top else None


def rope_permutation(hf_name: str, config: dict) -> int | None:
    """The head count to permute this tensor's rows by (llama-architecture q/k), or None."""
    if ".self_attn.q_proj." in hf_name:
        return int(config["num_attention_heads"])
    if ".self_attn.k_proj." in hf_name:
        return int(config.get("num_key_value_heads") or config["num_attention_heads"])
    return None


def to_llama_cpp_rows(array: np.ndarray, hf_name: str, config: dict, permuted: bool) -> np.ndarray:
    """Rows of a q/k tensor in llama.cpp's rope order (a no-op for others and for architectures that need none)."""
    heads = rope_permutation(hf_name, config) if permuted else None
    return np.ascontiguousarray(permute_rows(array, heads)) if heads else array


# -- hyperparameters -----------------------------------------------------------------------------


def _rope(config: dict) -> tuple[float, dict | None]:
    """(rope theta, rope scaling or None): transformers 5 keeps both in `rope_parameters`, older configs apart."""
    params = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if scaling and (scaling.get("rope_type") or scaling.get("type")) == "default":
        scaling = None
    return float(theta), scaling


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def add_hparams(writer, arch: str, config: dict, vocab_size: int) -> list[tuple[str, np.ndarray]]:
    """Write the architecture's hyperparameters; returns extra tensors the architecture needs (Llama 3's rope_freqs)."""
    gguf = require_gguf()
    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in need if not isinstance(config.get(k), int)]
    if missing:
        raise ModelError(f"the base model's config.json lacks {', '.join(missing)}", hint="put back the config.json the model came with")
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(vocab_size)
    dim = head_dim(config)
    writer.add_rope_dimension_count(dim)
    if config.get("head_dim") is not None:
        writer.add_key_length(dim)
        writer.add_value_length(dim)
    theta, scaling = _rope(config)
    writer.add_rope_freq_base(theta)
    if not scaling:
        return []
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        return []
    if kind == "yarn" and arch in ("qwen2", "qwen3"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
        return []
    if kind == "llama3" and arch == "llama":  # llama.cpp reads Llama 3's scaling as per-frequency factors
        factors = llama3_rope_factors(dim, theta, float(scaling["factor"]), float(scaling.get("low_freq_factor", 1.0)),
                                      float(scaling.get("high_freq_factor", 4.0)), int(scaling["original_max_position_embeddings"]))
        return [("rope_freqs.weight", np.asarray(factors, dtype=np.float32))]
    raise ModelError(f"the base model's rope scaling {kind!r} is not one the GGUF export writes for {arch} (linear, llama3, yarn for Qwen)",
                     hint="export --format fused and convert it with llama.cpp's convert_hf_to_gguf.py")


# -- tensors -------------------------------------------------------------------------------------


@dataclass
class Tensor:
    """One tensor to write: its GGUF name, numpy-order shape, GGUF type, and how to get its float32 values."""

    name: str
    shape: tuple[int, ...]
    qtype: str                              # a gguf.GGMLQuantizationType name: F32, F16, BF16, Q8_0
    values: Callable[[], np.ndarray]        # float32, in llama.cpp's layout; called once, when the tensor is written


def choose_type(name: str, shape: tuple[int, ...], kind: str) -> str:
    """The GGUF type of one tensor at the requested kind: 1-D tensors stay F32; a Q8_0 row that is not a whole number
    of 32-value blocks falls back to F16 (llama.cpp's converter does the same)."""
    if len(shape) < 2 or name == "rope_freqs.weight":
        return "F32"
    qtype = TENSOR_TYPES[kind]
    if qtype == "Q8_0" and shape[-1] % Q8_BLOCK:
        return "F16"
    return qtype


def encode(values: np.ndarray, qtype: str) -> np.ndarray:
    """The bytes (as an array) GGUF stores for float32 `values` at `qtype`."""
    gguf = require_gguf()
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == "F32":
        return values
    if qtype == "F16":
        return values.astype(np.float16)
    return gguf.quants.quantize(values, getattr(gguf.GGMLQuantizationType, qtype))


def decode(data: np.ndarray, qtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """What a reader of the GGUF gets back from `encode`'s output, as float32 of `shape`."""
    gguf = require_gguf()
    if qtype in ("F32", "F16"):
        return data.astype(np.float32).reshape(shape)
    return gguf.quants.dequantize(data, getattr(gguf.GGMLQuantizationType, qtype)).reshape(shape)


def nbytes(shape: tuple[int, ...], qtype: str) -> int:
    gguf = require_gguf()
    block, size = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, qtype)]
    count = int(np.prod(shape)) if shape else 1
    return count // block * size


def write_gguf(path: Path, writer, tensors: Iterable[Tensor], on_written: Callable[[Tensor, np.ndarray, np.ndarray], None] | None = None) -> int:
    """Stream `tensors` into `path` through `writer` (a gguf.GGUFWriter holding the metadata); returns the file's size.

    `on_written(tensor, data, values)` sees each tensor's stored bytes and float32 values after it is written
    (the fused export uses it to measure what the file's weights compute).
    """
    gguf = require_gguf()
    tensors = list(tensors)
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes(t.shape, t.qtype),
                               raw_dtype=getattr(gguf.GGMLQuantizationType, t.qtype))
    try:
        writer.write_header_to_file(path=Path(path))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            values = t.values()
            if tuple(values.shape) != tuple(t.shape):
                raise ModelError(f"{t.name}: planned shape {t.shape}, got {tuple(values.shape)}")
            data = encode(values, t.qtype)
            writer.write_tensor_data(data)
            if on_written is not None:
                on_written(t, data, values)
    finally:
        writer.close()
    return Path(path).stat().st_size
