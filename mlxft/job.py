"""What varies between kinds of training: the Job the one Trainer runs, its batches, its phases and how many steps.

A job builds the model and its trainable parts, cuts its data into batches, says what the loss is
and what validation reports, and saves its result. The Trainer (`mlxft/train/loop.py`) owns everything that
does not vary: the compiled step, accumulation, clipping, schedules, phases, evaluation cadence,
keep-best and early stopping, checkpoints, exact resume, stop requests and events.

A job is any object with these members (duck-typed; see `mlxft/llm/sft.py` for the causal-LM one):

    model: nn.Module                 # trainable parameters are whatever is unfrozen after setup
    artifact: str                    # the folder name of what it saves ("adapter", "model", ...)
    unit: str                        # what `Batch.size` counts, for throughput ("tok", "img", "pair")
    uniform_loss: float | None       # the loss of uniform guessing (ln classes), for the divergence guard
    higher_is_better: set[str]       # validation metrics to maximise (the rest are minimised)
    train_size: int                  # samples in the training split
    has_validation: bool
    phases: list[Phase] | None       # None: one phase over the whole run, at train.learning_rate
    charted: tuple[str, ...]         # optional: training metrics the UI draws beside the loss (e.g. rewards/margins)

    def train_order(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]: ...
        # the batches of one epoch as sample indices; a pure function of its arguments (exact resume)
    def train_batch(self, indices: list[int], epoch: int) -> Batch: ...
        # `epoch` seeds what varies per pass (augmentation, the cached view): resume repeats it exactly
    def eval_batches(self, batch_size: int, max_batches: int | None) -> Iterable[Batch]: ...
    def loss(self, model, *arrays) -> tuple[mx.array, mx.array] | tuple[mx.array, mx.array, dict]: ...
        # (mean loss, weight) and optionally a dict of scalar training metrics (weighted by `weight`)
    def eval_metrics(self, model, *arrays) -> tuple[dict[str, mx.array], mx.array]: ...
        # validation metrics of one batch (must include "loss") and the batch's weight
    def finish_metrics(self, metrics: dict[str, float]) -> dict[str, float]: ...
        # derived metrics from the weighted means (perplexity from loss, ...)
    def training_mode(self) -> None: ...   # optional: after model.train(), put back in eval mode what must stay so
        # (a frozen backbone's BatchNorm statistics); the Trainer calls it whenever it returns to training
    def prepare(self, run_dir: Path, emit) -> None: ...   # optional: one-off work on the starting model
        # (e.g. DPO's reference log-probs), called before a resume loads its checkpoint; cache what it computes in run_dir
    def save(self, folder: Path) -> None: ...
    def load(self, folder: Path) -> None: ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass
class Batch:
    """One batch as the step takes it: the arrays the job's loss unpacks, and two plain numbers."""

    arrays: tuple  # mx.arrays, passed to loss(model, *arrays) as they are
    weight: float  # the batch's share in a weighted mean (trained tokens, samples, pairs): the loss's own weight
    size: int  # what throughput counts, in the job's unit


@dataclass
class Phase:
    """A stretch of training with its own trainable parts and learning rate (e.g. frozen backbone, then all)."""

    name: str
    steps: int
    learning_rate: float
    setup: Callable[[], None] = lambda: None  # freeze / unfreeze the model for this phase
    warmup_steps: int | None = None  # linear warmup at the phase's start; None: train.warmup_steps
    # Per-parameter learning-rate multiplier by parameter path (layer-wise decay); None: every parameter at 1.
    lr_scale: Callable[[str], float] | None = None


def steps_per_epoch(n_samples: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps in one pass over n_samples: batches of batch_size, accumulation micro-batches per step."""
    return max(1, math.ceil(math.ceil(n_samples / batch_size) / accumulation))


def total_steps_for(cfg, n_train: int) -> int:
    """train.steps, or train.epochs over the training split."""
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * steps_per_epoch(n_train, cfg.batch_size, cfg.grad_accumulation)))
