"""Preference pairs -> token ids: the prompt rendered once per answer exactly as SFT renders it, loss on the answer only.

A pair becomes two `Encoded` samples, prompt + chosen and prompt + rejected, whose masks cover the answer's
tokens alone (the assistant turn as the chat template renders it, end-of-turn tokens included; without a
template, the answer's tokens and EOS). Special tokens come from the template or from the tokenizer, once.

Over-long pairs lose tokens from the prompt's start (after its head: BOS and the chat template's opening stay),
never from the answers, which is what the preference is about; only when an answer alone does not fit is it
cut at its end. Every cut and every drop is counted in `PairStats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlxft.data import formats
from mlxft.data.encode import Encoded, SampleEncoder
from mlxft.data.sources import Record
from mlxft.errors import DataError

MIN_PROMPT_TOKENS = 8  # an answer is cut before the prompt goes below this many tokens


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    def __len__(self) -> int:  # what length buckets sort by: the longer of the two
        return max(len(self.chosen), len(self.rejected))


@dataclass
class PairStats:
    pairs: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    prompt_truncated: int = 0
    answer_truncated: int = 0
    dropped_overlong: int = 0
    dropped_where: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.pairs} pairs, {self.tokens} tokens ({self.trained_tokens} in answers)"]
        if self.prompt_truncated:
            parts.append(f"{self.prompt_truncated} with the prompt's start cut to fit max_seq_length")
        if self.answer_truncated:
            parts.append(f"{self.answer_truncated} with an answer cut at its end (it alone is longer than max_seq_length)")
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as over-long")
        return "; ".join(parts)


def pair_mapping(keys) -> dict[str, str]:
    """The recipe's data.*_key settings as a `formats` column mapping for preference rows."""
    return {"prompt": keys.prompt_key, "chosen": getattr(keys, "chosen_key", "chosen"), "rejected": getattr(keys, "rejected_key", "rejected"),
            "messages": keys.messages_key}


class PairEncoder:
    """Renders and tokenizes preference rows with one tokenizer, the way `SampleEncoder` renders SFT rows."""

    def __init__(self, tokenizer, data_cfg):
        self.samples = SampleEncoder(tokenizer, data_cfg)
        self.cfg = data_cfg
        hf = self.samples.hf
        self.special = set(getattr(hf, "all_special_ids", []) or [])

    def normalize(self, record: Record) -> dict:
        fmt = self.cfg.format
        if fmt not in ("auto", "preference"):
            raise DataError(f"{record.where}: preference training reads preference rows, and data.format is {fmt!r}", hint="set data.format: preference (or auto)")
        if fmt == "auto":
            found = formats.row_formats(record.data, formats.column_names(pair_mapping(self.cfg)))
            if found != ["preference"]:
                seen = " and ".join(found) if found else "no known format"
                raise DataError(f"{record.where}: not a preference row (it looks like {seen})",
                                hint="preference rows have chosen and rejected answers (with a prompt, a conversation, or a shared opening); "
                                     "OpenAI's layout has input, preferred_output and non_preferred_output")
        try:
            return formats.normalize(record, "preference", pair_mapping(self.cfg))
        except formats.RowProblem as p:
            raise DataError(f"{record.where}: {p.field}: {p.reason}", hint=p.hint) from None

    def _render(self, record: Record, prompt, answer, tools: list | None = None) -> tuple[list[int], list[bool], int]:
        """(ids, mask, head): head counts the tokens before the prompt's first text (BOS, the template's opening)."""
        enc = self.samples
        if isinstance(prompt, str) and enc.has_template:
            prompt, answer = [{"role": "user", "content": prompt}], [{"role": "assistant", "content": answer}]
        if isinstance(prompt, list):
            ids, mask = enc.answer_turns(record, prompt + answer, first=len(prompt), tools=tools)
            full = enc._template(prompt, True, tools)
            first = next((t["content"] for t in prompt if t["role"] != "system" and t["content"]), "")
            at = full.find(first) if first else -1
            head = len(enc.hf(full[:at], add_special_tokens=False)["input_ids"]) if at > 0 else 0
            return ids, mask, head
        p = enc.hf(prompt, add_special_tokens=True)["input_ids"]
        a = enc.hf(answer, add_special_tokens=False)["input_ids"] + [enc.eos]
        head = 0
        while head < len(p) and p[head] in self.special:
            head += 1
        return p + a, [False] * len(p) + [True] * len(a), head

    def encode(self, record: Record) -> tuple[Encoded, Encoded, int]:
        """(prompt + chosen, prompt + rejected, head tokens that truncation keeps)."""
        row = self.normalize(record)
        out, head = [], 0
        for answer in (row["chosen"], row["rejected"]):
            ids, mask, head = self._render(record, row["prompt"], answer, row.get("tools"))
            out.append(Encoded(np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool)))
        return out[0], out[1], head

    # -- length policy ---------------------------------------------------------------------
    def _fit(self, enc: Encoded, head: int, max_len: int) -> tuple[Encoded, bool, bool]:
        """(sample, prompt cut, answer cut): cut the prompt's start, after its `head` tokens, to fit."""
        if len(enc) <= max_len:
            return enc, False, False
        trained = np.flatnonzero(enc.mask)
        start = int(trained[0]) if len(trained) else len(enc)
        lead = min(head, start)
        answer = len(enc) - start
        keep_prompt = max(min(start, MIN_PROMPT_TOKENS), max_len - answer)  # prompt tokens to keep, leading specials included
        keep_prompt = min(keep_prompt, start)
        drop = start - keep_prompt
        if drop:
            cut = min(lead, keep_prompt)
            idx = np.r_[np.arange(cut), np.arange(cut + drop, len(enc))]
            enc = Encoded(enc.ids[idx], enc.mask[idx])
        answer_cut = len(enc) > max_len
        if answer_cut:
            enc = Encoded(enc.ids[:max_len], enc.mask[:max_len])
        return enc, bool(drop), answer_cut

    def fit(self, pair: tuple[Encoded, Encoded, int], where: str, max_len: int, overlong: str, stats: PairStats) -> EncodedPair | None:
        chosen, rejected, head = pair
        if max(len(chosen), len(rejected)) > max_len and overlong == "drop":
            stats.dropped_overlong += 1
            stats.dropped_where.append(f"{where}: {max(len(chosen), len(rejected))} tokens > max_seq_length {max_len}")
            return None
        (c, pc, ac), (r, pr, ar) = self._fit(chosen, head, max_len), self._fit(rejected, head, max_len)
        stats.prompt_truncated += pc or pr
        stats.answer_truncated += ac or ar
        return EncodedPair(c, r)


def encode_pairs(records: list[Record], encoder: PairEncoder, max_len: int, overlong: str) -> tuple[list[EncodedPair], PairStats]:
    """Encode every preference row and apply the length policy; every format problem is raised at once."""
    out, stats, problems = [], PairStats(), []
    for rec in records:
        try:
            pair = encoder.encode(rec)
        except DataError as exc:
            problems.append(exc)
            continue
        empty = [DataError(f"{rec.where}: {name}: the answer renders to no tokens") for enc, name in zip(pair[:2], ("chosen", "rejected")) if enc.trained_tokens == 0]
        if empty:
            problems += empty
            continue
        fitted = encoder.fit(pair, rec.where, max_len, overlong, stats)
        if fitted is None:
            continue
        stats.pairs += 1
        stats.tokens += len(fitted.chosen) + len(fitted.rejected)
        stats.trained_tokens += fitted.chosen.trained_tokens + fitted.rejected.trained_tokens
        out.append(fitted)
    if problems:
        shown = "\n".join(f"  {p.message}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} bad preference pair(s):\n{shown}{more}", hint=problems[0].hint)
    return out, stats
