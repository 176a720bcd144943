"""A trained text classifier (an lm-classify run), loaded from its run or adapter folder: texts in, labels and scores out.

`clf(texts)` has the shape of transformers' `pipeline("text-classification")`: one text gives [{"label", "score"}],
a list of texts gives one {"label", "score"} per text; with top_k > 1 (or None: every label) each text gets a
list, best first. Texts are batched by length; the order of the answers is the order of the texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxft import lora
from mlxft.errors import BrokenFileError, MlxftError, ModelError
from mlxft.llm import adapters as A
from mlxft.llm.cpu_speed import use_cpu_kernels
from mlxft.llm.model_files import load_safetensors_checked
from mlxft.llm.classify import (CLASSIFIER_CONFIG, SCORE_WEIGHTS, PromptEncoder, batch_arrays, model_parts, read_fields, score_logits,
                                verbalizer_scores)
from mlxft.runs import ADAPTER_DIR, RunDir

CONFIG_FIELDS = ("head", "base_model", "num_labels", "id2label", "prompt_template", "prompt_max_length", "hidden_size")


def attach_score_head(model: nn.Module, folder: Path, config: dict) -> None:
    """model.score = the run's Linear(hidden, labels, bias=False) from folder/score.safetensors, its one tensor checked
    against classifier.json's num_labels and hidden_size."""
    k, hidden = int(config["num_labels"]), int(config["hidden_size"])
    weights = load_safetensors_checked(folder / SCORE_WEIGHTS, "the classifier's score head")
    w = weights.get("score.weight")
    if w is None or tuple(w.shape) != (k, hidden) or len(weights) != 1:
        got = {n: tuple(v.shape) for n, v in weights.items()}
        raise ModelError(f"{folder / SCORE_WEIGHTS}: expected score.weight of shape {(k, hidden)} ({k} labels x hidden {hidden}), found {got}",
                         hint="was it copied from another run?")
    model.score = nn.Linear(hidden, k, bias=False)
    model.score.weight = w.astype(mx.float32)


def classifier_folder(path: str | Path) -> Path:
    """The folder holding classifier.json: `path` itself, or a run's adapter/ (or best/)."""
    path = Path(path)
    run = RunDir(path)
    for folder in (path, run.result_dir(ADAPTER_DIR), run.best_dir):
        if (folder / CLASSIFIER_CONFIG).is_file():
            return folder
    raise ModelError(f"{path}: no text classifier here", hint="pass a run directory of `kind: lm-classify` (or its adapter/ folder)")


def is_text_classifier(path: str | Path) -> bool:
    try:
        classifier_folder(path)
        return True
    except ModelError:
        return False


@dataclass
class TextClassifier:
    """`clf(texts, top_k=1)`; `clf.probabilities(texts)` [N, labels]; a text is a string, or a dict of the prompt's columns."""

    model: nn.Module
    tokenizer: object
    config: dict
    folder: Path
    model_type: str
    truncated: int = 0  # inputs of the last call that were cut to fit the prompt's length

    def __post_init__(self):
        self.body, self.head = model_parts(self.model, self.model_type)
        self.encoder = PromptEncoder(self.tokenizer, self.config["prompt_template"], int(self.config["prompt_max_length"]))
        verbalizer = self.config.get("verbalizer") or {}
        self.words = [np.asarray(verbalizer[name]["token_ids"], np.int32) for name in self.labels] if verbalizer else None
        self.pad_id = int(self.config.get("pad_token_id") or 0)  # padding follows the real tokens, so its id changes nothing

    @property
    def labels(self) -> list[str]:
        return [self.config["id2label"][str(i)] for i in range(int(self.config["num_labels"]))]

    @property
    def has_base(self) -> bool:
        """Whether a zero-shot base applies: label words exist (a verbalizer run, or words the recipe gave a score run)."""
        return self.words is not None and (self.config["head"] == "verbalizer" or bool(self.config.get("verbalizer_set")))

    def rows(self, inputs: list, names: list[str] | None = None) -> list[dict[str, str]]:
        """Each input as the prompt's columns: a string fills the template's one column, a dict names them. A bad input
        is an error naming it as `names[i]` (e.g. file:line) where given, else "input i"."""
        fields = self.encoder.fields
        out, problems = [], []
        for i, item in enumerate(inputs):
            where = names[i] if names else f"input {i + 1}"
            if isinstance(item, str) and len(fields) == 1:
                item = {fields[0]: item}
            elif isinstance(item, str):
                problems.append(f"{where}: a string, but this classifier's prompt names {len(fields)} columns ({', '.join(fields)}): pass a dict of them")
                continue
            if not isinstance(item, dict):
                problems.append(f"{where}: a text is a string or a dict of columns, got {type(item).__name__}")
                continue
            try:
                out.append(read_fields(item, fields))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        if problems:
            raise MlxftError(f"{len(problems)} input(s) cannot be classified:\n  " + "\n  ".join(problems[:20]),
                             hint=f"the prompt template is {self.config['prompt_template']!r}")
        return out

    def scores(self, inputs: list, batch_size: int = 16, zero_shot: bool = False, names: list[str] | None = None) -> np.ndarray:
        """[N, labels]: the score head's logits, or each label word's summed log-probability (zero_shot: the base's).
        `names`: what to call each input in an error (e.g. file:line)."""
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise MlxftError(f"batch_size {batch_size!r}: must be a whole number of 1 or more")
        rows = self.rows(list(inputs), names)
        prompts, cut = self.encoder.encode(rows)
        self.truncated = len(cut)
        verbalizer = zero_shot or self.config["head"] == "verbalizer"
        out = np.zeros((len(prompts), len(self.labels)), np.float32)
        order = np.argsort([len(p) for p in prompts], kind="stable")
        first = mx.array(np.array([w[0] for w in self.words], np.int32)) if verbalizer else None
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            arrays = batch_arrays([prompts[i] for i in idx], [0] * len(idx), self.pad_id, self.words if verbalizer else None)
            if verbalizer:
                s = verbalizer_scores(self.model, self.body, self.head, arrays, first, normalized=True)
            else:
                s = score_logits(self.model, self.body, arrays[0], arrays[1])
            out[idx] = np.array(s)
        return out

    def probabilities(self, inputs: list, batch_size: int = 16, names: list[str] | None = None) -> np.ndarray:
        return _softmax(self.scores(inputs, batch_size, names=names))

    def base_probabilities(self, inputs: list, batch_size: int = 16) -> np.ndarray:
        """The zero-shot base: the label words scored by the untrained model (the adapter switched off)."""
        if not self.has_base:
            raise MlxftError("this classifier has no label words to score zero-shot", hint="set classify.verbalizer in the recipe")
        if self.config.get("method") == "full":
            raise MlxftError("a fully fine-tuned classifier has no adapter to switch off for the zero-shot base")
        lora.set_adapters_enabled(self.model, False)
        try:
            return _softmax(self.scores(inputs, batch_size, zero_shot=True))
        finally:
            lora.set_adapters_enabled(self.model, True)

    def __call__(self, inputs, top_k: int | None = 1, batch_size: int = 16):
        single = isinstance(inputs, (str, dict))
        probs = self.probabilities([inputs] if single else list(inputs), batch_size)
        k = len(self.labels) if top_k is None else min(max(1, int(top_k)), len(self.labels))
        answers = []
        for p in probs:
            best = np.argsort(-p, kind="stable")[:k]
            answers.append([{"label": self.labels[i], "score": float(p[i])} for i in best])
        if single:
            return answers[0]
        return [a[0] for a in answers] if top_k == 1 else answers


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def load_text_classifier(path: str | Path, dtype: str = "auto") -> TextClassifier:
    """Rebuild a trained text classifier: its base model, the body's adapter (checked), and the score head (checked)."""
    from mlxft.llm.loading import load_model
    from mlxft.llm.model_files import read_json_file

    folder = classifier_folder(path)
    config = read_json_file(folder / CLASSIFIER_CONFIG, "the classifier's config")
    missing = [k for k in CONFIG_FIELDS if k not in config]
    if missing:
        raise BrokenFileError(folder / CLASSIFIER_CONFIG, f"missing {', '.join(missing)}", hint="restore the classifier.json saved with this run (mlxft train writes it)")
    A.check_adapter(folder)  # a broken adapter is named before the model's weights are read
    base = config.get("base_model_path")
    spec = base if base and Path(base).is_dir() else config["base_model"]
    loaded = load_model(spec, dtype=dtype, quantize=tuple(config["quantize"]) if config.get("quantize") else None)
    model = loaded.model
    A.load_adapter(model, folder)
    if config["head"] == "score":
        attach_score_head(model, folder, config)
    model.eval()
    use_cpu_kernels(model)  # on the CPU, SwiGLU's sigmoid as a power of two: 1.12x on a batch of 32 short texts (measured)
    mx.eval(model.parameters())
    return TextClassifier(model, loaded.tokenizer, config, folder, loaded.model_type)
