"""Formats -> token ids with a loss mask: chat templates, prompt masking on every assistant turn, length policy.

An assistant turn with `weight: 0` (OpenAI's per-turn weight) gets no loss, whatever data.mask_prompt says; a row's
`tools` and its turns' `tool_calls` are rendered by the chat template when it supports tools, else refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from mlxft.data import formats
from mlxft.data.sources import Record
from mlxft.errors import DataError


@dataclass
class Encoded:
    """One training sample: ids and a 0/1 mask of the positions that get loss."""

    ids: np.ndarray  # int32 [n]
    mask: np.ndarray  # bool [n]; mask[i] means token i is predicted and trained on

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def trained_tokens(self) -> int:
        return int(self.mask[1:].sum())  # the first token is never predicted


@dataclass
class EncodeStats:
    """What the length and mask policy did: nothing is dropped without being counted here."""

    samples: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped_where: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.samples} samples, {self.tokens} tokens ({self.trained_tokens} trained)"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to max_seq_length")
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as over-long")
        if self.dropped_no_target:
            parts.append(f"{self.dropped_no_target} dropped with no trainable tokens")
        return "; ".join(parts)


# The recipe's training formats and the source formats each one reads.
FORMAT_FAMILIES = {"chat": ("chat", "sharegpt"), "completion": ("completion", "instruction"), "text": ("text",)}


def column_mapping(keys) -> dict[str, str]:
    """The recipe's data.*_key settings as a `formats` column mapping."""
    return {"text": keys.text_key, "prompt": keys.prompt_key, "completion": keys.completion_key, "messages": keys.messages_key}


def detect_format(record: Record, keys) -> str:
    """The source format of one row (text, completion, instruction, chat, sharegpt, ...)."""
    try:
        return formats.detect_format([record], column_mapping(keys))
    except DataError as exc:
        raise DataError(f"{record.where}: {exc.message}", hint=exc.hint) from None


def _source_format(record: Record, fmt: str, keys) -> str:
    """Which source format to read a row as, given the recipe's format (auto, text, completion, chat)."""
    if fmt == "auto":
        return detect_format(record, keys)
    if fmt not in FORMAT_FAMILIES:
        return fmt
    cols = formats.column_names(column_mapping(keys))
    family = FORMAT_FAMILIES[fmt]
    # e.g. format: chat also reads ShareGPT rows; a row with neither is reported as missing `messages`.
    return next((f for f in family if all(cols[k] in record.data for k in formats.SIGNATURES.get(f, (f,)))), family[0])


def normalize_record(record: Record, fmt: str, keys) -> dict:
    """The canonical form of one row for the language-model encoder; a DataError naming file, line and field."""
    src = _source_format(record, fmt, keys)
    if src not in formats.LM_FORM:
        hint = "text,label rows train a classifier: kind: lm-classify" if src == "classification" else "use text, completion, instruction, chat or sharegpt data"
        raise DataError(f"{record.where}: {src} data is not trained by language-model recipes", hint=hint)
    try:
        return formats.normalize(record, src, column_mapping(keys))
    except formats.RowProblem as p:
        raise DataError(f"{record.where}: {p.field}: {p.reason}", hint=p.hint) from None


class SampleEncoder:
    """Turns records into (ids, mask) with one tokenizer and one policy."""

    def __init__(self, tokenizer, data_cfg):
        self.hf = getattr(tokenizer, "_tokenizer", tokenizer)  # the Hugging Face tokenizer inside mlx-lm's wrapper
        self.cfg = data_cfg
        template = getattr(self.hf, "chat_template", None)
        self.has_template = bool(template)
        # A template that renders tools names them (Qwen2.5, Llama 3.1, Mistral: `tools`, `tool_calls`); one that never does drops them.
        text = template if isinstance(template, str) else json.dumps(template or "")
        self.renders_tools = "tools" in text or "tool_calls" in text
        self.eos = tokenizer.eos_token_id

    # -- rendering -------------------------------------------------------------------------
    def _template(self, messages: list[dict], generation_prompt: bool, tools: list | None = None) -> str:
        from mlxft.data.openai_format import template_turns

        extra = {"tools": tools} if tools else {}
        return self.hf.apply_chat_template(template_turns(messages), tokenize=False, add_generation_prompt=generation_prompt, **extra)

    def _check_tools(self, record: Record, messages: list[dict], tools: list | None) -> None:
        uses = [what for what, used in (("tools", bool(tools)), ("tool_calls", any("tool_calls" in m for m in messages))) if used]
        if uses and not self.renders_tools:
            raise DataError(f"{record.where}: the row has {' and '.join(uses)}, and this model's chat template does not render tools "
                            "(it never mentions tools or tool_calls), so they would be silently dropped",
                            hint="use a model whose chat template supports tool calling (Qwen2.5, Llama 3.1, Mistral), or remove the tool turns")

    def _encode_spans(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
        """Tokenize `text` (special tokens already in it) and mark tokens that start inside a trained span."""
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        mask = [any(a <= start < b for a, b in spans) for start, _ in offsets]
        return ids, mask

    def answer_turns(self, record: Record, messages: list[dict], first: int, tools: list | None = None) -> tuple[list[int], list[bool]]:
        """The conversation rendered whole, with loss on the assistant turns from messages[first] on only (a preference answer)."""
        return self._chat(record, messages, first=first, mask=True, tools=tools)

    def _chat(self, record: Record, messages: list[dict], first: int = 0, mask: bool | None = None,
              tools: list | None = None) -> tuple[list[int], list[bool]]:
        if not self.has_template:
            raise DataError(f"{record.where}: chat data needs a tokenizer with a chat template, and this model has none", hint="use the text or prompt/completion format for base models")
        self._check_tools(record, messages, tools)
        full = self._template(messages, False, tools)
        prompt_masked = self.cfg.mask_prompt if mask is None else mask
        unweighted = {i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) == 0}
        if not prompt_masked and not unweighted:
            return self._encode_spans(full, [(0, len(full))])
        spans = {}
        last = len(messages) - 1
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or (i < first and i not in unweighted):
                continue
            prefix = self._template(messages[:i], True, tools) if i else ""
            upto = full if i == last else self._template(messages[: i + 1], False, tools)  # the usual final turn: one render fewer
            if not full.startswith(upto) or not upto.startswith(prefix):
                raise DataError(
                    f"{record.where}: this model's chat template renders earlier turns differently once later turns exist, so assistant turns cannot be located",
                    hint="set data.mask_prompt=false to train on the whole conversation" if not unweighted else
                         "per-turn weights need each assistant turn located; drop the weight-0 turns or use another model",
                )
            spans[i] = (len(prefix), len(upto))
        if prompt_masked:
            return self._encode_spans(full, [span for i, span in spans.items() if i >= first and i not in unweighted])
        return self._encode_spans(full, _outside(len(full), [spans[i] for i in sorted(unweighted)]))

    def _completion(self, record: Record, prompt: str, completion: str) -> tuple[list[int], list[bool]]:
        if self.has_template:
            # Like mlx-lm: a prompt/completion pair is one user turn and one assistant turn.
            return self._chat(record, [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
        p = self.hf(prompt, add_special_tokens=True)["input_ids"]
        c = self.hf(completion, add_special_tokens=False)["input_ids"] + [self.eos]
        return p + c, [not self.cfg.mask_prompt] * len(p) + [True] * len(c)

    def _text(self, text: str) -> tuple[list[int], list[bool]]:
        ids = self.hf(text, add_special_tokens=True)["input_ids"]
        if not ids or ids[-1] != self.eos:
            ids = ids + [self.eos]
        return ids, [True] * len(ids)

    # -- public ----------------------------------------------------------------------------
    def encode(self, record: Record, fmt: str) -> Encoded:
        """`fmt` is auto, a training format (text, completion, chat) or a source format such as instruction."""
        row = normalize_record(record, fmt, self.cfg)
        if "messages" in row:
            ids, mask = self._chat(record, row["messages"], tools=row.get("tools"))
        elif "completion" in row:
            ids, mask = self._completion(record, row["prompt"], row["completion"])
        else:
            ids, mask = self._text(row["text"])
        return Encoded(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool))


def _outside(length: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans of [0, length) outside the sorted, disjoint `holes`."""
    spans, start = [], 0
    for a, b in holes:
        if a > start:
            spans.append((start, a))
        start = max(start, b)
    return spans + ([(start, length)] if start < length else [])


def apply_length_policy(enc: Encoded, where: str, max_len: int, overlong: str, stats: EncodeStats) -> Encoded | None:
    """Truncate or drop an over-long sample and drop one with nothing to learn; every drop is counted in `stats`."""
    if len(enc) > max_len:
        if overlong == "drop":
            stats.dropped_overlong += 1
            stats.dropped_where.append(f"{where}: {len(enc)} tokens > max_seq_length {max_len}")
            return None
        stats.truncated += 1
        enc = Encoded(enc.ids[:max_len], enc.mask[:max_len])
    if enc.trained_tokens == 0:
        stats.dropped_no_target += 1
        stats.dropped_where.append(f"{where}: no trainable tokens" + (" left after truncation" if len(enc) == max_len else ""))
        return None
    return enc


def encode_records(records: list[Record], encoder: SampleEncoder, fmt: str, max_len: int, overlong: str) -> tuple[list[Encoded], EncodeStats]:
    """Encode every record, apply the length policy and drop (and count) samples with nothing to learn.

    All format problems are collected and raised together, so one run of `mlxft train` shows them all.
    """
    out, stats, problems = [], EncodeStats(), []
    for rec in records:
        try:
            enc = encoder.encode(rec, fmt)
        except DataError as exc:
            problems.append(exc)
            continue
        enc = apply_length_policy(enc, rec.where, max_len, overlong, stats)
        if enc is None:
            continue
        stats.samples += 1
        stats.tokens += len(enc)
        stats.trained_tokens += enc.trained_tokens
        out.append(enc)
    if problems:
        shown = "\n".join(f"  {p.message}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} bad sample(s):\n{shown}{more}", hint=problems[0].hint)
    return out, stats
