"""The `gguf` export: the run's adapter fused into its base, written as one GGUF file llama.cpp and Ollama run as it is.

The base is loaded dense (a quantized checkpoint is dequantized first), the adapter is applied and fused in float32
(LoRA, DoRA, or a full fine-tune's weights), and every weight is rounded once to the file's type: F16 (default),
BF16, F32 or Q8_0. The tokenizer and the chat template go inside, so `ollama create` needs no TEMPLATE. The export
measures, on a short prompt, how far the fine-tune moved the base's logits and how far the file's rounded weights
are from the fused model, and says so (warning when the rounding is a large share of the fine-tune's effect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlxft.atomic import atomic_write_text
from mlxft.errors import MlxftError, ModelError
from mlxft.export.gguf_vocab import vocab_from_tokenizer
from mlxft.export.gguf_write import (
    FILE_TYPES,
    Tensor,
    add_hparams,
    architecture,
    choose_type,
    decode,
    gguf_name,
    require_gguf,
    rope_permutation,
    tensor_kind,
    to_llama_cpp_rows,
    write_gguf,
)
from mlxft.llm.gguf import unpermute_rows

MODEL_FILE = "model.gguf"
MODELFILE = "Modelfile"
PROBE = "Answer briefly: what is the capital of France, and which colour is the sky on a clear day?"
# The file's rounding counts as eating the fine-tune when it moves the logits by more than this share of what the
# fine-tune moved them (mean KL per token).
LOSS_WARNING_SHARE = 0.25


@dataclass
class GGUFWritten:
    path: Path
    size: int
    arch: str
    tensors: int
    types: dict[str, int]           # GGUF type -> how many tensors have it
    padded_tokens: int
    notes: list[str]                # the tokenizer's: where llama.cpp will tokenize differently


def write_model_gguf(path: str | Path, model, config: dict, tokenizer, kind: str = "f16", name: str | None = None,
                     on_written: Callable | None = None) -> GGUFWritten:
    """Write a dense mlx-lm causal LM (no LoRA layers, no quantized ones) with its tokenizer as a GGUF file.

    `kind` is f16, bf16, f32 or q8_0. `on_written(hf_name, values)` sees each weight's values as the file stores them,
    in Hugging Face layout (float32), after it is written.
    """
    gguf = require_gguf()
    arch, permuted = architecture(config)
    params = dict(tree_flatten(model.parameters()))
    unplaced = sorted(k for k in params if gguf_name(k) is None)
    if unplaced:
        shown = ", ".join(unplaced[:5]) + (f" and {len(unplaced) - 5} more" if len(unplaced) > 5 else "")
        raise ModelError(f"the GGUF export has no place for these weights: {shown}",
                         hint="a quantized or still-adapted layer is left (a bug: please report it), or the architecture has parts llama.cpp's needs differently")
    embed = params.get("model.embed_tokens.weight")
    if embed is None:
        raise ModelError("the model has no model.embed_tokens.weight", hint="the GGUF export writes mlx-lm's llama, mistral, qwen2 and qwen3 models")
    vocab_size = int(embed.shape[0])
    vocab = vocab_from_tokenizer(tokenizer, vocab_size, config)

    writer = gguf.GGUFWriter(None, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_file_type(FILE_TYPES[kind])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    extra = add_hparams(writer, arch, config, vocab_size)
    vocab.add_to(writer)

    by_gguf: dict[str, str] = {}
    tensors = []
    for hf in sorted(params, key=_write_order):
        target = gguf_name(hf)
        by_gguf[target] = hf
        shape = tuple(int(d) for d in params[hf].shape)
        tensors.append(Tensor(target, shape, choose_type(target, shape, kind),
                              # popped: once written, only the model (or `on_written`'s copy) holds the weight
                              lambda hf=hf: to_llama_cpp_rows(_numpy(params.pop(hf)), hf, config, permuted)))
    for target, values in extra:
        tensors.append(Tensor(target, tuple(values.shape), choose_type(target, tuple(values.shape), kind), lambda v=values: v))

    types: dict[str, int] = {}

    def written(t: Tensor, data: np.ndarray, values: np.ndarray) -> None:
        types[t.qtype] = types.get(t.qtype, 0) + 1
        hf = by_gguf.get(t.name)
        if on_written is not None and hf is not None:
            stored = decode(data, t.qtype, t.shape)
            heads = rope_permutation(hf, config) if permuted else None
            on_written(hf, unpermute_rows(stored, heads) if heads else stored)

    size = write_gguf(Path(path), writer, tensors, written)
    return GGUFWritten(Path(path), size, arch, len(tensors), types, vocab.padded, vocab.notes)


def _write_order(hf_name: str):
    """token_embd, the blocks in order, then the final norm and output, as llama.cpp's converter writes them."""
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        return (1, int(parts[2]), hf_name)
    return (0 if "embed_tokens" in hf_name else 2, 0, hf_name)


def _numpy(array: mx.array) -> np.ndarray:
    return np.array(array.astype(mx.float32), copy=False)


# -- the export format ---------------------------------------------------------------------------


def requested_kind(options) -> str:
    """The GGUF type the options ask for: --dtype, or --quantize 8 as Q8_0."""
    kind = tensor_kind(options.dtype, "f16")
    if options.quantize is not None:
        if options.quantize != 8:
            raise MlxftError(f"--quantize {options.quantize}: the GGUF export writes F16, BF16, F32 and Q8_0",
                             hint="write the f16 GGUF, then llama.cpp's `llama-quantize model.gguf model-q4_k_m.gguf Q4_K_M`")
        if options.dtype is not None and kind != "q8_0":
            raise MlxftError(f"--quantize 8 and --dtype {options.dtype} ask for two different files", hint="pass one of them")
        kind = "q8_0"
    return kind


def load_tuned(run, recipe, options, kind: str):
    """(loaded base with the run's result applied, the adapter config): dense, in float32 unless the file keeps the
    checkpoint's own 16-bit type (then there is one rounding either way)."""
    from mlxft.export.mlx_copy import result_folder
    from mlxft.llm.adapters import check_adapter, load_adapter
    from mlxft.llm.loading import load_model, resolve_model_path
    from mlxft.llm.model_files import read_json_file

    folder = result_folder(run, recipe)
    check_adapter(folder)
    spec = options.base or recipe.model
    config = read_json_file(resolve_model_path(spec) / "config.json", "the base model's config")
    architecture(config, where=f"the base model {spec}")  # refused before any weight is read
    stored = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    dtype = stored if (kind, stored) in (("f16", "float16"), ("bf16", "bfloat16")) and "quantization" not in config else "float32"
    loaded = load_model(spec, dtype=dtype, keep_quantized=False, trust_remote_code=recipe.trust_remote_code)
    cfg = load_adapter(loaded.model, folder)
    loaded.model.eval()
    return loaded, cfg


def probe_ids(tokenizer) -> list[int]:
    """A short chat prompt in the model's own template (or the plain text where it has none)."""
    try:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": PROBE}], add_generation_prompt=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # transformers 5 may give a BatchEncoding
        if ids and all(isinstance(i, int) for i in ids):
            return ids
    except Exception:  # a template that needs other roles or variables: the plain text will do
        pass
    return list(tokenizer.encode(PROBE))


def logit_change(ref: mx.array, other: mx.array) -> tuple[float, float]:
    """(max |logit difference|, mean KL(ref || other) per token) between two [tokens, vocab] logit arrays."""
    ref, other = ref.astype(mx.float32), other.astype(mx.float32)
    log_p = ref - mx.logsumexp(ref, axis=-1, keepdims=True)
    log_q = other - mx.logsumexp(other, axis=-1, keepdims=True)
    kl = mx.sum(mx.exp(log_p) * (log_p - log_q), axis=-1)
    return float(mx.max(mx.abs(ref - other)).item()), max(0.0, float(mx.mean(kl).item()))  # >= 0 but for float error


def write(run, recipe, folder: Path, options) -> list[str]:
    from mlxft.lora import LoRALinear, fuse_adapters, set_adapters_enabled

    kind = requested_kind(options)
    require_gguf()
    loaded, cfg = load_tuned(run, recipe, options, kind)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = mx.array([probe_ids(tokenizer)])
    tuned = model(ids)[0]
    adapted = any(isinstance(m, LoRALinear) for _, m in model.named_modules())
    base = None
    if adapted:
        set_adapters_enabled(model, False)
        base = model(ids)[0]
        set_adapters_enabled(model, True)
    mx.eval([x for x in (tuned, base) if x is not None])
    fuse_adapters(model, dequantize=True)

    def keep_stored(hf_name: str, values: np.ndarray) -> None:
        # the model now computes with the file's weights, for the measurement below
        current = dict(tree_flatten(model.parameters()))[hf_name]
        model.update(tree_unflatten([(hf_name, mx.array(values).astype(current.dtype))]))

    name = f"{run.path.name} ({recipe.model})"
    info = write_model_gguf(folder / MODEL_FILE, model, loaded.config, tokenizer, kind, name=name, on_written=keep_stored)
    stored = model(ids)[0]
    drift, drift_kl = logit_change(tuned, stored)
    write_modelfile(folder / MODELFILE, tokenizer)

    types = ", ".join(f"{n} {t}" for t, n in sorted(info.types.items()))
    notes = [f"{MODEL_FILE}: {info.size / 1e6:.1f} MB, llama.cpp architecture {info.arch}, {info.tensors} tensors ({types}); "
             f"{cfg.get('fine_tune_type', 'lora')} fused into the base"]
    notes += info.notes
    if recipe.quantize is not None:
        notes.append(f"trained on a {recipe.quantize.bits}-bit base (QLoRA); fused into the full-precision base, as QLoRA adapters are meant to be")
    if info.padded_tokens:
        notes.append(f"the embedding has {info.padded_tokens} rows the tokenizer has no token for; they are written as unused [PADn] tokens")
    effect = ""
    if base is not None:
        moved, moved_kl = logit_change(base, tuned)
        effect = f"; the fine-tune itself moves them by up to {moved:.3g} (KL {moved_kl:.3g})"
    notes.append(f"on a {ids.shape[1]}-token prompt the file's {kind.upper()} weights give logits within {drift:.3g} of the fused "
                 f"model (mean KL {drift_kl:.3g} per token){effect}")
    if base is not None and moved_kl > 0 and drift_kl > LOSS_WARNING_SHARE * moved_kl:
        notes.append(f"warning: at {kind.upper()} the file's rounding moves the logits {drift_kl / moved_kl:.0%} as much as the fine-tune "
                     f"moved them (mean KL {drift_kl:.3g} vs {moved_kl:.3g}); part of what was learned may be blurred: "
                     f"export at {'f32' if kind == 'f16' else 'f16 or f32'} to keep it")
    notes.append(f"run it, in the export folder: ollama create NAME -f {MODELFILE}   or   llama-cli -m {MODEL_FILE} -cnv")
    return notes


def write_modelfile(path: Path, tokenizer) -> None:
    has_template = bool(getattr(getattr(tokenizer, "_tokenizer", tokenizer), "chat_template", None))
    template_line = ("# No TEMPLATE: the chat template is inside model.gguf (tokenizer.chat_template) and Ollama takes it from there.\n"
                     if has_template else
                     "# The base model has no chat template: add a TEMPLATE block for chat, or use it for plain completion.\n")
    atomic_write_text(path, (
        "# Ollama: ollama create NAME -f Modelfile && ollama run NAME\n"
        "# llama.cpp: llama-cli -m model.gguf -cnv\n"
        f"FROM ./{MODEL_FILE}\n" + template_line
    ))
