"""Formats -> token ids with a loss mask: chat templates, prompt masking on every assistant turn, length policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlxft.data.sources import Record
from mlxft.errors import DataError

ROLES = ("system", "user", "assistant", "tool")


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


def detect_format(record: Record, keys) -> str:
    d = record.data
    if keys.messages_key in d:
        return "chat"
    if keys.prompt_key in d and keys.completion_key in d:
        return "completion"
    if keys.text_key in d:
        return "text"
    raise DataError(
        f"{record.where}: cannot tell the format from keys {sorted(d)[:8]}",
        hint=f"use '{keys.messages_key}' (chat), '{keys.prompt_key}'/'{keys.completion_key}', or '{keys.text_key}'; or set data.*_key to your column names",
    )


def _str_field(record: Record, key: str) -> str:
    value = record.data.get(key)
    if not isinstance(value, str):
        raise DataError(f"{record.where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def check_messages(record: Record, key: str) -> list[dict]:
    msgs = record.data.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{record.where}: field '{key}' must be a non-empty list of {{role, content}}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{record.where}: {key}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{record.where}: {key}[{i}].role is {m['role']!r}", hint=f"roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{record.where}: {key}[{i}].content must be a string")
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{record.where}: the conversation has no assistant turn, so nothing to learn", hint="add the assistant's reply, or use the text format")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


class SampleEncoder:
    """Turns records into (ids, mask) with one tokenizer and one policy."""

    def __init__(self, tokenizer, data_cfg):
        self.tok = tokenizer  # mlx_lm TokenizerWrapper
        self.hf = getattr(tokenizer, "_tokenizer", tokenizer)
        self.cfg = data_cfg
        self.has_template = bool(getattr(self.hf, "chat_template", None))
        self.eos = tokenizer.eos_token_id
        bos = getattr(self.hf, "bos_token_id", None)
        probe = self.hf("a", add_special_tokens=True)["input_ids"]
        self.bos = bos if (bos is not None and probe and probe[0] == bos) else None

    # -- rendering -------------------------------------------------------------------------
    def _template(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _encode_spans(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
        """Tokenize `text` (special tokens already in it) and mark tokens that start inside a trained span."""
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        mask = [any(a <= start < b for a, b in spans) for start, _ in offsets]
        return ids, mask

    def _chat(self, record: Record, messages: list[dict]) -> tuple[list[int], list[bool]]:
        if not self.has_template:
            raise DataError(f"{record.where}: chat data needs a tokenizer with a chat template, and this model has none", hint="use the text or prompt/completion format for base models")
        full = self._template(messages, False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prefix = self._template(messages[:i], True) if i else ""
            upto = self._template(messages[: i + 1], False)
            if not full.startswith(upto) or not upto.startswith(prefix):
                raise DataError(
                    f"{record.where}: this model's chat template renders earlier turns differently once later turns exist, so assistant turns cannot be located",
                    hint="set data.mask_prompt=false to train on the whole conversation",
                )
            spans.append((len(prefix), len(upto)))
        if not self.cfg.mask_prompt:
            spans = [(0, len(full))]
        return self._encode_spans(full, spans)

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
        keys = self.cfg
        if fmt == "auto":
            fmt = detect_format(record, keys)
        if fmt == "chat":
            ids, mask = self._chat(record, check_messages(record, keys.messages_key))
        elif fmt == "completion":
            ids, mask = self._completion(record, _str_field(record, keys.prompt_key), _str_field(record, keys.completion_key))
        elif fmt == "text":
            ids, mask = self._text(_str_field(record, keys.text_key))
        else:
            raise DataError(f"unknown data format {fmt!r}")
        return Encoded(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool))


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
        if len(enc) > max_len:
            if overlong == "drop":
                stats.dropped_overlong += 1
                stats.dropped_where.append(f"{rec.where}: {len(enc)} tokens > max_seq_length {max_len}")
                continue
            stats.truncated += 1
            enc = Encoded(enc.ids[:max_len], enc.mask[:max_len])
        if enc.trained_tokens == 0:
            stats.dropped_no_target += 1
            stats.dropped_where.append(f"{rec.where}: no trainable tokens" + (" left after truncation" if len(enc) == max_len else ""))
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
