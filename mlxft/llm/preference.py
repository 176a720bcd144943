"""Preference tuning of a causal LM (lm-dpo, lm-orpo): pairs of answers, one forward pass for both, DPO and ORPO losses.

A batch of B pairs is one forward pass over 2B sequences (the B chosen, then the B rejected), with the LM head
applied to answer tokens only; `owner` [2B, T] sums each sequence's token log-probs. The losses are pure
functions of those sums (`dpo_loss`, `orpo_loss`), so they are tested against hand computations.

The DPO reference is the starting model itself, never a second copy of its weights: either its log-probs are
computed once before training and cached in the run directory (`preference.reference: precompute`, the
default: with `init_adapter` the starting adapter is the reference), or every step runs the model once more with
the adapters switched off (`live`: the base is the reference). Metric names are TRL's, so runs compare.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxft.data.batches import collate, epoch_order, eval_order
from mlxft.data.pairs import EncodedPair, PairEncoder, encode_pairs
from mlxft.errors import DataError
from mlxft.events import LogMessage
from mlxft.job import Batch
from mlxft import lora
from mlxft.llm.objective import split_forward
from mlxft.llm.sft import SFTJob, read_train_valid
from mlxft.recipe import Recipe
from mlxft.runs import RunDir

REFERENCE_FILE = "reference_logps.safetensors"  # in the run's cache/: the precomputed reference, read on resume


# -- the losses, on summed log-probs ----------------------------------------------------------------


def log_sigmoid(x: mx.array) -> mx.array:
    """log(sigmoid(x)) = -log(1 + e^-x) without overflow for large |x| (float32), with its true gradient at 0.

    (The usual min(x, 0) - log1p(e^-|x|) has gradient 0 at x = 0 in MLX, where min and |x| pick a side, and DPO
    starts exactly there: policy = reference.)"""
    x = x.astype(mx.float32)
    return -mx.logaddexp(mx.zeros_like(x), -x)


def dpo_loss(policy_c, policy_r, ref_c, ref_r, *, beta: float, label_smoothing: float = 0.0, kind: str = "sigmoid", lengths=None):
    """(per-pair losses, chosen rewards, rejected rewards) of DPO from summed answer log-probs.

    sigmoid: -(1-eps) log s(beta*h) - eps log s(-beta*h), h = (pc - rc) - (pr - rr) (Rafailov et al.; eps: cDPO).
    ipo: (h - 1/(2 beta))^2 on log-probs averaged over each answer's tokens (Azar et al.); `lengths` = (nc, nr).
    Rewards are beta * (policy - reference), as TRL reports them.
    """
    if kind == "ipo":
        nc, nr = lengths
        policy_c, policy_r, ref_c, ref_r = policy_c / nc, policy_r / nr, ref_c / nc, ref_r / nr
    h = (policy_c - ref_c) - (policy_r - ref_r)
    if kind == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = -(1.0 - label_smoothing) * log_sigmoid(beta * h) - label_smoothing * log_sigmoid(-beta * h)
    return losses, beta * (policy_c - ref_c), beta * (policy_r - ref_r)


def orpo_loss(policy_c, policy_r, nc, nr, *, beta: float):
    """(per-pair losses, NLL of chosen, log odds ratio, mean log-probs chosen / rejected) of ORPO (Hong et al.).

    loss = NLL(chosen) - beta * log s(log odds(chosen) - log odds(rejected)), with log-probs averaged per token and
    log odds(p) = log p - log(1 - p); the NLL is each pair's chosen answer's mean token NLL.
    """
    ac, ar = policy_c / nc, policy_r / nr
    # log(1 - exp(a)) for a < 0, kept finite when a is ~0 (a certain answer): log(-expm1(a)).
    ac_, ar_ = mx.minimum(ac, -1e-6), mx.minimum(ar, -1e-6)
    log_odds = (ac - ar) - (mx.log(-mx.expm1(ac_)) - mx.log(-mx.expm1(ar_)))
    nll = -ac
    return nll - beta * log_sigmoid(log_odds), nll, log_odds, ac, ar


# -- batches ----------------------------------------------------------------------------------------


def pair_arrays(pairs: list[EncodedPair], pad_id: int) -> tuple[tuple, int]:
    """(inputs, targets, positions, owner) for the 2B sequences of B pairs, and the answer tokens they hold."""
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    b = collate(seqs, pad_id)
    L = b.inputs.shape[1]
    owner = np.zeros((len(seqs), len(b.positions)), dtype=np.float32)
    real = np.arange(b.trained_tokens)
    owner[b.positions[real] // L, real] = 1.0
    return (mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(owner)), b.trained_tokens


def make_logps(model: nn.Module, model_type: str):
    """logps(model, inputs, targets, positions, owner) -> summed answer log-probs [2B] (the head on answer rows only)."""
    parts = split_forward(model, model_type)

    def logps(model, inputs, targets, positions, owner):
        if parts is not None:
            body, head = parts
            h = body(inputs)
            logits = head(mx.take(h.reshape(-1, h.shape[-1]), positions, axis=0))
        else:
            logits = model(inputs)
            logits = mx.take(logits.reshape(-1, logits.shape[-1]), positions, axis=0)
        token = -nn.losses.cross_entropy(logits.astype(mx.float32), mx.take(targets.reshape(-1), positions))
        return owner @ token

    return logps


# -- the job ----------------------------------------------------------------------------------------


class PreferenceJob(SFTJob):
    """DPO or ORPO on preference pairs; the model, adapters, saving and reports are SFT's."""

    unit = "pair"
    charted = ("rewards/margins", "rewards/accuracies")
    higher_is_better = {"rewards/accuracies", "rewards/margins", "rewards/chosen", "logps/chosen"}

    def _load_data(self, recipe: Recipe, tokenizer, emit) -> None:
        d = recipe.data
        train_records, valid_records = read_train_valid(d, " of preference pairs")
        encoder = PairEncoder(tokenizer, d)
        self.train, tstats = encode_pairs(train_records, encoder, d.max_seq_length, d.overlong)
        self.valid, vstats = encode_pairs(valid_records, encoder, d.max_seq_length, d.overlong)
        for name, st in (("train", tstats), ("valid", vstats)):
            emit(LogMessage("info", f"{name}: {st.summary()}"))
            for where in st.dropped_where[:10]:
                emit(LogMessage("warning", f"dropped {where}"))
        if not self.train:
            raise DataError(f"{d.path}: no usable preference pairs ({tstats.summary()})")
        if not valid_records:
            emit(LogMessage("warning", f"no '{d.valid_split}' split in {d.path}: validation, early stopping and keep_best are off"))

    def __init__(self, recipe: Recipe, emit=lambda e: None):
        super().__init__(recipe, emit)
        p = recipe.preference
        self.objective, self.beta = ("orpo" if recipe.kind == "lm-orpo" else "dpo"), p.beta
        self.live = self.objective == "dpo" and p.reference == "live"
        self._logps = make_logps(self.model, self.loaded.model_type)
        self.reference: dict[str, np.ndarray] = {}
        vocab = self.loaded.config.get("vocab_size")
        # ORPO's NLL term guesses uniformly at ln V; DPO has no such level (it starts at ln 2 by construction).
        self.uniform_loss = math.log(vocab) + self.beta * math.log(2) if self.objective == "orpo" and isinstance(vocab, int) and vocab > 1 else None

    # -- the reference ------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps({"model": self.recipe.model, "init_adapter": self.recipe.init_adapter, "dtype": self.recipe.dtype,
                             "quantize": self.recipe.quantize.model_dump() if self.recipe.quantize else None}).encode())
        for split in (self.train, self.valid):
            for p in split:
                for e in (p.chosen, p.rejected):
                    h.update(e.ids.tobytes())
                    h.update(np.packbits(e.mask).tobytes())
                    h.update(b"|")
            h.update(b"#")
        return h.hexdigest()

    def prepare(self, run_dir: Path, emit=lambda e: None) -> None:
        """Before training (and before a resume loads its checkpoint): the reference log-probs, from the cache or computed now."""
        if self.objective != "dpo" or self.live:
            return
        run, fingerprint = RunDir(run_dir), self._fingerprint()
        cached, why = run.read_cache(REFERENCE_FILE, fingerprint, "the cached reference log-probs")
        if cached is not None:
            self.reference = cached
            emit(LogMessage("info", f"reference log-probs of {len(self.train)} + {len(self.valid)} pairs read from {REFERENCE_FILE}"))
            return
        if why:
            emit(LogMessage("warning", why))
        emit(LogMessage("info", f"computing the reference log-probs of {len(self.train)} + {len(self.valid)} pairs with the starting model (once; cached in the run directory)"))
        arrays = {}
        model = self.model
        # One compiled forward (recompiled per batch shape only): the pass costs a fraction of a training step per batch.
        logps = mx.compile(lambda *a: self._logps(model, *a), inputs=[model.state]) if self.recipe.train.compile else (lambda *a: self._logps(model, *a))
        for name, split in (("train", self.train), ("valid", self.valid)):
            c, r = np.zeros(len(split), np.float32), np.zeros(len(split), np.float32)
            batch = self.recipe.train.batch_size
            for start in range(0, len(split), batch):
                chunk = split[start: start + batch]
                (inputs, targets, positions, owner), _ = pair_arrays(chunk, self.pad_id)
                sums = np.array(logps(inputs, targets, positions, owner))
                c[start: start + len(chunk)], r[start: start + len(chunk)] = sums[: len(chunk)], sums[len(chunk):]
            arrays[f"{name}_chosen"], arrays[f"{name}_rejected"] = c, r
        if not all(np.isfinite(v).all() for v in arrays.values()):
            raise DataError("the starting model gives non-finite log-probs for some pairs", hint="check the base model (mlxft generate) and the data")
        run.write_cache(REFERENCE_FILE, arrays, fingerprint, "the reference log-probs")
        self.reference = arrays

    # -- what the Trainer asks ------------------------------------------------------------------
    def train_order(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        return epoch_order([len(p) for p in self.train], batch_size, seed, epoch, self.recipe.data.batching)

    def train_batch(self, indices: list[int], epoch: int = 0) -> Batch:
        return self._pairs(self.train, "train", indices)

    def eval_batches(self, batch_size: int, max_batches: int | None):
        batches = eval_order([len(p) for p in self.valid], batch_size)
        for idx in batches[:max_batches] if max_batches is not None else batches:
            yield self._pairs(self.valid, "valid", idx)

    def _pairs(self, split: list[EncodedPair], name: str, indices: list[int]) -> Batch:
        arrays, tokens = pair_arrays([split[i] for i in indices], self.pad_id)
        if self.reference:
            ref = (mx.array(self.reference[f"{name}_chosen"][indices]), mx.array(self.reference[f"{name}_rejected"][indices]))
        else:
            ref = (mx.zeros((len(indices),)), mx.zeros((len(indices),)))
        return Batch(arrays=(*arrays, *ref), weight=float(len(indices)), size=len(indices))

    def _terms(self, model, inputs, targets, positions, owner, ref_c, ref_r):
        B = ref_c.shape[0]
        sums = self._logps(model, inputs, targets, positions, owner)
        lengths = mx.maximum(owner.sum(axis=1), 1.0)
        pc, pr, nc, nr = sums[:B], sums[B:], lengths[:B], lengths[B:]
        if self.objective == "orpo":
            losses, nll, log_odds, ac, ar = orpo_loss(pc, pr, nc, nr, beta=self.beta)
            rc, rr = self.beta * ac, self.beta * ar
            extra = {"nll_loss": nll.mean(), "log_odds_ratio": log_sigmoid(log_odds).mean(), "log_odds_chosen": log_odds.mean(),
                     "logps/chosen": ac.mean(), "logps/rejected": ar.mean()}
        else:
            if self.live:
                lora.set_adapters_enabled(model, False)
                ref = mx.stop_gradient(self._logps(model, inputs, targets, positions, owner))
                lora.set_adapters_enabled(model, True)
                ref_c, ref_r = ref[:B], ref[B:]
            p = self.recipe.preference
            losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta=self.beta, label_smoothing=p.label_smoothing, kind=p.loss, lengths=(nc, nr))
            extra = {"logps/chosen": pc.mean(), "logps/rejected": pr.mean()}
        metrics = {"rewards/chosen": rc.mean(), "rewards/rejected": rr.mean(), "rewards/margins": (rc - rr).mean(),
                   "rewards/accuracies": (rc > rr).astype(mx.float32).mean(), **extra}
        return losses.mean(), mx.array(B, dtype=mx.float32), metrics

    def loss(self, model, *arrays):
        return self._terms(model, *arrays)

    def eval_metrics(self, model, *arrays):
        loss, weight, metrics = self._terms(model, *arrays)
        return {"loss": loss, **metrics}, weight

    def finish_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

