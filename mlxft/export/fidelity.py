"""What survives an export: held-out prompts, a model's outputs on them, and how far two sets of outputs are apart.

An export that changes the weights (fusing into a lower-precision dtype, re-quantizing) can erase a fine-tune
without a sound: the files load and the model talks, like the base. So the exporter runs the same few held-out
prompts through three states of one model (the base, the tuned model as trained, the exported model) and compares
their next-token distributions: KL(tuned || exported) says what the export lost, KL(tuned || base) how big the
fine-tune's own effect is, and their ratio whether the fine-tune survived.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxft.errors import MlxftError

MAX_PROMPTS = 8     # a few prompts: three forward passes each, on the export's machine
MAX_TOKENS = 64     # per prompt; with a 150k vocabulary 8 x 64 positions keep ~300 MB of logits per model state
LOST_SHARE = 0.5    # the export lost at least this share of the fine-tune's KL: the fine-tune is mostly gone
DENTED_SHARE = 0.05  # ... at least this share: worth a note on how to keep more of it
NEGLIGIBLE_KL = 1e-7  # a fine-tune this close to its base has nothing to lose (an adapter at its initial zero update)

# When the run's valid split cannot be read (no split, data moved, a Hub dataset), these stand in.
FIXED_PROMPTS = [
    "What is the capital of France?",
    "Write a short note thanking a colleague for their help.",
    "Explain in one sentence why the sky is blue.",
    "List three animals that live in the sea.",
    "Translate to French: good morning, my friend.",
    "What is 12 times 7?",
    "Summarize: the meeting moved from Monday to Wednesday at noon.",
    "Give me a name for a small coffee shop.",
]


@dataclass(frozen=True)
class HeldOut:
    prompts: list           # int32 token arrays
    source: str             # where they came from, for the note


def fixed_prompts(tokenizer, template: str | None = None, fields: list[str] | None = None) -> list[np.ndarray]:
    """FIXED_PROMPTS as token ids: through a classifier's prompt template, else the chat template, else as plain text."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    out = []
    for text in FIXED_PROMPTS:
        if template is not None:
            ids = hf(template.format_map({f: text for f in fields or []}), add_special_tokens=True)["input_ids"]
        elif getattr(hf, "chat_template", None):
            rendered = hf.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
            ids = hf(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = hf(text, add_special_tokens=True)["input_ids"]
        out.append(np.asarray(ids if template is not None else ids[:MAX_TOKENS], dtype=np.int32))
    return out


def held_out_prompts(recipe, tokenizer, classifier: dict | None = None) -> HeldOut:
    """Up to MAX_PROMPTS prompts of the run's valid split, encoded the way training encoded them; else FIXED_PROMPTS.

    Only a local data folder or file is read: a measurement never downloads a data set.
    """
    from mlxft.errors import DataError

    d = recipe.data
    template = classifier.get("prompt_template") if classifier else None
    fields = _template_fields(template) if template else None
    why = None
    if not Path(d.path).expanduser().exists():
        why = f"{d.path} is not a local path here"
    else:
        try:
            prompts = _valid_prompts(recipe, tokenizer, classifier)
            if prompts:
                return HeldOut(prompts, f"the run's '{d.valid_split}' split ({d.path})")
            why = f"no '{d.valid_split}' split in {d.path}"
        except (DataError, OSError, ValueError) as exc:
            why = f"its '{d.valid_split}' split cannot be read ({str(exc).splitlines()[0][:120]})"
    return HeldOut(fixed_prompts(tokenizer, template, fields), f"{len(FIXED_PROMPTS)} fixed prompts ({why})")


def _template_fields(template: str) -> list[str]:
    from mlxft.llm.classify import template_fields

    return template_fields(template)


def _valid_prompts(recipe, tokenizer, classifier: dict | None) -> list[np.ndarray]:
    """The first MAX_PROMPTS rows of the valid split that encode (cut to MAX_TOKENS, but a classifier's whole prompts)."""
    from mlxft.data.sources import read_split
    from mlxft.errors import DataError

    d = recipe.data
    records = read_split(d.path, d.valid_split) or []
    if classifier is not None:
        from mlxft.llm.classify import PromptEncoder, read_fields

        encoder = PromptEncoder(tokenizer, classifier["prompt_template"], int(classifier["prompt_max_length"]))
        rows = []
        for r in records:
            try:
                rows.append(read_fields(r.data, encoder.fields))
            except ValueError:
                continue
            if len(rows) == MAX_PROMPTS:
                break
        # Whole prompts: a classifier reads the last token, and prompt_max_length already bounds them.
        return [np.asarray(p, dtype=np.int32) for p in (encoder.encode(rows)[0] if rows else []) if len(p) > 0]
    encode = _sft_or_pair_encoder(recipe, tokenizer)
    out = []
    for r in records:
        try:
            out.append(encode(r))
        except DataError:
            continue
        if len(out) == MAX_PROMPTS:
            break
    return [np.asarray(p[:MAX_TOKENS], dtype=np.int32) for p in out if len(p) > 0]


def _sft_or_pair_encoder(recipe, tokenizer):
    """record -> token ids the way the run's job encoded it: the SFT sample, or a preference pair's chosen answer."""
    d = recipe.data
    if recipe.kind in ("lm-dpo", "lm-orpo"):
        from mlxft.data.pairs import PairEncoder

        pairs = PairEncoder(tokenizer, d)
        return lambda rec: pairs.encode(rec)[0].ids
    from mlxft.data.encode import SampleEncoder

    samples = SampleEncoder(tokenizer, d)
    return lambda rec: samples.encode(rec, d.format).ids


# -- outputs ----------------------------------------------------------------------------------------


def causal_outputs(model, prompts: list[np.ndarray]) -> mx.array:
    """Every position's next-token logits of every prompt, [positions, vocab] (float32); one prompt at a time, no padding."""
    rows = []
    for p in prompts:
        logits = model(mx.array(p)[None])[0].astype(mx.float32)
        mx.eval(logits)
        rows.append(logits)
    return mx.concatenate(rows, axis=0)


def score_outputs(model, body, prompts: list[np.ndarray]) -> mx.array:
    """A score head's logits on each prompt's last token, [prompts, labels] (float32)."""
    rows = []
    for p in prompts:
        h = body(mx.array(p)[None])[:, -1]
        logits = model.score(h).astype(mx.float32)
        mx.eval(logits)
        rows.append(logits)
    return mx.concatenate(rows, axis=0)


def mean_kl(p_logits: mx.array, q_logits: mx.array) -> float:
    """Mean over rows of KL(p || q) between the softmaxes of two [rows, classes] logit arrays (nats)."""
    lp = p_logits - mx.logsumexp(p_logits, axis=-1, keepdims=True)
    lq = q_logits - mx.logsumexp(q_logits, axis=-1, keepdims=True)
    kl = (mx.exp(lp) * (lp - lq)).sum(axis=-1)
    return max(0.0, float(kl.mean().item()))  # rounding can make an exact match a hair below zero


def max_abs(a: mx.array, b: mx.array) -> float:
    return float(mx.abs(a - b).max().item())


# -- the comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fidelity:
    """Three states of one model on the same prompts: base, tuned (as trained, unfused), exported."""

    source: str
    prompts: int
    positions: int
    what: str                  # what the export did to the weights, e.g. "re-quantized to 4 bits (group 32)"
    kl_tuned_exported: float   # what the export lost
    max_logit_change: float    # max |tuned - exported| over every position and class
    kl_tuned_base: float       # the fine-tune's own effect
    kl_base_exported: float    # how far the export is from the base (near 0: the export is the base again)
    unit: str = "next-token positions"  # what a row of outputs is (a classifier's: label distributions)

    @property
    def lost_share(self) -> float | None:
        """KL(tuned || exported) / KL(tuned || base): 0 the fine-tune survived whole, ~1 or more it is gone."""
        if self.kl_tuned_base < NEGLIGIBLE_KL:
            return None
        return self.kl_tuned_exported / self.kl_tuned_base

    @property
    def closer_to_base(self) -> bool:
        return self.kl_tuned_base >= NEGLIGIBLE_KL and self.kl_base_exported < self.kl_tuned_exported

    @property
    def fine_tune_lost(self) -> bool:
        share = self.lost_share
        return share is not None and (share >= LOST_SHARE or self.closer_to_base)

    def to_dict(self) -> dict:
        return {**asdict(self), "lost_share": self.lost_share, "closer_to_base": self.closer_to_base, "fine_tune_lost": self.fine_tune_lost}

    def notes(self, advice: str) -> list[str]:
        """One line of numbers, and a warning when the fine-tune is mostly lost (`advice`: what to do instead)."""
        share = self.lost_share
        kept = ("the fine-tune barely moves the outputs, so there is nothing to lose" if share is None
                else f"the export's KL is {_percent(share)} of the fine-tune's")
        lines = [f"fidelity ({self.what}) on {self.prompts} held-out prompts ({self.positions} {self.unit}) from {self.source}: "
                 f"exported vs tuned (unfused) mean KL {self.kl_tuned_exported:.3g} nats, max logit change {self.max_logit_change:.3g}; "
                 f"the fine-tune itself (base vs tuned) KL {self.kl_tuned_base:.3g}: {kept}"]
        if not self.fine_tune_lost and share is not None and share >= DENTED_SHARE:
            lines.append(f"note: this export loses {_percent(share)} of the fine-tune's effect. {advice}")
        if self.fine_tune_lost:
            closer = (f"; the export is closer to the base (KL {self.kl_base_exported:.3g}) than to the tuned model "
                      f"(KL {self.kl_tuned_exported:.3g})" if self.closer_to_base else "")
            lines.append(f"WARNING: the fine-tune is mostly lost in this export: exported vs tuned KL {self.kl_tuned_exported:.3g} is "
                         f"{_percent(share)} of the fine-tune's own effect (base vs tuned KL {self.kl_tuned_base:.3g}){closer}. {advice}")
        return lines


def _percent(share: float) -> str:
    return f"{share:.2%}" if share < 0.1 else f"{share:.0%}"


def compare(base: mx.array, tuned: mx.array, exported: mx.array, *, source: str, prompts: int, what: str,
            unit: str = "next-token positions") -> Fidelity:
    if not (base.shape == tuned.shape == exported.shape):
        raise MlxftError(f"the outputs to compare differ in shape: {base.shape}, {tuned.shape}, {exported.shape}")
    fid = Fidelity(source=source, prompts=prompts, positions=int(base.shape[0]), what=what,
                   kl_tuned_exported=mean_kl(tuned, exported), max_logit_change=max_abs(tuned, exported),
                   kl_tuned_base=mean_kl(tuned, base), kl_base_exported=mean_kl(base, exported), unit=unit)
    for name in ("kl_tuned_exported", "kl_tuned_base", "kl_base_exported", "max_logit_change"):
        if not math.isfinite(getattr(fid, name)):
            raise MlxftError(f"the fidelity measurement gave {name} = {getattr(fid, name)} (non-finite outputs)",
                             hint="the exported weights overflow their dtype: try --dtype float32 or bfloat16")
    return fid
