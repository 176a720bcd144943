"""The Trainer runs any job: a tiny classifier job (no tokens anywhere) with its own metrics, best metric and phases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxft.job import Batch, Phase
from mlxft.recipe import TrainSection
from mlxft.train.loop import LoopHooks, Trainer


class Blobs:
    """Three Gaussian blobs in 8-D, classified by an MLP whose first layer can be frozen (a 'backbone')."""

    artifact = "model"
    unit = "sample"
    higher_is_better = {"accuracy"}
    has_validation = True

    def __init__(self, phases: bool = False, n: int = 192):
        rng = np.random.default_rng(0)
        centers = rng.normal(0, 3, (3, 8))
        labels = rng.integers(0, 3, n)
        self.x = (centers[labels] + rng.normal(0, 1, (n, 8))).astype(np.float32)
        self.y = labels.astype(np.int32)
        self.valid = slice(0, 48)
        self.train_idx = np.arange(48, n)
        mx.random.seed(0)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        mx.eval(self.model.parameters())
        self.uniform_loss = math.log(3)
        self.phases = [Phase("head", 6, 5e-2, setup=self._head_only), Phase("all", 6, 1e-2, setup=self.model.unfreeze)] if phases else None

    def _head_only(self):
        self.model.freeze()
        self.model.layers[2].unfreeze()

    @property
    def train_size(self):
        return len(self.train_idx)

    def train_order(self, epoch, batch_size, seed):
        perm = np.random.default_rng([seed, epoch]).permutation(self.train_idx)
        return [perm[i : i + batch_size].tolist() for i in range(0, len(perm), batch_size)]

    def train_batch(self, idx, epoch):
        return Batch((mx.array(self.x[idx]), mx.array(self.y[idx])), weight=float(len(idx)), size=len(idx))

    def eval_batches(self, batch_size, max_batches):
        for i in range(0, 48, batch_size):
            yield Batch((mx.array(self.x[i : i + batch_size]), mx.array(self.y[i : i + batch_size])), weight=float(min(batch_size, 48 - i)), size=0)

    def loss(self, model, x, y):
        logits = model(x)
        accuracy = (logits.argmax(-1) == y).astype(mx.float32).mean()
        return nn.losses.cross_entropy(logits, y).mean(), mx.array(float(x.shape[0])), {"accuracy": accuracy}

    def eval_metrics(self, model, x, y):
        loss, weight, metrics = self.loss(model, x, y)
        return {"loss": loss, **metrics}, weight

    def finish_metrics(self, metrics):
        return metrics

    def save(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(self.model.parameters())))

    def load(self, folder: Path):
        self.model.load_weights(str(folder / "model.safetensors"))


def _cfg(**kw) -> TrainSection:
    base = {"steps": 12, "batch_size": 16, "learning_rate": 5e-2, "eval_every": 3, "save_every": 3, "log_every": 1, "keep_checkpoints": 10, "compile": False, "warmup_steps": 0}
    return TrainSection(**{**base, **kw})


def _run(tmp_path, job, cfg, hooks=None):
    events = []
    trainer = Trainer(job, cfg, seed=0, run_dir=tmp_path, hooks=hooks or LoopHooks(emit=events.append))
    return trainer, trainer.fit(), events


def test_a_job_without_tokens_trains_and_reports_its_own_metrics(tmp_path):
    trainer, status, events = _run(tmp_path, Blobs(), _cfg(best_metric="accuracy"))
    assert status == "completed"
    steps = [e for e in events if type(e).__name__ == "StepReport"]
    evals = [e for e in events if type(e).__name__ == "EvalReport"]
    assert all("accuracy" in e.metrics for e in steps) and steps[-1].tokens_per_second > 0
    assert evals[0].metrics["accuracy"] < 0.8 < evals[-1].metrics["accuracy"]
    assert evals[-1].val_perplexity is None and evals[-1].metrics["loss"] == evals[-1].val_loss
    best = max(evals, key=lambda e: e.metrics["accuracy"])
    assert trainer.state.best_step == best.step and trainer.state.best_value == best.metrics["accuracy"]  # maximised, not minimised


def test_phases_train_their_own_parts_at_their_own_rate(tmp_path):
    job = Blobs(phases=True)
    first_layer = np.array(job.model.layers[0].weight)
    lrs = {}
    trainer = Trainer(job, _cfg(eval_every=None), seed=0, run_dir=tmp_path, hooks=LoopHooks(emit=lambda e: lrs.setdefault(getattr(e, "step", -1), getattr(e, "learning_rate", None))))
    assert trainer.total_steps == 12
    for _ in range(6):
        trainer.train_step()
    assert np.array_equal(np.array(job.model.layers[0].weight), first_layer)  # frozen in phase 1
    trainer.fit()
    assert trainer.state.phase == 1 and not np.array_equal(np.array(job.model.layers[0].weight), first_layer)
    # Phase 2 restarts its own cosine from its own rate: 1e-2 at its first step, then decaying over its 6 steps.
    assert lrs[7] == pytest.approx(1e-2, rel=1e-5) and lrs[8] == pytest.approx(1e-2 * (1 + math.cos(math.pi * 1 / 6)) / 2, rel=1e-4)


def test_resume_lands_in_the_right_phase_and_continues_exactly(tmp_path):
    _, _, events = _run(tmp_path / "ref", Blobs(phases=True), _cfg())
    reference = {e.step: e.loss for e in events if type(e).__name__ == "StepReport"}

    cut = Blobs(phases=True)
    trainer = Trainer(cut, _cfg(), seed=0, run_dir=tmp_path / "cut", hooks=LoopHooks())
    for _ in range(9):
        trainer.train_step() if trainer.state.step != 6 else (trainer._enter_phase(1), trainer.train_step())
    trainer.checkpoint()
    fresh = Blobs(phases=True)
    events = []
    resumed = Trainer(fresh, _cfg(), seed=0, run_dir=tmp_path / "cut", hooks=LoopHooks(emit=events.append))
    resumed.resume_latest()
    assert resumed.state.step == 9 and resumed.state.phase == 1 and len(fresh.model.trainable_parameters()["layers"][0]) > 0
    resumed.fit()
    again = {e.step: e.loss for e in events if type(e).__name__ == "StepReport"}
    for step in (10, 11, 12):
        assert again[step] == pytest.approx(reference[step], rel=1e-5), step
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-000012" / "state.json").read_text())
    assert state["phase"] == 1


def test_an_unknown_best_metric_is_named(tmp_path):
    with pytest.raises(Exception) as err:
        _run(tmp_path, Blobs(), _cfg(best_metric="f1"))
    assert "best_metric" in str(err.value) and "accuracy" in str(err.value)
