"""The `fused` export: one standalone model folder with the fine-tune merged into the weights, for mlx-lm and transformers.

`mlxft export RUN --format fused [--dtype float16|bfloat16|float32] [--quantize 4|8] [--base MODEL]` writes:

- `model.safetensors` (above MAX_SHARD_BYTES: `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`),
  with transformers' tensor names, in the base's dtype unless `--dtype` says otherwise;
- `config.json`: the base's, with its dtype key (`torch_dtype` or `dtype`, whichever the base has) set to the weights'
  type, `architectures` set to transformers' class, and `quantization` / `quantization_config` removed (a dense model)
  or written the way mlx-lm writes them (after `--quantize`: such a folder is for mlx-lm only);
- the base's tokenizer files, chat template, `generation_config.json` and license files, copied as they are;
- `fidelity.json`: what survived (see below).

What is fused: a LoRA or DoRA adapter (lm-lora, lm-qlora, lm-dora, lm-dpo, lm-orpo, lm-classify) becomes W + update;
lm-full's trained weights replace the base's. A quantized base (lm-qlora, or a 4/8-bit checkpoint) is dequantized
first, so the fused weights are exactly what the run trained on plus its update; they stay dense unless `--quantize`
asks for bits again, and re-quantizing can round a small update away (mlx-lm #832, #1172). So every fused export is
measured (`mlxft.export.fidelity`): on a few held-out prompts the tuned model (base + adapter, float32, unfused), the
base and the export (its weights as written) are compared, and a note gives the KL numbers, with a warning when the
export lost most of the fine-tune.

Text classifiers (lm-classify): a `score` head makes a transformers `*ForSequenceClassification` folder (config
`architectures`, `num_labels`, `id2label`, `label2id`, `pad_token_id`; weights `score.weight` and the body, no LM
head), which `AutoModelForSequenceClassification` loads. A `verbalizer` run stays a causal LM. Both carry
`config.json["mlxft_classifier"]`: the head, the prompt template the text is put in before tokenizing, the labels,
and for label words each label's word and token ids (a label's score is the summed log-probability of its word's
tokens after the prompt; the softmax over labels of those scores is the classifier's probabilities).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlxft.errors import MlxftError, ModelError, write_error
from mlxft.export import fidelity
from mlxft.export.mlx_copy import result_folder

MAX_SHARD_BYTES = 5 << 30       # transformers' and mlx-lm's shard size; ExportOptions.extra["max_shard_bytes"] overrides
FIDELITY_FILE = "fidelity.json"
CLASSIFIER_KEY = "mlxft_classifier"  # in config.json: how a classifier's inputs and labels are read
DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_GROUP = 64              # --quantize over a dense base: mlx-lm's default group size

# Copied from the base as they are (the tokenizer, its chat template, generation defaults, the license that travels with it).
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
          "tiktoken.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "generation_config.json")
COPIED_GLOBS = ("*.tiktoken", "LICENSE*", "NOTICE*", "USE_POLICY*")

# transformers' class-name stem per mlx-lm model_type, where the base's config does not name a *ForCausalLM class.
TRANSFORMERS_STEMS = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "phi3": "Phi3",
                      "smollm3": "SmolLM3", "olmo2": "Olmo2", "granite": "Granite", "gemma": "Gemma", "gemma2": "Gemma2",
                      "mixtral": "Mixtral", "phi": "Phi", "starcoder2": "Starcoder2", "qwen2_moe": "Qwen2Moe"}
NO_SEQUENCE_CLASSIFIER = {"granite"}  # transformers has no *ForSequenceClassification for these


def write(run, recipe, folder: Path, options) -> list[str]:
    dtype_name = _requested_dtype(options)
    bits = _requested_bits(options)
    source = result_folder(run, recipe)
    classifier = _classifier_config(source) if recipe.kind == "lm-classify" else None
    score_head = classifier is not None and classifier["head"] == "score"
    if score_head and bits is not None:
        raise MlxftError(f"{run.path}: --quantize makes an MLX-only model, and a score-head classifier is exported for transformers "
                         "(AutoModelForSequenceClassification), which cannot read MLX's quantized weights",
                         hint="leave out --quantize (choose --dtype float16 or bfloat16 for a smaller folder)")
    from mlxft.llm import adapters as A

    A.check_adapter(source)  # a broken adapter is named before any weights are read
    base = find_base(run, recipe, options, classifier)
    model, tokenizer, config, layout = _load_base(base, recipe)
    model_type = config.get("model_type", "")
    base_config = _read_config(base)
    out_dtype = dtype_name or base_dtype(base, base_config)
    body = None
    if classifier is not None:
        from mlxft.llm.classify import model_parts

        body, _ = model_parts(model, model_type)
    if score_head:
        _attach_score_head(model, source, classifier)
    held = fidelity.held_out_prompts(recipe, tokenizer, classifier)

    def outputs():
        return fidelity.score_outputs(model, body, held.prompts) if score_head else fidelity.causal_outputs(model, held.prompts)

    base_out = outputs()  # before the fine-tune is applied: the base (with the trained score head, for a score classifier)
    A.load_adapter(model, source)
    model.eval()
    tuned_out = outputs()

    from mlxft.llm.loading import cast_model, dequantize_model
    from mlxft.lora import fuse_adapters

    fuse_adapters(model, dequantize=True)
    cast_model(model, getattr(mx, out_dtype))
    group, on_grid = requantize(model, bits, layout) if bits is not None else (None, False)
    weights = dict(tree_flatten(model.parameters()))
    if score_head:
        weights = {k: v for k, v in weights.items() if not k.startswith("lm_head.")}  # the score head replaces it
    files = save_weights(folder, weights, int(options.extra.get("max_shard_bytes", MAX_SHARD_BYTES)),
                         metadata={"format": "mlx" if bits is not None else "pt"})
    size = sum(v.nbytes for v in weights.values())
    names = set(weights)
    del weights

    new_config = fused_config(base_config, model_type=model_type, dtype=out_dtype, quantization=(bits, group, layout) if bits else None,
                              classifier=classifier)
    _write_json(folder / "config.json", new_config)
    copied = copy_base_files(base, folder)

    # The export as written, computed in float32: what its weights lost, not what a low-precision matmul adds.
    dequantize_model(model, mx.float32)
    cast_model(model, mx.float32)
    exported_out = outputs()
    what = _describe(out_dtype, bits, group, layout, on_grid)
    fid = fidelity.compare(base_out, tuned_out, exported_out, source=held.source, prompts=len(held.prompts), what=what,
                           unit="label distributions" if score_head else "next-token positions")
    _write_json(folder / FIDELITY_FILE, {**fid.to_dict(), "dtype": out_dtype, "bits": bits, "group_size": group})

    notes = [f"{_kind_line(recipe, classifier, out_dtype, bits, group)} ({len(files)} weight file(s), {size / 1e6:.1f} MB); "
             f"base {base}"]
    if layout and bits is None:
        base_bits = Counter(q.bits for q in layout.values()).most_common(1)[0][0]
        notes.append(f"the base is {base_bits}-bit: it was dequantized and the fused model is dense {out_dtype}; "
                     f"--quantize {base_bits} makes it {base_bits}-bit again (and says whether the fine-tune survives that)")
    notes += fid.notes(_advice(bits, out_dtype))
    notes += _classifier_notes(classifier)
    notes += _name_notes(base, names, copied)
    return notes


# -- options, base, loading ---------------------------------------------------------------------------


def _requested_dtype(options) -> str | None:
    if options.dtype is None:
        return None
    if options.dtype not in DTYPES:
        raise MlxftError(f"--dtype {options.dtype}: a fused model's weights are one of {', '.join(DTYPES)}",
                         hint="q8_0 and f16 are GGUF types: use --format gguf for those; --quantize 4|8 quantizes a fused model for mlx-lm")
    return options.dtype


def _requested_bits(options) -> int | None:
    if options.quantize is None:
        return None
    if options.quantize not in (4, 8):
        raise MlxftError(f"--quantize {options.quantize}: a fused model re-quantizes to 4 or 8 bits", hint="use --quantize 4 or --quantize 8")
    return int(options.quantize)


def find_base(run, recipe, options, classifier: dict | None) -> Path:
    """The base model's folder: --base when given, else where the run loaded it from (model.json), else its recipe's model."""
    from mlxft.llm.loading import resolve_model_path

    if options.base:
        try:
            return resolve_model_path(options.base)
        except ModelError as exc:
            raise ModelError(f"--base {options.base}: {exc.message}", hint=exc.hint) from None
    recorded = []
    try:
        recorded.append(json.loads(run.model_json_path.read_text(encoding="utf-8")).get("model_path"))
    except (OSError, ValueError, AttributeError):
        pass
    if classifier is not None:
        recorded.append(classifier.get("base_model_path"))
    for path in recorded:
        if isinstance(path, str) and path and Path(path).is_dir():
            return resolve_model_path(path)
    try:
        return resolve_model_path(recipe.model)
    except ModelError as exc:
        gone = next((p for p in recorded if isinstance(p, str) and p), None)
        where = f"; it was loaded from {gone}, which is not there any more" if gone else ""
        raise ModelError(f"{run.path}: the base model this run was trained on cannot be found: {recipe.model} ({exc.message}){where}",
                         hint="pass it with --base FOLDER_OR_HUB_ID (the same weights the run trained on)") from None


def _load_base(base: Path, recipe):
    """(model in float32 and dense, tokenizer, config, the base's quantization layout {path: BaseQuant}).

    A quantized base (a quantized checkpoint, or the run's own QLoRA quantization) is quantized the way training saw it,
    then dequantized: the fused weights are dequant(W_q) + update, which is what the run trained. Dense float32 also
    makes the measurement fast on MLX's CPU backend.
    """
    from mlxft.llm.loading import dequantize_model, load_model

    quant = (recipe.quantize.bits, recipe.quantize.group_size) if recipe.quantize else None
    loaded = load_model(str(base), dtype="float32", quantize=quant, keep_quantized=True, trust_remote_code=recipe.trust_remote_code)
    model = loaded.model
    layout = quant_layout(model)
    dequantize_model(model, mx.float32)
    model.eval()
    mx.eval(model.parameters())
    return model, loaded.tokenizer, loaded.config, layout


def _read_config(base: Path) -> dict:
    from mlxft.llm.model_files import MODEL_CONFIG_HINT, read_json_file

    return read_json_file(base / "config.json", "the base model's config", hint=MODEL_CONFIG_HINT)


def base_dtype(base: Path, config: dict) -> str:
    """The base's weight type: its config's dtype key, else the most common floating type among its weights."""
    for key in ("dtype", "torch_dtype"):
        if config.get(key) in DTYPES:
            return config[key]
    from mlxft.llm.model_files import check_model_weights

    names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
    counts: Counter = Counter()
    for info in check_model_weights(base).values():
        if info.dtype in names:
            n = 1
            for d in info.shape:
                n *= d
            counts[names[info.dtype]] += n
    return counts.most_common(1)[0][0] if counts else "float32"


def _classifier_config(source: Path) -> dict:
    from mlxft.llm.classify import CLASSIFIER_CONFIG
    from mlxft.llm.model_files import read_json_file

    cfg = read_json_file(source / CLASSIFIER_CONFIG, "the classifier's config",
                         hint="restore the classifier.json saved with this run (mlxft train writes it)")
    missing = [k for k in ("head", "num_labels", "id2label", "label2id", "prompt_template", "prompt_max_length", "hidden_size") if k not in cfg]
    if missing:
        from mlxft.errors import BrokenFileError

        raise BrokenFileError(source / CLASSIFIER_CONFIG, f"missing {', '.join(missing)}",
                              hint="restore the classifier.json saved with this run (mlxft train writes it)")
    return cfg


def _attach_score_head(model, source: Path, classifier: dict) -> None:
    """model.score = the run's Linear(hidden, labels, bias=False), its one tensor checked against classifier.json."""
    from mlxft.llm.classify_predict import attach_score_head

    attach_score_head(model, source, classifier)


# -- quantizing, writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseQuant:
    """How one layer of the base was quantized: its grid (scales, biases) is kept to re-quantize onto."""

    group_size: int
    bits: int
    mode: str
    scales: mx.array
    biases: mx.array | None


def quant_layout(model) -> dict[str, BaseQuant]:
    return {name: BaseQuant(m.group_size, m.bits, m.mode, m.scales, m.get("biases"))
            for name, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}


def requantize(model, bits: int, layout: dict[str, BaseQuant]) -> tuple[int, bool]:
    """Quantize the fused model to `bits`; returns (the group size most layers got, whether the base's grids were reused).

    A layer the base had at these bits (affine) is re-quantized group by group onto the base's own grid or a fresh one,
    whichever is closer (`_requantized`): a fresh quantization of dequantized weights is not idempotent in MLX (with no
    update at all it moves values a whole step), so the base's grid keeps what the update did not touch. Other layers the
    base had quantized get a fresh affine quantization at their group size; over a dense base, every linear and
    embedding whose width divides DEFAULT_GROUP does.
    """
    groups = Counter(q.group_size if q.mode == "affine" else DEFAULT_GROUP for q in layout.values())
    group = groups.most_common(1)[0][0] if groups else DEFAULT_GROUP
    swaps, fresh = [], 0
    for path, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Embedding)) or (layout and path not in layout):
            continue
        q = layout.get(path)
        if q is not None and q.bits == bits and q.mode == "affine" and q.biases is not None:
            swaps.append((path, _requantized(module, q)))
            continue
        g = q.group_size if q is not None and q.mode == "affine" else group
        if module.weight.shape[-1] % g == 0:
            swaps.append((path, module.to_quantized(group_size=g, bits=bits, mode="affine")))
            fresh += 1
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    return group, fresh == 0


def _requantized(module, q: BaseQuant):
    """`module` (a dense Linear or Embedding) back at the base's bits: each group of weights on the grid closer to them.

    The base's own grid (its scales and biases: round((w - bias) / scale)) keeps everything the update did not move; a
    fresh grid (MLX's affine quantization of the fused weights) fits a group better once the update stretches its range.
    Per group, the one with the smaller squared error is kept.
    """
    w = module.weight.astype(mx.float32)
    rows, cols = w.shape
    per, n = 32 // q.bits, cols // q.group_size
    grouped = w.reshape(rows, n, q.group_size)
    scales, biases = q.scales.astype(mx.float32)[..., None], q.biases.astype(mx.float32)[..., None]
    levels = mx.where(scales == 0, 0.0, mx.round((grouped - biases) / mx.where(scales == 0, 1.0, scales)))
    levels = mx.clip(levels, 0, 2 ** q.bits - 1)
    base_error = ((levels * scales + biases - grouped) ** 2).sum(axis=-1)
    packed = (levels.astype(mx.uint32).reshape(rows, cols // per, per) << (mx.arange(per, dtype=mx.uint32) * q.bits)).sum(axis=-1)
    packed = packed.astype(mx.uint32)  # MLX's packing: the first value in the low bits
    f_packed, f_scales, f_biases = mx.quantize(w.astype(q.scales.dtype), group_size=q.group_size, bits=q.bits, mode="affine")
    fresh = mx.dequantize(f_packed, f_scales, f_biases, group_size=q.group_size, bits=q.bits, mode="affine").astype(mx.float32)
    fresh_error = ((fresh.reshape(rows, n, q.group_size) - grouped) ** 2).sum(axis=-1)
    take = fresh_error < base_error  # [rows, groups]
    out_w = mx.where(mx.repeat(take, q.group_size // per, axis=-1), f_packed, packed)
    out_s = mx.where(take, f_scales, q.scales)
    out_b = mx.where(take, f_biases, q.biases)
    if isinstance(module, nn.Embedding):
        out = nn.QuantizedEmbedding(rows, cols, group_size=q.group_size, bits=q.bits)
    else:
        out = nn.QuantizedLinear(cols, rows, bias="bias" in module, group_size=q.group_size, bits=q.bits)
        if "bias" in module:
            out.bias = module.bias
    out.weight, out.scales, out.biases = out_w, out_s.astype(q.scales.dtype), out_b.astype(q.biases.dtype)
    out.freeze()
    mx.eval(out.parameters())
    return out


def save_weights(folder: Path, weights: dict, max_bytes: int, metadata: dict) -> list[str]:
    """One model.safetensors, or shards of at most `max_bytes` (a tensor larger than that gets a shard of its own) with
    transformers' index; returns the file names."""
    shards: list[dict] = []
    size = 0
    for name, array in weights.items():
        if not shards or (size + array.nbytes > max_bytes and shards[-1]):
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    n = len(shards)
    files = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    try:
        for name, shard in zip(files, shards):
            mx.save_safetensors(str(folder / name), shard, metadata=metadata)
    except RuntimeError as exc:  # MLX's short write carries no errno
        raise write_error(exc, folder, "write the fused weights") from None
    if n > 1:
        index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
                 "weight_map": {k: f for f, shard in zip(files, shards) for k in sorted(shard)}}
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        _write_json(folder / "model.safetensors.index.json", index)
    return files


def fused_config(base: dict, *, model_type: str, dtype: str, quantization, classifier: dict | None) -> dict:
    """config.json of the fused folder: the base's, with its dtype, architecture, quantization and labels made true."""
    # auto_map names the base's own code, which is not copied: transformers builds the folder with its own class.
    cfg = {k: v for k, v in base.items() if k not in ("_name_or_path", "quantization", "quantization_config", "auto_map")}
    keys = [k for k in ("torch_dtype", "dtype") if k in base] or ["torch_dtype"]  # torch_dtype: what every transformers reads
    for key in keys:
        cfg[key] = dtype
    score_head = classifier is not None and classifier["head"] == "score"
    arch = transformers_architecture(base, model_type, sequence_classifier=score_head)
    if arch is not None:
        cfg["architectures"] = [arch]
    if quantization is not None:
        bits, group, layout = quantization
        q = {"group_size": group, "bits": bits, "mode": "affine"}
        for path, lq in layout.items():
            if lq.mode == "affine" and lq.group_size != group:
                q[path] = {"group_size": lq.group_size, "bits": bits, "mode": "affine"}
        cfg["quantization"] = q
        cfg["quantization_config"] = dict(q)  # mlx-lm writes both; mlx-lm reads `quantization`
    if classifier is not None:
        if score_head:
            cfg["num_labels"] = int(classifier["num_labels"])
            cfg["id2label"] = {str(i): str(v) for i, v in classifier["id2label"].items()}
            cfg["label2id"] = {str(k): int(v) for k, v in classifier["label2id"].items()}
            cfg["problem_type"] = "single_label_classification"
            if classifier.get("pad_token_id") is not None:
                cfg["pad_token_id"] = int(classifier["pad_token_id"])  # where *ForSequenceClassification finds the last real token
        cfg[CLASSIFIER_KEY] = classifier_entry(classifier)
    return cfg


def classifier_entry(classifier: dict) -> dict:
    """config.json's `mlxft_classifier`: how to build a classifier's input and read its labels."""
    labels = [classifier["id2label"][str(i)] for i in range(int(classifier["num_labels"]))]
    entry = {"head": classifier["head"], "prompt_template": classifier["prompt_template"], "labels": labels,
             "label_type": classifier.get("label_type", "str"), "max_length": classifier.get("prompt_max_length")}
    words = classifier.get("verbalizer") or {}
    if classifier["head"] == "verbalizer":
        entry["label_words"] = {name: words[name]["word"] for name in labels if name in words}
        entry["label_token_ids"] = {name: list(words[name]["token_ids"]) for name in labels if name in words}
        entry["scoring"] = ("a label's score is the summed log-probability of its label_token_ids after the prompt "
                            "(prompt_template filled with the text, tokenized with special tokens); the softmax over labels "
                            "of those scores is the classifier's probabilities")
    else:
        entry["scoring"] = ("tokenize prompt_template filled with the text (with special tokens); the logits of score.weight at the "
                            "last non-pad token are the labels' scores (AutoModelForSequenceClassification does this)")
    return entry


def transformers_architecture(base: dict, model_type: str, *, sequence_classifier: bool) -> str | None:
    """transformers' class for the folder: the base's *ForCausalLM (or its *ForSequenceClassification sibling)."""
    given = base.get("architectures")
    stem = None
    if isinstance(given, list) and given and isinstance(given[0], str) and given[0].endswith("ForCausalLM"):
        stem = given[0][: -len("ForCausalLM")]
    stem = stem or TRANSFORMERS_STEMS.get(model_type)
    if not sequence_classifier:
        return f"{stem}ForCausalLM" if stem else None
    if stem is None or model_type in NO_SEQUENCE_CLASSIFIER:
        raise ModelError(f"transformers has no sequence-classification model for {model_type!r}, so a score-head classifier of it "
                         "cannot be exported as one", hint="export it with --format mlx (mlxft and mlx-lm read it)")
    return f"{stem}ForSequenceClassification"


def copy_base_files(base: Path, folder: Path) -> list[str]:
    """The base's tokenizer, chat template, generation config and license files, copied as they are; returns their names."""
    names = [n for n in COPIED if (base / n).is_file()]
    for pattern in COPIED_GLOBS:
        names += sorted(p.name for p in base.glob(pattern) if p.is_file() and p.name not in names)
    for name in names:
        shutil.copyfile(base / name, folder / name)  # follows the Hub cache's symlinks: the folder stands alone
    return names


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# -- notes ----------------------------------------------------------------------------------------------


def _describe(dtype: str, bits: int | None, group: int | None, layout: dict, on_grid: bool) -> str:
    start = "dequantized, fused, " if layout else "fused, "
    if bits is not None:
        grid = ", each group on the base's grid or a fresh one, whichever is closer" if on_grid else ""
        return start + (f"re-quantized to {bits} bits (group {group}){grid}" if layout else f"quantized to {bits} bits (group {group})")
    return start + f"dense {dtype}"


def _advice(bits: int | None, dtype: str) -> str:
    if bits is not None:
        keep = "--dtype float32 keeps all of it" if dtype != "float32" else "in float32 it keeps all of it"
        return f"Keep the fused model dense: leave out --quantize ({keep}; the dense export's own note says what its dtype keeps)."
    if dtype != "float32":
        return ("Export in float32 (--dtype float32) to keep it: rounding to " + dtype + " drops an update smaller than half "
                "a weight's last digit" + (" (float16 has 3 more bits than bfloat16)" if dtype == "bfloat16" else "") + ".")
    return "The fused weights differ from base + adapter: check the adapter and base (--base) are the ones the run trained."


def _kind_line(recipe, classifier: dict | None, dtype: str, bits: int | None, group: int | None) -> str:
    what = (f"transformers sequence classifier ({classifier['num_labels']} labels)" if classifier and classifier["head"] == "score"
            else "causal LM")
    weights = f"{bits}-bit (group {group}, for mlx-lm; transformers cannot read MLX's quantized weights)" if bits else dtype
    return f"fused {recipe.kind} {what}, {weights}"


def _classifier_notes(classifier: dict | None) -> list[str]:
    if classifier is None:
        return []
    template = classifier["prompt_template"]
    if classifier["head"] == "score":
        return [f"load with AutoModelForSequenceClassification.from_pretrained(FOLDER); put each text into the prompt template "
                f"{template!r} before tokenizing (config.json {CLASSIFIER_KEY}.prompt_template)"]
    words = classifier.get("verbalizer") or {}
    shown = ", ".join(f"{k}: {v['word']!r}" for k, v in words.items())
    return [f"a verbalizer classifier is a causal LM: score each label by the summed log-probability of its word's tokens after "
            f"the prompt {template!r}, then softmax over the labels; label words {shown} "
            f"(config.json {CLASSIFIER_KEY}: label_words, label_token_ids)"]


def _name_notes(base: Path, names: set[str], copied: list[str]) -> list[str]:
    """Notes on what transformers may not read: tensor names the base's checkpoint does not have, no tokenizer, no template."""
    from mlxft.llm.model_files import check_model_weights

    notes = []
    known = {k for k in check_model_weights(base) if not k.endswith((".scales", ".biases"))}
    foreign = sorted(k for k in names if k not in known and not k.startswith("score.") and not k.endswith((".scales", ".biases")))
    if foreign:
        notes.append(f"{len(foreign)} tensor name(s) are not in the base's checkpoint (e.g. {foreign[0]!r}): mlx-lm renames some "
                     "architectures' weights, so mlx-lm reads this folder but transformers may not")
    if not any(n in copied for n in ("chat_template.jinja", "chat_template.json")):
        try:
            has = "chat_template" in json.loads((base / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            has = False
        if not has:
            notes.append("the base has no chat template, so neither has the fused model")
    return notes
