"""The Recipe schema: YAML loading, `key=value` overrides, and validation that reports every problem at once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from mlxft.errors import RecipeError

LM_KINDS = ("lm-lora", "lm-qlora", "lm-dora", "lm-full")
PREFERENCE_KINDS = ("lm-dpo", "lm-orpo")
VISION_KINDS = ("image-classify",)
CLASSIFY_KINDS = ("lm-classify",)
KINDS = (*LM_KINDS, *PREFERENCE_KINDS, *CLASSIFY_KINDS, *VISION_KINDS)
# The kinds that train each data format (`mlxft data validate` names it); the kind rules refuse the others.
FORMAT_KINDS = {"preference": PREFERENCE_KINDS, "classification": CLASSIFY_KINDS, "image-classification": VISION_KINDS}


def kinds_for_format(fmt: str) -> tuple[str, ...]:
    """`kinds_for_format("classification")` -> ("lm-classify",); text, completion, chat and the like: the SFT kinds."""
    return FORMAT_KINDS.get(fmt, LM_KINDS)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _whole_number(value: Any) -> Any:
    """YAML 1.1 reads `1e4` as a string; accept it (and 1e4 as a float) where a count is asked for, when it is whole."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {str(value).lower()} (a yes/no value)")
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {value:g}")
        return int(value)
    return value


# An int field that also takes `1e4` / `2.0e3`; bools are refused (YAML `yes` is not a count).
Count = Annotated[int, BeforeValidator(_whole_number), Field(strict=False)]


def _run_name(value: str | None) -> str | None:
    """A run name becomes one folder under output_dir: never a path that could land anywhere else."""
    if value is None:
        return None
    problems = []
    if not value.strip():
        problems.append("is empty")
    if "/" in value or "\\" in value:
        problems.append("contains a path separator")
    if value in (".", "..") or value.startswith("."):
        problems.append("starts with '.' (names starting with '.' are mlxft's temporary folders)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        problems.append("contains control characters")
    if len(value.encode("utf-8")) > 200:
        problems.append("is longer than 200 bytes")
    if problems:
        raise ValueError(f"a run name is one folder name under output_dir, and {value!r} " + ", ".join(problems) + "; e.g. name: chat-lora-r8")
    return value


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(_Strict):
    path: str = Field(description="A folder with train/valid/test .jsonl files, one .jsonl file, or a saved `datasets` folder.")
    format: Literal["auto", "text", "completion", "chat", "preference", "classification", "image-classification"] = Field(
        "auto", description="text: {text}; completion: {prompt, completion}; chat: {messages: [{role, content}]}; "
        "preference (lm-dpo, lm-orpo): {prompt, chosen, rejected} and the other published layouts; "
        "classification (lm-classify): {text, label} rows, or any columns classify.prompt_template names, plus the label; "
        "image-classification (image-classify): <split>/<label>/<image> folders or {image, label} rows."
    )
    mask_prompt: bool = Field(True, description="Train only on completions / assistant turns; prompt tokens get no loss.")
    max_seq_length: Annotated[Count, Field(gt=8)] = Field(2048, description="Token budget of one sample.")
    overlong: Literal["truncate", "drop"] = Field("truncate", description="What happens to samples longer than max_seq_length (counted either way).")
    batching: Literal["bucket", "pad", "pack"] = Field(
        "bucket", description="bucket: group samples of similar length so little compute goes to padding; pad: batches in data order; "
        "pack (SFT kinds): the bucketed batches laid out without padding (samples end to end in rows, attention kept inside each sample)."
    )
    prompt_key: str = Field("prompt", description="Column holding the prompt (completion format).")
    completion_key: str = Field("completion", description="Column holding the completion (completion format).")
    text_key: str = Field("text", description="Column holding the text (text and classification formats).")
    label_key: str = Field("label", description="Column holding the label (classification format): a class name or an integer.")
    messages_key: str = Field("messages", description="Column holding the chat turns (chat format).")
    chosen_key: str = Field("chosen", description="Column holding the preferred answer (preference format).")
    rejected_key: str = Field("rejected", description="Column holding the rejected answer (preference format).")
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test"


class LoraSection(_Strict):
    rank: Annotated[Count, Field(gt=0, le=1024)] = Field(8, description="LoRA rank r.")
    alpha: Annotated[float, Field(gt=0)] = Field(16.0, description="The update is scaled by alpha/rank (PEFT's meaning).")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    targets: Annotated[list[str], Field(min_length=1)] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (e.g. q_proj, v_proj, gate_proj) or 'all-linear'.",
    )
    layers: Annotated[Count, Field(gt=0)] | Literal["all"] = Field("all", description="Adapt the last N transformer blocks (N >= 1), or all of them.")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class QuantizeSection(_Strict):
    bits: Literal[4, 8] = 4
    group_size: Literal[32, 64, 128] = 64


class PreferenceSection(_Strict):
    """Preference tuning (lm-dpo, lm-orpo)."""

    beta: Annotated[float, Field(gt=0)] = Field(0.1, description="DPO: how far the policy may move from the reference (TRL's beta). ORPO: the weight of the odds-ratio term.")
    loss: Literal["sigmoid", "ipo"] = Field("sigmoid", description="lm-dpo: sigmoid (the DPO paper) or ipo (squared, on length-averaged log-probs).")
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = Field(0.0, description="lm-dpo sigmoid: the share of pairs assumed mislabelled (conservative DPO, cDPO).")
    reference: Literal["precompute", "live"] = Field(
        "precompute", description="lm-dpo: precompute: the reference log-probs of every pair are computed once by the starting model (base, "
        "plus init_adapter) and cached in the run directory; live: computed each step with the adapter switched off (the base is the reference).",
    )
    adapter: Literal["lora", "dora", "full"] = Field("lora", description="What is trained: LoRA or DoRA adapters (lora section), or every weight. With init_adapter, that adapter's kind.")


def _template_fields(value: str | None) -> str | None:
    """A prompt template names row columns in braces ({text}); literal braces are doubled ({{ }})."""
    if value is None:
        return None
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc}); name columns in braces, e.g. 'Review: {{text}}\\nSentiment:', and double literal braces") from None
    if not fields:
        raise ValueError("names no column; put the text's column in braces, e.g. 'Review: {text}\\nSentiment:'")
    bad = [f for f in fields if not f or f.isdigit() or any(c in f for c in ".[]!:")]
    if bad:
        raise ValueError(f"{{{bad[0]}}} is not a column name; name columns plainly, e.g. {{text}} or {{premise}}")
    return value


def _label_keys(value: Any) -> Any:
    """Labels as mapping keys are compared as text: YAML's `0:` and `"0":` name the same label."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, (int, str)) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


class ClassifySection(_Strict):
    """Text classification with a causal LM (lm-classify): a `score` head on the last token, or label words (verbalizer)."""

    head: Literal["score", "verbalizer"] = Field(
        "score", description="score: a new Linear(hidden, labels, bias=False) on the final hidden state of the last token (transformers' "
        "*ForSequenceClassification); verbalizer: no new weights, each label scored by the log-probability of its word(s) after the prompt.")
    adapter: Literal["lora", "dora", "full"] = Field("lora", description="What trains in the body: LoRA or DoRA adapters (lora section), or every weight. The score head trains in every case.")
    prompt_template: Annotated[str | None, AfterValidator(_template_fields)] = Field(
        None, description="The input built from each row's columns, e.g. 'Review: {text}\\nSentiment:' or 'Premise: {text_a}\\nHypothesis: {text_b}\\nRelation:'. "
        "null: the data.text_key column as it is (rows with text_a and text_b: the two, one per line).")
    verbalizer: Annotated[dict[str, Annotated[str, Field(min_length=1)]], BeforeValidator(_label_keys)] | None = Field(
        None, description="The word(s) for each label, e.g. {0: ' negative', 1: ' positive'}; null: each label's name after a space. head verbalizer "
        "scores them; with head score they make the zero-shot base that `mlxft eval` reports.")
    score_init: Literal["words", "random"] = Field(
        "words", description="head score: words: each label's row starts as the LM head's row for its word's first token (classify.verbalizer, "
        "else the label's name), so training starts from the zero-shot verbalizer's choice; random: normal(0, 0.02), as transformers initialises it.")
    class_weights: Literal["auto", "none"] | Annotated[dict[str, Annotated[float, Field(gt=0)]], BeforeValidator(_label_keys)] = Field(
        "auto", description="auto: weight the loss by inverse class frequency; none: every text counts the same; or a weight per label, e.g. {spam: 3.0} (unnamed labels weigh 1).")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="Share of the target spread evenly over the labels.")
    valid_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="Without a valid split, this share of the training rows (stratified by label, seeded) is held out for validation; 0: none.")


class VisionSection(_Strict):
    """Image classification (image-classify): two phases on a pretrained backbone."""

    image_size: Annotated[Count, Field(ge=16, le=1024)] | None = Field(None, description="Input side in pixels; null: the backbone's own (e.g. 224). Smaller is much faster on a CPU.")
    head_epochs: Annotated[float, Field(ge=0)] = Field(10.0, description="Phase 1: epochs training only the new head on the frozen backbone (on cached features: fast).")
    head_learning_rate: Annotated[float, Field(gt=0)] = Field(1e-3, description="Phase 1 learning rate.")
    finetune_epochs: Annotated[float, Field(ge=0)] = Field(3.0, description="Phase 2: epochs with the last `unfreeze` blocks trained too, on augmented images; 0 skips it.")
    finetune_learning_rate: Annotated[float, Field(gt=0)] = Field(1e-4, description="Phase 2 learning rate.")
    unfreeze: Annotated[Count, Field(gt=0)] | Literal["all"] = Field(2, description="Phase 2 trains the last N blocks of the backbone (or all).")
    finetune_method: Literal["unfreeze", "lora"] = Field("unfreeze", description="Phase 2: unfreeze the blocks' weights, or train LoRA on their attention (ViT only) with the weights frozen.")
    finetune_warmup_steps: Annotated[Count, Field(ge=0)] | None = Field(None, description="Phase 2 linear warmup steps; null: train.warmup_steps.")
    layer_decay: Annotated[float, Field(gt=0, le=1)] = Field(1.0, description="Phase 2 layer-wise learning-rate decay: the k-th block below the top trains at finetune_learning_rate * layer_decay^k (1: off).")
    lora_rank: Annotated[Count, Field(gt=0)] = Field(8, description="finetune_method lora: the rank of each update.")
    lora_alpha: Annotated[float, Field(gt=0)] = Field(16.0, description="finetune_method lora: the update is scaled by lora_alpha / lora_rank.")
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lora_targets: list[Literal["query", "key", "value", "proj", "fc1", "fc2"]] = Field(["query", "value"], description="finetune_method lora: the linears of each block that get an update.")
    mixup: Annotated[float, Field(ge=0)] = Field(0.0, description="Mixup alpha (Beta(alpha, alpha) mixing of pairs of training images in phase 2, of their features in phase 1); 0: off.")
    cache_features: bool = Field(True, description="Phase 1 trains on the frozen backbone's features, computed once and cached in the run directory.")
    cache_views: Annotated[Count, Field(gt=0, le=16)] = Field(1, description="Augmented views per training image in the feature cache (1: the centre crop only).")
    augment: bool = Field(True, description="Random resized crops, flips and light brightness/contrast jitter (seeded: resume is exact).")
    class_weights: Literal["auto", "none"] = Field("auto", description="auto: weight the loss by inverse class frequency; none: every image counts the same.")
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: every class equally often in each epoch.")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.2, description="Dropout before the new head.")
    valid_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(0.15, description="Without a valid split, this share of the training images (stratified, seeded) is held out.")

    @model_validator(mode="after")
    def _something_to_train(self):
        if self.head_epochs == 0 and self.finetune_epochs == 0:
            raise ValueError("head_epochs and finetune_epochs are both 0: nothing to train; set one of them, e.g. head_epochs: 10")
        if self.head_epochs and not self.cache_features:
            raise ValueError("cache_features: false is not supported yet: phase 1 trains on cached features; set head_epochs: 0 to fine-tune through the backbone only")
        return self


class MlflowSection(_Strict):
    """Track the run in MLflow: the recipe as params, every step's and evaluation's metrics, the result as artifacts."""

    uri: str | None = Field(None, description="The tracking server or store, e.g. http://localhost:5000 or sqlite:///mlflow.db; "
                            "null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the folder training starts from.")
    experiment: Annotated[str, Field(min_length=1)] = Field("mlxft", description="The MLflow experiment (created if missing).")
    run_name: str | None = Field(None, description="The MLflow run's name; null: the run directory's name.")


class TrackingSection(_Strict):
    mlflow: MlflowSection | None = Field(None, description="Log to MLflow (needs the mlflow extra: pip install 'mlxft[mlflow]'); "
                                         "`tracking: {mlflow: {}}` takes every default. A tracker that fails never stops the training.")


class TrainSection(_Strict):
    steps: Annotated[Count, Field(gt=0)] | None = Field(None, description="Optimizer steps; set this or epochs.")
    epochs: Annotated[float, Field(gt=0)] | None = Field(None, description="Passes over the training split (used when steps is not set).")
    batch_size: Annotated[Count, Field(gt=0)] = 4
    grad_accumulation: Annotated[Count, Field(gt=0)] = Field(1, description="Micro-batches per optimizer step.")
    learning_rate: Annotated[float, Field(gt=0)] = 1e-4
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Annotated[Count, Field(ge=0)] = 0
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Floor of the decay, as a fraction of learning_rate.")
    max_grad_norm: Annotated[float, Field(gt=0)] | None = Field(1.0, description="Clip the global gradient norm; null turns clipping off.")
    eval_every: Annotated[Count, Field(gt=0)] | None = Field(100, description="Validation loss every N steps (and at the end).")
    eval_batches: Annotated[Count, Field(gt=0)] | None = Field(None, description="Cap the validation batches; null means the whole split.")
    save_every: Annotated[Count, Field(gt=0)] | None = Field(100, description="Checkpoint every N steps (and at the end).")
    keep_checkpoints: Annotated[Count, Field(gt=0)] = Field(2, description="How many step checkpoints to keep on disk.")
    early_stopping_patience: Annotated[Count, Field(gt=0)] | None = Field(
        None, description="Stop after this many evaluations without a better validation score (train.best_metric)."
    )
    keep_best: bool = Field(True, description="The final adapter is the one with the best validation score (train.best_metric).")
    best_metric: str = Field("loss", description="The validation metric that keep_best and early stopping follow (loss, or a metric the job reports such as accuracy).")
    grad_checkpoint: bool = Field(False, description="Recompute activations in the backward pass: less memory, ~30% slower.")
    compile: bool = Field(True, description="Compile the training step (set false to debug eagerly).")
    log_every: Annotated[Count, Field(gt=0)] = 10

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if self.steps is None and self.epochs is None:
            self.__dict__["steps"] = 1000
        return self


class Recipe(_Strict):
    kind: Literal["lm-lora", "lm-qlora", "lm-dora", "lm-full", "lm-dpo", "lm-orpo", "lm-classify", "image-classify"] = Field(
        description="The job: LoRA, QLoRA, DoRA or full fine-tuning of a causal LM; lm-dpo / lm-orpo: preference tuning (DPO, ORPO) on preference pairs; "
        "lm-classify: a text classifier from a causal LM (classify section); image-classify: a pretrained image backbone with a new head."
    )
    model: str = Field(description="A key in models/, a Hugging Face Hub id, a local folder, or a .gguf file; for image-classify a backbone (a key in models/vision such as efficientnet-lite0 or dinov2-small, a Hub id, a folder or a .pth).")
    name: Annotated[str | None, AfterValidator(_run_name)] = Field(None, description="Run name: one folder name (no '/'); the run directory is output_dir/name.")
    output_dir: str = Field("runs", description="Where run directories are created.")
    seed: Count = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype. auto: float32 on MLX's CPU backend (bf16 matmuls are slow there), bfloat16 on a GPU."
    )
    trust_remote_code: bool = Field(False, description="Run Python code that ships with the model: the file config.json's `model_file` names (mlx-lm imports it to build the architecture) and the tokenizer/config classes an `auto_map` in tokenizer_config.json or config.json names (transformers runs them, and may fetch them from the Hub repo the entry names). Off: such a model is refused, saying why, and none of its code runs.")
    data: DataSection
    lora: LoraSection = Field(default_factory=LoraSection)
    quantize: QuantizeSection | None = Field(None, description="Quantize the base on load (QLoRA). lm-qlora defaults to 4 bits.")
    train: TrainSection = Field(default_factory=TrainSection)
    preference: PreferenceSection = Field(default_factory=PreferenceSection)
    classify: ClassifySection = Field(default_factory=ClassifySection)
    vision: VisionSection = Field(default_factory=VisionSection)
    init_adapter: str | None = Field(
        None, description="Start from a trained adapter (a run directory or an adapter folder), e.g. DPO on top of an SFT run; its rank, targets and kind are used."
    )
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="Experiment tracking (MLflow) of the run's params, metrics and artifacts.")

    @model_validator(mode="after")
    def _kind_rules(self):
        if self.kind == "lm-qlora" and self.quantize is None:
            self.__dict__["quantize"] = QuantizeSection()
        if self.method == "full" and self.quantize is not None:
            raise ValueError("full fine-tuning cannot train a quantized base; remove `quantize` or use lm-qlora")
        if self.data.batching == "pack" and self.kind not in LM_KINDS:
            raise ValueError(f"data.batching pack lays out SFT batches ({', '.join(LM_KINDS)}), and kind is {self.kind}; use bucket or pad")
        # A classifier kind has its own section and data format, which every other kind refuses by name.
        for section, kinds, fmt, rules in (("vision", VISION_KINDS, "image-classification", self._vision_rules),
                                           ("classify", CLASSIFY_KINDS, "classification", self._classify_rules)):
            if self.kind in kinds:
                return rules()
            if section in self.model_fields_set:
                raise ValueError(f"the {section} section is read by {' or '.join(kinds)} only, and kind is {self.kind}; remove it")
            if self.data.format == fmt:
                raise ValueError(f"data.format {fmt} trains with kind {' or '.join(kinds)}, not {self.kind}")
        if self.kind not in PREFERENCE_KINDS:
            if self.data.format == "preference":
                raise ValueError(f"data.format preference trains with kind lm-dpo or lm-orpo, not {self.kind}")
            if "preference" in self.model_fields_set:
                raise ValueError(f"the preference section is read by lm-dpo and lm-orpo only, and kind is {self.kind}; remove it")
        elif self.data.format not in ("auto", "preference"):
            raise ValueError(f"{self.kind} trains on preference pairs: set data.format to preference (or auto), not {self.data.format}")
        if self.kind == "lm-dpo" and self.preference.reference == "live" and (self.method == "full" or self.init_adapter):
            why = "full fine-tuning has no adapter to switch off" if self.method == "full" else "with init_adapter the reference is the starting adapter, not the base"
            raise ValueError(f"preference.reference live needs the base as the reference, and {why}; use preference.reference: precompute")
        return self

    def _classify_rules(self):
        if self.data.format not in ("auto", "classification"):
            raise ValueError(f"lm-classify trains on labelled texts: set data.format to classification (or auto), not {self.data.format}")
        if "preference" in self.model_fields_set:
            raise ValueError("the preference section is read by lm-dpo and lm-orpo only, and kind is lm-classify; remove it")
        unread = [f"data.{k}" for k in _changed(self.data, ("mask_prompt", "prompt_key", "completion_key", "messages_key", "chosen_key", "rejected_key"))]
        if unread:
            raise ValueError(f"lm-classify does not read {', '.join(unread)} (the input is classify.prompt_template over the row's columns, "
                             "the label is data.label_key); remove them")
        return self

    def _vision_rules(self):
        if self.data.format not in ("auto", "image-classification"):
            raise ValueError(f"image-classify trains on labelled images: set data.format to image-classification (or auto), not {self.data.format}")
        lm_only = [f"data.{k}" for k in _changed(self.data, sorted(set(DataSection.model_fields) - {"path", "format", "train_split", "valid_split", "test_split"}))]
        lm_only += [k for k in ("lora", "quantize", "preference", "classify") if k in self.model_fields_set and getattr(self, k) != type(self).model_fields[k].get_default(call_default_factory=True)]
        lm_only += ["init_adapter"] if self.init_adapter else []
        lm_only += [f"train.{k}" for k in _changed(self.train, ("steps", "epochs", "learning_rate", "grad_checkpoint"))]
        if lm_only:
            raise ValueError(f"image-classify does not read {', '.join(lm_only)} (language-model settings; an image classifier's "
                             "phases and learning rates are vision.head_epochs, vision.finetune_epochs and theirs); remove them")
        return self

    @property
    def method(self) -> str:
        if self.kind in VISION_KINDS:
            return "image-classify"
        if self.kind in PREFERENCE_KINDS:
            return self.preference.adapter
        if self.kind in CLASSIFY_KINDS:
            return self.classify.adapter
        return {"lm-lora": "lora", "lm-qlora": "lora", "lm-dora": "dora", "lm-full": "full"}[self.kind]

    def to_dict(self) -> dict:
        """The recipe as plain data that validates back to the same recipe (sections other kinds refuse left out)."""
        data = self.model_dump(mode="json")
        if self.tracking.mlflow is None:
            data.pop("tracking")  # untracked runs keep the recipe they always had
        if self.kind not in PREFERENCE_KINDS:
            data.pop("preference")
        if self.kind not in CLASSIFY_KINDS:
            data.pop("classify")
        if self.kind not in VISION_KINDS:
            data.pop("vision")
        else:
            for key in ("lora", "quantize", "preference", "init_adapter"):
                data.pop(key, None)
            data["data"] = {k: v for k, v in data["data"].items() if k in ("path", "format", "train_split", "valid_split", "test_split")}
            data["train"] = {k: v for k, v in data["train"].items() if k not in ("steps", "epochs", "learning_rate", "grad_checkpoint")}
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _changed(section, names) -> list[str]:
    """The fields among `names` set to something other than their default: settings a job that ignores them must refuse."""
    fields = type(section).model_fields
    return [k for k in names if k in section.model_fields_set and getattr(section, k) != fields[k].get_default(call_default_factory=True)]


def _location(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-after")))


MAX_RECIPE_BYTES = 1_000_000
UNKNOWN_KEY = "unknown key: check the spelling (`mlxft validate` lists the fields)"


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        # Pydantic repeats a union error once per alternative; keep the location readable.
        loc = tuple(p for p in e["loc"] if p not in ("constrained-int", "int", "float", "list[str]", "literal['all-linear']", "literal['all']", "QuantizeSection")
                    and not (isinstance(p, str) and p.startswith(("function-before[", "literal['auto'", "dict[str,"))))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = UNKNOWN_KEY
        elif e["type"] == "missing":
            msg = "this field is required"
        problems.append((_location(loc) or "(recipe)", msg))
    # A union (e.g. a list or 'all-linear') fails once per alternative: one line per location.
    merged: dict[str, list[str]] = {}
    for loc, msg in problems:
        if msg not in merged.setdefault(loc, []):
            merged[loc].append(msg)
    return [(loc, "; or ".join(msgs)) for loc, msgs in merged.items()]


def parse_overrides(pairs: list[str], source: str = "command line") -> dict[str, Any]:
    """Turn ["train.steps=50", "lora.targets=[q_proj,v_proj]"] into a nested dict; values are read as YAML."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            problems.append((pair, "overrides look like key=value, e.g. train.steps=50"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append((key, f"cannot read {raw!r} as a value: {exc}"))
            continue
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append((key, f"{part} is set both as a value and as a section"))
                break
        else:
            node[parts[-1]] = value
    if problems:
        raise RecipeError(source, problems)
    return out


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def recipe_from_dict(data: Any, source: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    """Validate a mapping (plus overrides) into a Recipe, or raise RecipeError listing every problem."""
    if not isinstance(data, dict):
        raise RecipeError(source, [("(recipe)", f"expected a mapping of keys to values, got {type(data).__name__}")])
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(source, _problems(err), hint=f"fix these in {source} or override them with key=value") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file and validate it (with optional key=value overrides)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe file" if path.is_dir() else "no such file"
        raise RecipeError(str(path), [("(file)", what)], hint="give the path of a recipe YAML, e.g. recipes/chat-lora.yaml")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(str(path), [("(file)", f"cannot be read: {exc.strerror}")]) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(str(path), [("(file)", f"is {len(raw):,} bytes; a recipe is a short YAML file (at most {MAX_RECIPE_BYTES:,} bytes)")], hint="did you pass a data or weights file instead of the recipe?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(str(path), [(f"line {line}", "not UTF-8 text (a binary file?)")], hint="a recipe is a YAML text file, e.g. recipes/chat-lora.yaml") from None
    if "\x00" in text:
        raise RecipeError(str(path), [(f"line {text[: text.index(chr(0))].count(chr(10)) + 1}", "holds a NUL byte (a binary file?)")], hint="a recipe is a YAML text file, e.g. recipes/chat-lora.yaml")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise RecipeError(str(path), [("(file)", "nested too deeply to be a recipe")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise RecipeError(str(path), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    recipe = recipe_from_dict(data if data is not None else {}, source=str(path), overrides=overrides)
    _resolve_relative_paths(recipe, path.parent)
    return recipe


def _resolve_relative_paths(recipe: Recipe, base: Path) -> None:
    # A data path that does not exist relative to the current folder is tried relative to the recipe file.
    data_path = Path(recipe.data.path).expanduser()
    if not data_path.is_absolute() and not data_path.exists() and (base / data_path).exists():
        recipe.data.path = str((base / data_path).resolve())
    if recipe.init_adapter:
        init = Path(recipe.init_adapter).expanduser()
        if not init.is_absolute() and not init.exists() and (base / init).exists():
            recipe.init_adapter = str((base / init).resolve())
