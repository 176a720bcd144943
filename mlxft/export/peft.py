"""The `peft` export: a LoRA/DoRA run as Hugging Face PEFT's adapter_model.safetensors + adapter_config.json.

`PeftModel.from_pretrained(base, DIR)` / `AutoPeftModelForCausalLM.from_pretrained(DIR)` load it on the base model the run
was trained on (`base_model_name_or_path`: its Hub id where the run knows it). An lm-classify run with a score head is a
SEQ_CLS adapter with the head in `modules_to_save` (`AutoPeftModelForSequenceClassification`, given the labels, which
travel in mlxft_classifier.json beside it); a verbalizer run stays a causal LM's adapter scored on its label words.
The conversion itself is `mlxft/llm/peft_format.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from mlxft.atomic import atomic_save_safetensors, atomic_write_text
from mlxft.errors import MlxftError, ModelError
from mlxft.export.mlx_copy import result_folder
from mlxft.llm import peft_format as P
from mlxft.llm.adapters import ADAPTER_WEIGHTS, WEIGHTS_HINT, read_adapter_config
from mlxft.llm.model_files import TensorInfo, check_model_weights, load_safetensors_checked, read_json_file

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
SIDECAR_DROPS = ("base_model_path", "export")  # a local path, and notes for the exporter itself: not for whoever downloads it


def _recorded_model(run, recipe) -> tuple[str, Path | None]:
    """(the base model as the run names it, the folder it was loaded from when that is still there)."""
    try:
        info = json.loads(run.model_json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        info = {}
    name = info.get("model") if isinstance(info.get("model"), str) else recipe.model
    path = info.get("model_path")
    folder = Path(path) if isinstance(path, str) and Path(path).is_dir() else None
    return name, folder


def base_model_name(run, recipe, options) -> tuple[str, Path | None, list[str]]:
    """(base_model_name_or_path for PEFT, a local folder of that base to check against or None, notes)."""
    from mlxft.llm.catalogue import find_model

    spec, folder = (options.base, None) if options.base else _recorded_model(run, recipe)
    notes = []
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path.resolve()), path, [f"base_model_name_or_path is the local folder {path.resolve()}; on another machine, "
                                           f"export with --base OWNER/NAME to record its Hub id"]
    if path.suffix.lower() == ".gguf":
        raise MlxftError(f"the run's base model is the GGUF file {spec}, which PEFT cannot load as a base",
                         hint="export with --base set to the transformers model it came from (a folder or Hub id)")
    entry = find_model(spec)
    if entry is not None:
        if entry.hub_id.lower() != spec.lower():
            notes.append(f"base_model_name_or_path is {entry.hub_id}, the original of {spec}")
        spec = entry.hub_id
    if options.base:
        from mlxft.llm.loading import resolve_model_path

        try:
            folder = resolve_model_path(spec, allow_download=False)
        except ModelError:
            folder = None
    config = _read_config(folder)
    if config and config.get("quantization") and entry is None:
        notes.append(f"{spec} is an MLX-quantized model, which transformers cannot load as PEFT's base: export with --base set to "
                     "the original model's Hub id")
    return spec, folder, notes


def _read_config(folder: Path | None) -> dict | None:
    if folder is None or not (folder / "config.json").is_file():
        return None
    return read_json_file(folder / "config.json", "the base model's config")


def base_linears(folder: Path | None) -> dict[str, tuple[int, ...] | None] | None:
    """The base checkpoint's linear-looking modules: name -> (out, in), or None for a quantized one (packed shape)."""
    if folder is None:
        return None
    try:
        tensors: dict[str, TensorInfo] = check_model_weights(folder)
    except ModelError:
        return None
    out = {}
    for name, info in tensors.items():
        if name.endswith(".weight") and len(info.shape) == 2:
            module = name[: -len(".weight")]
            out[module] = None if f"{module}.scales" in tensors else tuple(info.shape)
    return out or None


def _check_against_base(layout: P.BlockLayout, linears: dict | None, folder: Path | None) -> None:
    """Every adapted module is in the base checkpoint under the same name and shape (what PEFT will look for)."""
    if linears is None:
        return
    problems = []
    for i in layout.layers:
        for key in layout.keys:
            name = f"model.layers.{i}.{key}"
            din, dout = layout.dims[key]
            if name not in linears:
                problems.append(f"{name}: not a module of the base checkpoint")
            elif linears[name] is not None and linears[name] != (dout, din):
                problems.append(f"{name}: the base has shape {linears[name]}, the adapter fits {(dout, din)}")
    if problems:
        raise P.PeftFormatError(folder, problems, what="the adapter does not fit this base checkpoint",
                                hint="mlx-lm names this architecture's modules differently from transformers, or --base names another model")


def _dtype(options) -> mx.Dtype | None:
    if options.quantize:
        raise MlxftError("--quantize applies to fused exports; a PEFT adapter is applied to the base as it is",
                         hint="leave --quantize out, or export --format fused")
    if options.dtype is None:
        return None
    if options.dtype not in DTYPES:
        raise MlxftError(f"--dtype {options.dtype}: a PEFT adapter's weights are float32, float16 or bfloat16",
                         hint="leave it out to keep the adapter's own dtype")
    return DTYPES[options.dtype]


def _classifier(recipe, source: Path) -> dict | None:
    if recipe.kind != "lm-classify":
        return None
    from mlxft.llm.classify import CLASSIFIER_CONFIG

    return read_json_file(source / CLASSIFIER_CONFIG, "the classifier's config", hint="restore the classifier.json the run saved")


def write(run, recipe, folder: Path, options) -> list[str]:
    dtype = _dtype(options)
    source = result_folder(run, recipe)
    cfg = read_adapter_config(source)
    if cfg.get("fine_tune_type") == "full":
        raise MlxftError(f"{run.path}: a full fine-tune has no LoRA adapter to write in PEFT's format",
                         hint=f"export the whole model: mlxft export {run.path} --format fused")
    weights = load_safetensors_checked(source / ADAPTER_WEIGHTS, "the adapter weights file", hint=WEIGHTS_HINT)
    layout = P.mlx_layout(cfg, {k: tuple(v.shape) for k, v in weights.items()})
    base, base_folder, notes = base_model_name(run, recipe, options)
    config = _read_config(base_folder) or {}
    n_layers = (config.get("num_hidden_layers", (config.get("text_config") or {}).get("num_hidden_layers"))
                or P.base_layer_count(base) or layout.layers[-1] + 1)
    if layout.layers[-1] != n_layers - 1:
        raise MlxftError(f"{source}: the adapter's last block is {layout.layers[-1]}, but the base ({base}) has {n_layers} blocks",
                         hint="--base names another model than the one the run trained on?")
    linears = base_linears(base_folder)
    _check_against_base(layout, linears, base_folder)
    if linears is None:
        notes.append("the base's weights are not at hand, so the module names were not checked against its checkpoint")

    classifier = _classifier(recipe, source)
    head, task, saved = None, "CAUSAL_LM", None
    if classifier is not None and classifier.get("head") == "score":
        from mlxft.llm.classify import SCORE_WEIGHTS

        head = load_safetensors_checked(source / SCORE_WEIGHTS, "the classifier's score head", hint=WEIGHTS_HINT)
        if set(head) != {"score.weight"}:
            raise MlxftError(f"{source / SCORE_WEIGHTS}: expected one tensor score.weight, found {sorted(head)}", hint="was it copied from another run?")
        task, saved = "SEQ_CLS", ["score"]
    peft_cfg = P.peft_config_from_mlx(cfg, layout, num_model_layers=n_layers, base_model=base, task_type=task,
                                      modules_to_save=saved, base_linears=linears)
    tensors = P.peft_weights_from_mlx(weights, head, dtype=dtype)
    atomic_save_safetensors(folder / P.PEFT_WEIGHTS, tensors, metadata={"format": "pt"})
    atomic_write_text(folder / P.PEFT_CONFIG, json.dumps(peft_cfg, indent=2))

    targets = peft_cfg["target_modules"]
    blocks = "every block" if peft_cfg["layers_to_transform"] is None else f"blocks {layout.layers[0]}..{layout.layers[-1]}"
    notes.insert(0, f"{'DoRA' if layout.dora else 'LoRA'} r{layout.rank}, lora_alpha {peft_cfg['lora_alpha']} on "
                    f"{targets if isinstance(targets, str) else ', '.join(targets)} of {blocks}; load it with "
                    f"PeftModel.from_pretrained(base, DIR) or {'AutoPeftModelForSequenceClassification' if head else 'AutoPeftModelForCausalLM'}.from_pretrained(DIR)")
    if recipe.quantize:
        notes.append(f"trained on a {recipe.quantize.bits}-bit quantized base (QLoRA): the LoRA applies to the unquantized base named here, "
                     "whose outputs differ slightly from the quantized model the run evaluated")
    if classifier is not None:
        sidecar = {k: v for k, v in classifier.items() if k not in SIDECAR_DROPS}
        sidecar["base_model"] = base
        atomic_write_text(folder / P.CLASSIFIER_SIDECAR, json.dumps(sidecar, indent=2))
        template = classifier.get("prompt_template")
        if head is not None:
            notes.append(f"a sequence classifier ({classifier['num_labels']} labels): pass them when loading, e.g. "
                         f"AutoPeftModelForSequenceClassification.from_pretrained(DIR, num_labels={classifier['num_labels']}, "
                         f"id2label={classifier['id2label']}, label2id={classifier['label2id']}, pad_token_id={classifier.get('pad_token_id')}) "
                         f"(they are in {P.CLASSIFIER_SIDECAR}); texts go in as the prompt template {template!r} renders them")
        else:
            words = {label: v["word"] for label, v in (classifier.get("verbalizer") or {}).items()}
            notes.append(f"a verbalizer classifier: this is a causal LM's adapter (CAUSAL_LM); a label's score is the log-probability of its "
                         f"word after the prompt. Label words {words}; prompt template {template!r} (both in {P.CLASSIFIER_SIDECAR})")
    return notes
