"""Text classifiers from causal LMs (lm-classify): prompts from rows, a `score` head or label words, and the job.

Each row becomes one prompt (`classify.prompt_template` over its columns; a text too long is cut, never the
template around it) and one label id. Sequences are right-padded: under causal attention the last real token
attends to real tokens only, so its final hidden state is the one an unpadded forward pass gives.

- `score` head: a Linear(hidden, labels, bias=False) named `score` on the final hidden state (after the final norm)
  of the last real token, as transformers' *ForSequenceClassification has it. The body runs once per sequence and
  no vocabulary projection is computed at all.
- `verbalizer` head: no new weights; a label's score is the summed log-probability of its word's tokens after the
  prompt. When every word is one token, the body runs once per prompt and only the label tokens' columns of the LM
  head are computed, at the last position (a softmax over labels does not need the vocabulary's normaliser; the
  log-probabilities themselves add it). Otherwise each prompt runs once per label with that label's tokens after
  it, and the LM head is applied at those tokens' positions only.

The run saves RUN/adapter: the body's adapter in mlx-lm's format (adapters.safetensors + adapter_config.json, so
`mlx_lm.generate --adapter-path` reads it as it is), `score.safetensors` (the head) and `classifier.json` (labels,
head, prompt, base model: what `mlxft.classifier(RUN)` and a PEFT SEQ_CLS export need).
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxft.atomic import atomic_save_safetensors, atomic_write_text
from mlxft.data.batches import PAD_MULTIPLE, epoch_order, eval_order
from mlxft.data.split import split_rows
from mlxft.errors import DataError, ModelError
from mlxft.events import LogMessage
from mlxft.job import Batch
from mlxft.labels import class_count_metrics, class_weights, finish_class_metrics, label_order
from mlxft.llm import adapters as A
from mlxft.llm.model_files import load_safetensors_checked
from mlxft.llm.objective import SPLIT_HEAD_TYPES, split_forward
from mlxft.llm.sft import SFTJob, read_train_valid
from mlxft.recipe import Recipe
from mlxft.runs import RunDir

CLASSIFIER_CONFIG = "classifier.json"  # next to the adapter: labels, head, prompt, base model
SCORE_WEIGHTS = "score.safetensors"  # the score head: {"score.weight": [labels, hidden]}
PAIR_TEMPLATE = "{text_a}\n{text_b}"  # rows with text_a and text_b and no template
MAX_LISTED = 20


# -- rows -> prompts ------------------------------------------------------------------------------


def template_fields(template: str) -> list[str]:
    """The columns a prompt template names, in order, each once."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return list(dict.fromkeys(names))


def default_template(text_key: str, first_row: dict) -> str:
    """Without a template: the text column as it is, or for pair rows (text_a, text_b and no text) the two, one per line."""
    if text_key not in first_row and "text_a" in first_row and "text_b" in first_row:
        return PAIR_TEMPLATE
    return "{" + text_key + "}"


def read_label(row: dict, key: str):
    """The row's label (a non-empty class name or an integer); a ValueError says what is wrong."""
    if key not in row or row[key] is None:
        raise ValueError(f"{key}: is missing")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{key}: must be a class name or an integer, got {type(value).__name__} {value!r}"[:200])
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{key}: is empty")
    return value


def read_fields(row: dict, names: list[str]) -> dict[str, str]:
    """The template's columns of one row as text; a ValueError names the first bad one."""
    out = {}
    for name in names:
        value = row.get(name)
        if value is None:
            have = ", ".join(sorted(map(str, row))[:12])
            raise ValueError(f"{name}: is missing (the prompt template names it; this row has {have})")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{name}: must be text, got {type(value).__name__}")
        value = str(value)
        if not value.strip():
            raise ValueError(f"{name}: is empty")
        out[name] = value
    return out


class PromptEncoder:
    """Rows' fields -> token ids of the rendered prompt, at most `max_length` long; a long field is cut, the template kept."""

    def __init__(self, tokenizer, template: str, max_length: int):
        self.hf = getattr(tokenizer, "_tokenizer", tokenizer)  # the Hugging Face tokenizer inside mlx-lm's wrapper
        self.template, self.max_length = template, max_length
        self.fields = template_fields(template)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=True)["input_ids"] if texts else []

    def encode(self, rows: list[dict[str, str]]) -> tuple[list[np.ndarray], list[int]]:
        """(ids per row, the row numbers that were cut to fit max_length)."""
        ids = self._ids([self.template.format_map(r) for r in rows])
        cut = [i for i, x in enumerate(ids) if len(x) > self.max_length]
        for i in cut:
            ids[i] = self._fit(dict(rows[i]), len(ids[i]))
        return [np.asarray(x, dtype=np.int32) for x in ids], cut

    def _fit(self, fields: dict[str, str], length: int) -> list[int]:
        """Cut the longest field's end (by tokens) until the rendered prompt fits; token boundaries move, so it may take a few tries."""
        for attempt in range(4 * len(fields) + 4):
            name = max(fields, key=lambda k: len(fields[k]))
            tokens = self.hf(fields[name], add_special_tokens=False)["input_ids"]
            keep = max(0, len(tokens) - (length - self.max_length) - attempt)
            fields[name] = self.hf.decode(tokens[:keep])
            ids = self._ids([self.template.format_map(fields)])[0]
            if len(ids) <= self.max_length:
                return ids
            length = len(ids)
            if not any(v for v in fields.values()):
                break
        raise DataError(f"the prompt template alone is {length} tokens, more than the {self.max_length} a prompt may have here",
                        hint="raise data.max_seq_length or shorten classify.prompt_template")


@dataclass
class Sample:
    ids: np.ndarray  # int32 prompt tokens
    label: int

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EncodedSplit:
    samples: list[Sample] = field(default_factory=list)
    truncated: int = 0
    dropped: list[str] = field(default_factory=list)  # where, for over-long rows under data.overlong: drop

    def summary(self, max_length: int) -> str:
        n = len(self.samples)
        lengths = [len(s) for s in self.samples] or [0]
        parts = [f"{n} texts, {int(np.mean(lengths))} tokens on average (longest {max(lengths)})"]
        if self.truncated:
            parts.append(f"{self.truncated} ({self.truncated / max(n, 1):.0%}) cut to {max_length} tokens")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped as longer than {max_length} tokens")
        return "; ".join(parts)


# -- batches -----------------------------------------------------------------------------------------


def last_token_index(mask: np.ndarray) -> np.ndarray:
    """The index of the last real token of each row of a 0/1 mask [B, L], left- or right-padded (-1: no real token)."""
    mask = np.asarray(mask).astype(bool)
    return np.where(mask, np.arange(mask.shape[1])[None, :], -1).max(axis=1).astype(np.int32)


def pad_right(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, L] right-padded to a multiple of 8, mask [B, L] of real tokens)."""
    longest = max(len(s) for s in seqs)
    L = max(PAD_MULTIPLE, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
    ids = np.full((len(seqs), L), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), L), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = True
    return ids, mask


def batch_arrays(prompts: list[np.ndarray], labels: list[int], pad_id: int, words: list[np.ndarray] | None) -> tuple:
    """The arrays a classification step takes; the label ids come last.

    (inputs [B, L], last [B], labels [B]) for the score head and for single-token verbalizers; for multi-token
    verbalizers each prompt once per label with the label's tokens after it: (inputs [B*K, L], positions [B*K, T]
    (flat, into B*K*L, of the positions that predict the label's tokens), targets [B*K, T], mask [B*K, T], labels [B]).
    """
    y = mx.array(np.asarray(labels, dtype=np.int32))
    if words is None or all(len(w) == 1 for w in words):
        ids, mask = pad_right(prompts, pad_id)
        return mx.array(ids), mx.array(last_token_index(mask)), y
    K, T = len(words), max(len(w) for w in words)
    seqs = [np.concatenate([p, w]) for p in prompts for w in words]
    ids, _ = pad_right(seqs, pad_id)
    L = ids.shape[1]
    positions = np.zeros((len(seqs), T), np.int32)
    targets = np.zeros((len(seqs), T), np.int32)
    tmask = np.zeros((len(seqs), T), np.float32)
    for b, p in enumerate(prompts):
        for c, w in enumerate(words):
            r = b * K + c
            n = len(w)
            positions[r, :n] = r * L + len(p) - 1 + np.arange(n)  # position i predicts token i + 1
            targets[r, :n], tmask[r, :n] = w, 1.0
    return mx.array(ids), mx.array(positions), mx.array(targets), mx.array(tmask), y


# -- heads ---------------------------------------------------------------------------------------------


def model_parts(model: nn.Module, model_type: str):
    """(body, LM head) of a causal LM: body(inputs) is the final hidden state after the final norm."""
    parts = split_forward(model, model_type)
    if parts is None:
        raise ModelError(f"lm-classify needs a model whose body and LM head mlxft can run apart, and {model_type} is not one yet",
                         hint=f"use a model of type {', '.join(sorted(SPLIT_HEAD_TYPES))} (e.g. SmolLM2, Qwen2.5, Llama, Mistral, Phi-3)")
    return parts


def pool_last(h: mx.array, last: mx.array) -> mx.array:
    """h [B, L, H] at each row's index `last` [B] -> [B, H]."""
    return mx.take_along_axis(h, last.astype(mx.int32)[:, None, None], axis=1)[:, 0]


def _head_module(model: nn.Module):
    args = getattr(model, "args", None)
    return model.model.embed_tokens if getattr(args, "tie_word_embeddings", False) or not hasattr(model, "lm_head") else model.lm_head


def head_columns(model: nn.Module, head, h: mx.array, columns: mx.array) -> mx.array:
    """The LM head's logits of `columns` (token ids) only, [N, K]; a quantized head computes every column, then picks."""
    module = _head_module(model)
    weight = getattr(module, "weight", None)
    if weight is not None and "scales" not in module:
        out = h @ mx.take(weight, columns, axis=0).T
        return out + mx.take(module["bias"], columns) if "bias" in module else out
    return mx.take(head(h), columns, axis=-1)


def score_logits(model: nn.Module, body, inputs: mx.array, last: mx.array) -> mx.array:
    """The score head on the last real token: [B, labels] (float32)."""
    return model.score(pool_last(body(inputs), last)).astype(mx.float32)


def verbalizer_scores(model: nn.Module, body, head, arrays: tuple, first_tokens: mx.array, normalized: bool = True) -> mx.array:
    """Each label's summed log-probability of its word after the prompt, [B, K] (float32).

    Single-token words with normalized=False give the logits of the label tokens: the same softmax over labels,
    without the vocabulary's normaliser (what training needs, at a fraction of the head's cost).
    """
    if len(arrays) == 3:
        inputs, last, _ = arrays
        hl = pool_last(body(inputs), last)
        cols = head_columns(model, head, hl, first_tokens).astype(mx.float32)
        return cols - mx.logsumexp(head(hl).astype(mx.float32), axis=-1, keepdims=True) if normalized else cols
    inputs, positions, targets, tmask, labels = arrays
    h = body(inputs)
    rows = mx.take(h.reshape(-1, h.shape[-1]), positions.reshape(-1), axis=0)
    logits = head(rows).astype(mx.float32)
    token = mx.take_along_axis(logits, targets.reshape(-1, 1), axis=-1)[:, 0] - mx.logsumexp(logits, axis=-1)
    return (token.reshape(tmask.shape) * tmask).sum(axis=-1).reshape(labels.shape[0], -1)


def weighted_cross_entropy(logits: mx.array, labels: mx.array, weights: mx.array | None = None, smoothing: float = 0.0) -> mx.array:
    """Mean cross-entropy over labels, each sample weighted by its class's weight: sum(w_y * ce) / sum(w_y)."""
    ce = nn.losses.cross_entropy(logits, labels, label_smoothing=smoothing)
    if weights is None:
        return ce.mean()
    w = weights[labels]
    return (ce * w).sum() / w.sum()


# -- the job ----------------------------------------------------------------------------------------


class LMClassifyJob(SFTJob):
    """A text classifier from a causal LM (see the module docstring); the model, adapters and reports are SFT's."""

    unit = "seq"
    higher_is_better = {"accuracy", "macro_f1"}
    charted = ("accuracy",)

    def __init__(self, recipe: Recipe, emit=lambda e: None):
        super().__init__(recipe, emit)  # loads the model with the adapters, then the data (_load_data)
        c = recipe.classify
        self.head_kind = c.head
        self.body, self.head = model_parts(self.model, self.loaded.model_type)
        k = len(self.classes)
        self.hidden = hidden = int(self.body(mx.array([[0]])).shape[-1])
        self.first_tokens = mx.array(np.array([w[0] for w in self.word_ids], dtype=np.int32)) if self.word_ids else None
        if c.head == "score":
            self.model.score = nn.Linear(hidden, k, bias=False)
            self.model.score.weight, how = self._initial_score(k, hidden)
            if self.recipe.method == "full" and _head_module(self.model) is getattr(self.model, "lm_head", None):
                self.model.lm_head.freeze()  # the score head replaces it: nothing would train it but weight decay
            mx.eval(self.model.score.parameters())
            emit(LogMessage("info", f"score head: {hidden} hidden -> {k} labels ({', '.join(map(str, self.classes))}), {how}; trained with the {self.recipe.method} body"))
        self.uniform_loss = math.log(k)
        self.weights = mx.array(class_weights(self._counts, c.class_weights, [str(x) for x in self.classes]))
        self._log_balance(emit)

    def _initial_score(self, k: int, hidden: int) -> tuple[mx.array, str]:
        """The score head's first weights: the LM head's rows of the label words' first tokens, or normal(0, 0.02)."""
        if self.recipe.classify.score_init == "words" and self.first_tokens is not None:
            rows = head_columns(self.model, self.head, mx.eye(hidden, dtype=mx.float32), self.first_tokens).T
            return rows.astype(mx.float32), "starting from the LM head's rows of the label words " + ", ".join(repr(w) for w in self.words)
        mx.random.seed(self.recipe.seed + 1)  # the same on a fresh start and on resume
        std = float(self.loaded.config.get("initializer_range", 0.02))
        return mx.random.normal((k, hidden), scale=std), f"initialised at random (normal, std {std:g})"

    # -- data ----------------------------------------------------------------------------------
    def _load_data(self, recipe: Recipe, tokenizer, emit) -> None:
        d, c = recipe.data, recipe.classify
        train_records, valid_records = read_train_valid(d, " of labelled texts (text,label)")
        if not valid_records and c.valid_fraction > 0:
            def label_of(r):
                value = r.data.get(d.label_key)
                return str(value) if isinstance(value, (str, int)) else ""

            parts = split_rows(train_records, fractions=(1 - c.valid_fraction, c.valid_fraction), seed=recipe.seed, label_key=label_of)
            train_records, valid_records = parts["train"], parts["valid"]
            emit(LogMessage("info", f"no '{d.valid_split}' split: {len(valid_records)} of the training rows are held out for validation "
                                    f"(stratified by label, seed {recipe.seed}, classify.valid_fraction {c.valid_fraction})"))
        elif not valid_records:
            emit(LogMessage("warning", f"no '{d.valid_split}' split in {d.path} and classify.valid_fraction is 0: validation, early stopping and keep_best are off"))
        self.template = c.prompt_template or default_template(d.text_key, train_records[0].data)
        names = template_fields(self.template)
        train_rows, train_labels = read_rows(train_records, names, d.label_key)
        valid_rows, valid_labels = read_rows(valid_records, names, d.label_key)
        self.classes = label_order(train_labels)
        if len(self.classes) < 2:
            raise DataError(f"{d.path}: every training row has the label {self.classes[0]!r}; a classifier needs at least two",
                            hint=f"check data.label_key ({d.label_key}) and the data")
        index = {str(x): i for i, x in enumerate(self.classes)}
        unseen = [f"{r.where}: {d.label_key} {v!r}" for r, v in zip(valid_records, valid_labels) if str(v) not in index]
        if unseen:
            raise DataError(f"{len(unseen)} validation row(s) have a label no training row has:\n  " + "\n  ".join(unseen[:MAX_LISTED]),
                            hint=f"the training labels are {', '.join(index)}; fix these rows, or add training rows with their label")
        self._check_label_settings(index)
        self.words = verbalizer_words(self.classes, c.verbalizer)
        try:
            self.word_ids = word_token_ids(tokenizer, self.words)
        except DataError:
            if c.head == "verbalizer" or c.verbalizer is not None:
                raise
            self.words, self.word_ids = [], []  # the label names make no words: a score head has no zero-shot base to report
        reserve = max(len(w) for w in self.word_ids) if c.head == "verbalizer" else 0
        self.encoder = PromptEncoder(tokenizer, self.template, d.max_seq_length - reserve)
        self.train = self._encode(train_records, train_rows, [index[str(v)] for v in train_labels])
        self.valid = self._encode(valid_records, valid_rows, [index[str(v)] for v in valid_labels])
        for name, split in (("train", self.train), ("valid", self.valid)):
            emit(LogMessage("info", f"{name}: {split.summary(self.encoder.max_length)}"))
            for where in split.dropped[:10]:
                emit(LogMessage("warning", f"dropped {where}"))
        if not self.train.samples:
            raise DataError(f"{d.path}: no usable training rows (every one is longer than {self.encoder.max_length} tokens)",
                            hint="raise data.max_seq_length, or set data.overlong: truncate")
        self._counts = np.bincount([s.label for s in self.train.samples], minlength=len(self.classes)).tolist()
        self._lengths = [len(s) for s in self.train.samples]
        self.train, self.valid = self.train.samples, self.valid.samples
        self.word_ids = [np.asarray(w, dtype=np.int32) for w in self.word_ids]

    def _check_label_settings(self, index: dict[str, int]) -> None:
        c = self.recipe.classify
        for name, mapping in (("classify.class_weights", c.class_weights if isinstance(c.class_weights, dict) else None), ("classify.verbalizer", c.verbalizer)):
            unknown = sorted(set(mapping or ()) - set(index))
            if unknown:
                raise DataError(f"{name} names label(s) the training data does not have: {', '.join(map(repr, unknown[:10]))}",
                                hint=f"the training labels are {', '.join(index)}")

    def _encode(self, records: list, rows: list[dict], labels: list[int]) -> EncodedSplit:
        ids, cut = self.encoder.encode(rows)
        out = EncodedSplit(truncated=len(cut))
        drop = set(cut) if self.recipe.data.overlong == "drop" else set()
        if drop:
            out.truncated = 0
            out.dropped = [f"{records[i].where}: longer than {self.encoder.max_length} tokens" for i in sorted(drop)]
        out.samples = [Sample(x, y) for i, (x, y) in enumerate(zip(ids, labels)) if i not in drop]
        return out

    def _log_balance(self, emit) -> None:
        c = self.recipe.classify
        shown = ", ".join(f"{x} {n}" for x, n in zip(self.classes, self._counts))
        weights = np.array(self.weights)
        how = "no class weights" if c.class_weights == "none" else ("class weights (inverse frequency): " if c.class_weights == "auto" else "class weights: ") + ", ".join(
            f"{x} {w:.2f}" for x, w in zip(self.classes, weights))
        words = "" if self.head_kind != "verbalizer" else "; label words: " + ", ".join(
            f"{x} {self.words[i]!r} ({len(self.word_ids[i])} token{'s' if len(self.word_ids[i]) > 1 else ''})" for i, x in enumerate(self.classes))
        emit(LogMessage("info", f"training texts per label: {shown}; {how}{words}; prompt template {self.template!r}"))

    # -- what the Trainer asks ------------------------------------------------------------------
    def train_order(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        return epoch_order(self._lengths, batch_size, seed, epoch, self.recipe.data.batching)

    def train_batch(self, indices: list[int], epoch: int = 0) -> Batch:
        return self._batch(self.train, indices)

    def eval_batches(self, batch_size: int, max_batches: int | None):
        batches = eval_order([len(s) for s in self.valid], batch_size)
        for idx in batches[:max_batches] if max_batches is not None else batches:
            yield self._batch(self.valid, idx)

    def _batch(self, split: list[Sample], indices: list[int]) -> Batch:
        words = self.word_ids if self.head_kind == "verbalizer" else None
        arrays = batch_arrays([split[i].ids for i in indices], [split[i].label for i in indices], self.pad_id, words)
        return Batch(arrays=arrays, weight=float(len(indices)), size=len(indices))

    def logits(self, model, *arrays, normalized: bool = False) -> mx.array:
        """[B, labels]: the score head's logits, or the label words' scores (log-probabilities when normalized)."""
        if self.head_kind == "score":
            inputs, last, _ = arrays
            return score_logits(model, self.body, inputs, last)
        return verbalizer_scores(model, self.body, self.head, arrays, self.first_tokens, normalized=normalized)

    def loss(self, model, *arrays):
        labels = arrays[-1]
        logits = self.logits(model, *arrays)
        loss = weighted_cross_entropy(logits, labels, self.weights, self.recipe.classify.label_smoothing)
        accuracy = (logits.argmax(-1) == labels).astype(mx.float32).mean()
        return loss, mx.array(float(labels.shape[0])), {"accuracy": accuracy}

    def eval_metrics(self, model, *arrays):
        labels = arrays[-1]
        logits = self.logits(model, *arrays)
        pred = logits.argmax(-1)
        metrics = {"loss": nn.losses.cross_entropy(logits, labels).mean(),  # unweighted: the held-out loss as it is
                   "accuracy": (pred == labels).astype(mx.float32).mean(), **class_count_metrics(pred, labels, len(self.classes))}
        return metrics, mx.array(float(labels.shape[0]))

    def finish_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return finish_class_metrics(metrics, [str(x) for x in self.classes])

    # -- what it saves ---------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """RUN/adapter: the body's adapter (mlx-lm's files), score.safetensors and classifier.json, as one folder or none."""
        weights = A.trainable_weights(self.model)
        score = {k: v for k, v in weights.items() if k.startswith("score.")}
        body = {k: v for k, v in weights.items() if not k.startswith("score.")}

        def also(tmp: Path) -> None:
            if score:
                atomic_save_safetensors(tmp / SCORE_WEIGHTS, score, metadata={"format": "mlx"})
            atomic_write_text(tmp / CLASSIFIER_CONFIG, json.dumps(self.config(), indent=2))

        A.save_adapter(self.model, folder, self.adapter_cfg, weights=body, also=also)

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        weights = load_safetensors_checked(folder / A.ADAPTER_WEIGHTS, "the checkpoint's adapter weights")
        if self.head_kind == "score":
            weights.update(load_safetensors_checked(folder / SCORE_WEIGHTS, "the checkpoint's score head"))
        self.model.load_weights(list(weights.items()), strict=False)

    def config(self) -> dict:
        """classifier.json: everything needed to rebuild the classifier, and to export it as a sequence classifier."""
        d, c = self.recipe.data, self.recipe.classify
        return {
            "task": "text-classification", "kind": "lm-classify", "head": self.head_kind,
            "base_model": self.recipe.model, "base_model_path": str(self.loaded.path), "model_type": self.loaded.model_type,
            "method": self.adapter_cfg.get("fine_tune_type", self.recipe.method),
            "num_labels": len(self.classes), "id2label": {str(i): str(x) for i, x in enumerate(self.classes)},
            "label2id": {str(x): i for i, x in enumerate(self.classes)}, "label_type": "int" if isinstance(self.classes[0], int) else "str",
            "quantize": [self.recipe.quantize.bits, self.recipe.quantize.group_size] if self.recipe.quantize else None,
            "prompt_template": self.template, "text_key": d.text_key, "label_key": d.label_key, "max_length": d.max_seq_length,
            "prompt_max_length": self.encoder.max_length, "pad_token_id": self.pad_id, "hidden_size": self.hidden,
            "verbalizer": {str(x): {"word": w, "token_ids": [int(t) for t in ids]} for x, w, ids in zip(self.classes, self.words, self.word_ids)} or None,
            "verbalizer_set": c.verbalizer is not None,
            "export": {"peft_task_type": "SEQ_CLS", "modules_to_save": ["score"] if self.head_kind == "score" else [],
                       "note": "for a PEFT SEQ_CLS export: adapters.safetensors holds the body's LoRA in mlx-lm names (model.layers.N...); "
                               "score.safetensors holds score.weight [num_labels, hidden] of *ForSequenceClassification (pooled at the last "
                               "non-pad token, pad_token_id above); id2label/label2id go into the model config. A verbalizer run has no score: "
                               "it stays a causal LM scored on the label words."},
        }

    # -- what the run reports and leaves ----------------------------------------------------------
    def describe(self) -> dict:
        out = super().describe()
        out["method"] = f"lm-classify, {self.head_kind} head, {out['method']} body"
        return out

    def write_readme(self, run: RunDir) -> None:
        adapter = run.result_dir(self.artifact)
        text = (
            f"# {run.path.name}\n\nlm-classify of `{self.recipe.model}`: a {self.head_kind} head over {len(self.classes)} labels "
            f"({', '.join(map(str, self.classes))}).\n\n"
            f"- Predict: `mlxft predict {run.path} \"some text\"` (or `--file texts.jsonl`), or in Python `mlxft.classifier(\"{run.path}\")([\"some text\"])`\n"
            f"- Evaluate: `mlxft eval {run.path} --split test`\n"
            f"- The classifier: `{adapter}` (the body's adapter in mlx-lm's format, {SCORE_WEIGHTS if self.head_kind == 'score' else 'no new head'}, {CLASSIFIER_CONFIG} with the labels and prompt)\n"
            f"- Resume: `mlxft train --resume {run.path}`\n"
        )
        atomic_write_text(run.readme_path, text)
        atomic_write_text(run.model_json_path, json.dumps({"model": self.recipe.model, "model_path": str(self.loaded.path)}, indent=2))


def read_rows(records: list, names: list[str], label_key: str) -> tuple[list[dict[str, str]], list]:
    """The template's fields and the label of every row; every bad row is named in one DataError."""
    rows, labels, problems = [], [], []
    for r in records:
        try:
            labels.append(read_label(r.data, label_key))
            rows.append(read_fields(r.data, names))
        except ValueError as exc:
            problems.append(f"{r.where}: {exc}")
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{len(problems)} bad row(s) for a text classifier:\n  " + "\n  ".join(problems[:MAX_LISTED]) + more,
                        hint="each row needs the columns classify.prompt_template names (by default data.text_key) and a label (data.label_key)")
    return rows, labels


def measure_prompt_lengths(recipe: Recipe, tokenizer, records: list) -> list[int]:
    """The token lengths of the prompts training builds from these rows, after the length policy (what the memory plan sizes)."""
    d, c = recipe.data, recipe.classify
    template = c.prompt_template or default_template(d.text_key, records[0].data)
    rows, _ = read_rows(records, template_fields(template), d.label_key)
    ids, cut = PromptEncoder(tokenizer, template, d.max_seq_length).encode(rows)
    dropped = set(cut) if d.overlong == "drop" else set()
    return [len(x) for i, x in enumerate(ids) if i not in dropped]


def verbalizer_words(classes: list, given: dict[str, str] | None) -> list[str]:
    """Each label's word: the recipe's, else the label's name after a space."""
    given = given or {}
    return [given.get(str(x), " " + str(x)) for x in classes]


def word_token_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """The tokens of each label word (no special tokens); words with no tokens or the same tokens are an error."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    ids = [list(hf(w, add_special_tokens=False)["input_ids"]) for w in words]
    empty = [repr(w) for w, x in zip(words, ids) if not x]
    if empty:
        raise DataError(f"label word(s) {', '.join(empty)} have no tokens", hint="set classify.verbalizer to words, e.g. {0: ' negative', 1: ' positive'}")
    seen: dict[tuple, str] = {}
    for w, x in zip(words, ids):
        if tuple(x) in seen:
            raise DataError(f"label words {seen[tuple(x)]!r} and {w!r} are the same tokens, so the verbalizer cannot tell them apart",
                            hint="give each label its own word in classify.verbalizer")
        seen[tuple(x)] = w
    return ids
