"""The one training loop for every job: compiled step, accumulation, clipping, schedules, phases, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlxft.atomic import atomic_write_text, publish_dir, temp_dir_for
from mlxft.distributed import World
from mlxft.errors import MlxftError, RunError, write_error
from mlxft.events import CheckpointSaved, EvalReport, LogMessage, StepReport
from mlxft.job import Batch, Phase, total_steps_for
from mlxft.runs import CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE, RunDir, checkpoint_problem


def build_schedule(lr: float, total_steps: int, warmup: int, kind: str, min_ratio: float):
    """Linear warmup from 0, then cosine / linear decay to lr*min_ratio, or constant."""
    warmup = min(warmup, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    end = lr * min_ratio
    if kind == "cosine":
        main = optim.cosine_decay(lr, decay_steps, end)
    elif kind == "linear":
        main = optim.linear_schedule(lr, end, decay_steps)
    else:
        main = lambda step: mx.array(lr, dtype=mx.float32)  # noqa: E731
    if warmup == 0:
        return main
    return optim.join_schedules([optim.linear_schedule(0.0, lr, warmup), main], [warmup])


def build_optimizer(cfg, total_steps: int, learning_rate: float | None = None, warmup_steps: int | None = None) -> optim.Optimizer:
    """The recipe's optimizer over `total_steps` (one phase), at `learning_rate` (default train.learning_rate)."""
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    warmup = cfg.warmup_steps if warmup_steps is None else warmup_steps
    schedule = build_schedule(lr, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)
    # Bias correction on: the Adam of the papers and of PyTorch (MLX defaults it off, which makes the
    # first updates ~3x larger than the learning rate suggests).
    if cfg.optimizer == "adamw":
        return optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, bias_correction=True)
    if cfg.optimizer == "adam":
        return optim.Adam(learning_rate=schedule, bias_correction=True)
    return optim.SGD(learning_rate=schedule, weight_decay=cfg.weight_decay)


@dataclass
class LoopState:
    """Everything besides weights and optimizer state that a resumed run needs to continue exactly."""

    step: int = 0
    phase: int = 0  # index into the job's phases; a resumed run rebuilds that phase's trainable parts and optimizer
    epoch: int = 0
    batch_in_epoch: int = 0  # index of the next batch in this epoch's order
    best_val_loss: float | None = None  # the lowest validation loss (what run lists show)
    best_value: float | None = None  # the best value of train.best_metric (keep-best and early stopping follow it)
    best_step: int | None = None
    evals_without_improvement: int = 0
    trained_tokens: int = 0
    elapsed_s: float = 0.0
    last_train_loss: float | None = None
    first_loss: float | None = None  # the first loss the divergence guard saw (the base model's, on a fresh run)
    lowest_loss: float | None = None  # the lowest loss the guard saw
    last_checked_loss: float | None = None  # the loss at the guard's previous check
    suspect_checks: int = 0  # guard checks in a row that looked diverged
    healthy_step: int = 0  # the last step whose loss looked healthy: checkpoints up to here are good

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "LoopState":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


class DivergedError(RunError):
    """Training diverged: the loss went to the level of uniform guessing, or far above its best, and stayed there."""


# Without a validation split the guard judges the training loss over at least this much weight (trained tokens for
# an LM, samples for a classifier): a batch of 8 two-class samples often averages above ln 2 in healthy training.
GUARD_MIN_WEIGHT = 128


@dataclass(frozen=True)
class DivergenceGuard:
    """Judges each measured loss (validation when there is a split, else the training window).

    Diverged means `patience` checks in a row that are either at the level of guessing uniformly over the
    choices (ln V for a vocabulary of V tokens) when the run started well below it, or far above the lowest loss seen
    (more than max(2, lowest) above it). Plain overfitting moves validation loss far less than that.
    """

    uniform_loss: float | None  # ln(number of choices: vocabulary or classes); None when unknown
    patience: int

    def suspect(self, loss: float, st: "LoopState") -> str | None:
        u = self.uniform_loss
        if u is not None and loss >= 0.95 * u:
            if st.first_loss is not None and st.first_loss < 0.9 * u:
                return f"at the level of uniform guessing ({u:.2f}), after starting at {st.first_loss:.3f}"
            if st.last_checked_loss is not None and abs(loss - st.last_checked_loss) < 1e-3 * u:
                return f"stuck at the level of uniform guessing ({u:.2f}): the model no longer learns"
        if st.lowest_loss is not None and loss > st.lowest_loss + max(2.0, st.lowest_loss):
            return f"far above the lowest loss of this run ({st.lowest_loss:.3f})"
        return None

    def observe(self, loss: float, st: "LoopState", what: str, learning_rate: float | None = None) -> None:
        """Update the guard's part of the loop state; raise DivergedError when the run has diverged."""
        if st.first_loss is None:
            st.first_loss = loss
        why = self.suspect(loss, st)
        st.last_checked_loss = loss
        if why is None:
            st.suspect_checks, st.healthy_step = 0, st.step
            st.lowest_loss = loss if st.lowest_loss is None else min(st.lowest_loss, loss)
            return
        st.suspect_checks += 1
        if st.suspect_checks >= self.patience:
            raise DivergedError(
                f"training diverged at step {st.step}: the {what} is {loss:.3f}, {why}, for {st.suspect_checks} checks in a row",
                hint=f"start a new run with a lower train.learning_rate ({'it is ' + format(learning_rate, 'g') + '; ' if learning_rate else ''}LoRA usually takes 1e-5 to 5e-4)",
            )


class _Stopped(Exception):
    """A stop request arrived in the middle of an evaluation."""


@dataclass
class LoopHooks:
    """How the loop talks to the outside: events out, a stop request in."""

    emit: Callable = lambda event: None
    should_stop: Callable[[], bool] = lambda: False


class Trainer:
    """Runs optimizer steps of one job; knows nothing about recipes' kinds or the run's UI."""

    def __init__(self, job, cfg, *, seed: int, total_steps: int | None = None, run_dir: Path | RunDir, hooks: LoopHooks, world: World | None = None):
        self.job, self.model, self.cfg, self.seed = job, job.model, cfg, seed
        self.world = world or World()  # data-parallel ranks (mlxft.distributed); a world of one by default
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.hooks = hooks
        self.phases: list[Phase] = list(job.phases) if job.phases else [Phase("train", total_steps or total_steps_for(cfg, job.train_size), cfg.learning_rate)]
        self.total_steps = sum(p.steps for p in self.phases)
        self.best_metric = cfg.best_metric
        self.maximise = self.best_metric in job.higher_is_better
        # Evaluations are rarer and steadier than training windows: fewer of them in a row are enough.
        self.guard = DivergenceGuard(job.uniform_loss, patience=2 if self._validates else 3)
        self.state = LoopState()
        self._order: list[list[int]] | None = None
        self._order_epoch = -1
        self._enter_phase(0)

    # -- phases and the step ------------------------------------------------------------------
    def _phase_bounds(self, index: int) -> tuple[int, int]:
        start = sum(p.steps for p in self.phases[:index])
        return start, start + self.phases[index].steps

    def _training(self) -> None:
        """Training mode (dropout on), then whatever the job keeps in eval mode (e.g. frozen BatchNorm statistics)."""
        self.model.train()
        if hasattr(self.job, "training_mode"):
            self.job.training_mode()

    def _enter_phase(self, index: int) -> None:
        """Set the phase's trainable parts, and a fresh optimizer and compiled step over them."""
        phase = self.phases[index]
        self.state.phase = index
        phase.setup()
        self._training()
        start, end = self._phase_bounds(index)
        self.optimizer = build_optimizer(self.cfg, end - start, phase.learning_rate, phase.warmup_steps)
        self._lr_scales = {}
        if phase.lr_scale is not None:
            paths = [k for k, _ in tree_flatten(self.model.trainable_parameters())]
            self._lr_scales = {k: float(s) for k in paths if (s := phase.lr_scale(k)) != 1.0}
        self._build_steps()

    def _build_steps(self) -> None:
        model, optimizer, cfg, job, scales = self.model, self.optimizer, self.cfg, self.job, self._lr_scales
        if not optimizer.state:
            # Create the optimizer state before tracing, so compiled updates read and write real arrays.
            optimizer.init(model.trainable_parameters())

        def loss_with_metrics(model, *arrays):
            out = job.loss(model, *arrays)
            return out if len(out) == 3 else (*out, {})

        value_and_grad = nn.value_and_grad(model, loss_with_metrics)

        def micro(*arrays):
            (loss, weight, metrics), grads = value_and_grad(model, *arrays)
            return loss, weight, metrics, grads

        def update(grads):
            if cfg.max_grad_norm is not None:
                grads, norm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
            else:
                norm = mx.array(0.0)
            if not scales:
                optimizer.update(model, grads)
                return norm
            # A per-parameter learning rate (layer-wise decay): scale each parameter's step. For Adam(W) and SGD the
            # optimizer's state does not depend on the learning rate, so this is exactly a per-parameter learning rate.
            old = dict(tree_flatten(model.trainable_parameters()))
            new = tree_flatten(optimizer.apply_gradients(grads, model))
            model.update(tree_unflatten([(k, old[k] + scales[k] * (v - old[k]) if k in scales else v) for k, v in new]))
            return norm

        def eval_step(*arrays):
            return job.eval_metrics(model, *arrays)

        if cfg.compile:
            state = [model.state, mx.random.state]
            micro = mx.compile(micro, inputs=state, outputs=state)  # model.state must be an output too, or chained compiled calls break
            ustate = [model.state, optimizer.state]
            update = mx.compile(update, inputs=ustate, outputs=ustate)
            eval_step = mx.compile(eval_step, inputs=[model.state])
        self._micro, self._update, self._eval_step = micro, update, eval_step

    # -- data position ----------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._order_epoch != epoch:
            self._order = self.job.train_order(epoch, self.cfg.batch_size, self.seed)
            self._order_epoch = epoch
        return self._order

    def _next_batch(self) -> tuple[Batch, bool]:
        """This rank's part of the next global batch, and whether it is only borrowed (a rank left without samples
        computes the batch's first sample at weight 0, so every rank runs the same collective step)."""
        order = self._epoch_batches(self.state.epoch)
        if self.state.batch_in_epoch >= len(order):
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            order = self._epoch_batches(self.state.epoch)
        idx = order[self.state.batch_in_epoch]
        self.state.batch_in_epoch += 1
        mine = self.world.shard(idx)
        return self.job.train_batch(mine or idx[:1], self.state.epoch), not mine

    def _epoch_float(self) -> float:
        n = len(self._epoch_batches(self.state.epoch))
        return self.state.epoch + self.state.batch_in_epoch / max(n, 1)

    # -- one optimizer step -----------------------------------------------------------------
    def train_step(self) -> tuple[float, float, int, dict[str, float]]:
        """One optimizer step: (loss, weight, size, metrics) of its micro-batches, weighted by the job's weight."""
        # Dropout masks are a pure function of (seed, step): a resumed run draws the same ones.
        mx.random.seed(self.seed * 1_000_003 + self.state.step)
        acc, total_weight, size, parts = None, 0.0, 0, []
        accum = self.cfg.grad_accumulation
        weighted = accum > 1 or self.world.size > 1
        for _ in range(accum):
            b, borrowed = self._next_batch()
            if borrowed:
                b = Batch(arrays=b.arrays, weight=0.0, size=0)
            loss, weight, metrics, grads = self._micro(*b.arrays)
            if weighted:
                # Weighted accumulation: the step's gradient is that of the weighted mean over all its micro-batches.
                grads = tree_map(lambda g: g * weight, grads)
                acc = grads if acc is None else tree_map(mx.add, acc, grads)
            else:
                acc = grads
            parts.append((loss, metrics, b.weight))
            total_weight += b.weight
            size += b.size
        keys = sorted(parts[0][1])
        if self.world.size > 1:
            acc, sums = self._sum_over_ranks(acc, [total_weight, size, sum(l * w for l, _, w in parts), *(sum(m[k] * w for _, m, w in parts) for k in keys)])
            total_weight, size, loss_sum, metric_sums = sums[0], int(round(sums[1])), sums[2], sums[3:]
        if weighted:
            acc = tree_map(lambda g: g / max(total_weight, 1e-12), acc)
        self._update(acc)
        mx.eval(self.model.state, self.optimizer.state, [(l, m) for l, m, _ in parts])
        denom = max(total_weight, 1e-12)
        if self.world.size > 1:
            loss, metrics = loss_sum / denom, {k: v / denom for k, v in zip(keys, metric_sums)}
        else:
            loss = sum(l.item() * w for l, _, w in parts) / denom
            metrics = {k: sum(m[k].item() * w for _, m, w in parts) / denom for k in keys}
        if not math.isfinite(loss):
            raise DivergedError(
                f"the training loss became {loss} at step {self.state.step + 1}",
                hint="lower train.learning_rate, keep train.max_grad_norm set, or use dtype=float32, and start a new run",
            )
        self.state.step += 1
        self.state.trained_tokens += size
        self.state.last_train_loss = loss
        return loss, total_weight, size, metrics

    def _sum_over_ranks(self, grads, numbers: list) -> tuple[dict, list[float]]:
        """Gradients (already weighted sums) and step numbers summed over the world in one all_sum."""
        flat = tree_flatten(grads)
        parts = [g.astype(mx.float32).reshape(-1) for _, g in flat]
        parts.append(mx.stack([mx.array(n, dtype=mx.float32) for n in numbers]))  # python numbers and 0-d arrays alike
        total = self.world.sum(mx.concatenate(parts))
        out, at = [], 0
        for k, g in flat:
            out.append((k, total[at : at + g.size].reshape(g.shape).astype(g.dtype)))
            at += g.size
        return tree_unflatten(out), [float(v) for v in total[at:].tolist()]

    def _stop_requested(self) -> bool:
        """The stop request, agreed by every rank (a collective in a world of more than one)."""
        return self.world.any(self.hooks.should_stop())

    def evaluate(self, max_batches: int | None = None) -> tuple[dict[str, float], float]:
        """The job's validation metrics (weighted means, plus what the job derives from them) and the total weight.

        The stop request is asked between batches, so a stop during a long split is honoured within a batch.
        """
        sums: dict[str, float] = {}
        total = 0.0
        world = self.world
        self.model.eval()
        try:
            first = None
            for i, b in enumerate(self.job.eval_batches(self.cfg.batch_size, max_batches)):
                if i % world.size == 0 and self._stop_requested():  # every rank asks at the same batches
                    raise _Stopped()
                first = b if first is None else first
                if i % world.size != world.rank:
                    continue  # another rank's batch
                metrics, _ = self._eval_step(*b.arrays)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v.item() * b.weight
                total += b.weight
            if world.size > 1:
                if first is not None and not sums:  # fewer batches than ranks: this rank's metric names at weight 0
                    sums = {k: 0.0 for k in self._eval_step(*first.arrays)[0]}
                keys = sorted(sums)
                summed = world.sum_floats([total, *(sums[k] for k in keys)])
                total, sums = summed[0], dict(zip(keys, summed[1:]))
        finally:
            self._training()
        if total == 0:
            return {}, 0.0
        return self.job.finish_metrics({k: v / total for k, v in sums.items()}), total

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path) -> Path:
        """The job's weights + optimizer + loop state, written to a temp folder and renamed into place."""
        tmp = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_dir_for(folder)
            self.job.save(tmp / self.job.artifact)
            opt_state = dict(tree_flatten(self.optimizer.state))
            mx.save_safetensors(str(tmp / CHECKPOINT_OPTIMIZER), opt_state)
            atomic_write_text(tmp / CHECKPOINT_STATE, self.state.to_json())  # last: marks the checkpoint complete
            publish_dir(tmp, folder)
        except (OSError, RuntimeError) as exc:  # MLX's writer raises RuntimeError on a short write
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)  # the older checkpoints stay as they were
            raise write_error(exc, folder, f"save the step-{self.state.step} checkpoint") from None
        return folder

    def resume_latest(self) -> Path:
        """Load the newest checkpoint that is whole and loads; set aside (as corrupt-step-N) and name each one skipped."""
        for _, folder in reversed(self.run.checkpoints()):
            problem = checkpoint_problem(folder)
            if problem is None:
                try:
                    self.load_checkpoint(folder)
                    return folder
                except (MlxftError, OSError, RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
                    problem = f"it does not load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            aside = self.run.set_aside(folder)  # out of the way, so this step can be checkpointed again
            self.hooks.emit(LogMessage("warning", f"skipped checkpoint {folder.name}: {problem}; moved to {aside.name}"))
        raise RunError(f"{self.run.path}: no usable checkpoint to resume from", hint="start the run again with `mlxft train`")

    def load_checkpoint(self, folder: Path) -> None:
        state = LoopState.from_json((folder / CHECKPOINT_STATE).read_text())
        if not 0 <= state.phase < len(self.phases):
            raise ValueError(f"phase {state.phase} does not exist in this job")
        self._enter_phase(state.phase)  # the phase's trainable parts first: the optimizer state is over them
        self.job.load(folder / self.job.artifact)
        self.optimizer.init(self.model.trainable_parameters())
        opt = mx.load(str(folder / CHECKPOINT_OPTIMIZER))
        self.optimizer.state = tree_unflatten(list(opt.items()))
        self.state = state
        mx.eval(self.model.state, self.optimizer.state)
        self._build_steps()  # the compiled functions must capture the restored state objects

    def share_state_from_main(self) -> None:
        """Every rank takes rank 0's loop state, trainable weights and optimizer state (after rank 0 resumed).

        Collective: every rank calls it. The other ranks need no copy of the checkpoint, so a resume works across
        Macs whose run folders are not shared.
        """
        world = self.world
        if world.size == 1:
            return
        text = self.state.to_json().encode() if world.is_main else b""
        n = int(world.sum_floats([float(len(text))])[0])
        raw = mx.array(list(text.ljust(n, b"\0")) if world.is_main else [0] * n, dtype=mx.int32)
        state = LoopState.from_json(bytes(world.sum(raw).astype(mx.uint8).tolist()).decode())
        if not world.is_main:
            self._enter_phase(state.phase)
            self.optimizer.init(self.model.trainable_parameters())  # the per-parameter state, to be overwritten
        # sorted by name: a state loaded from a checkpoint file need not keep the order of a freshly built one
        params, opt = sorted(tree_flatten(self.model.trainable_parameters())), sorted(tree_flatten(self.optimizer.state))
        def sendable(v):  # the ring sums floats and 32-bit ints (the optimizer's step counter is a uint64)
            return v if mx.issubdtype(v.dtype, mx.floating) or v.dtype == mx.int32 else v.astype(mx.int32)

        own = [sendable(v) if world.is_main else mx.zeros_like(sendable(v)) for _, v in params + opt]
        summed = [world.sum(v).astype(orig.dtype) for v, (_, orig) in zip(own, params + opt)]
        mx.eval(summed)
        self.model.update(tree_unflatten([(k, v) for (k, _), v in zip(params, summed[: len(params)])]))
        self.optimizer.state = tree_unflatten([(k, v) for (k, _), v in zip(opt, summed[len(params):])])
        self.state = state
        mx.eval(self.model.state, self.optimizer.state)
        self._build_steps()

    def prune_checkpoints(self, keep: int) -> None:
        """Keep the newest `keep` checkpoints, plus the newest one from a step whose loss looked healthy."""
        found = self.run.checkpoints()
        healthy = [p for step, p in found if step <= self.state.healthy_step][-1:]
        for _, old in found[:-keep]:
            if old not in healthy:
                self.run.remove_checkpoint(old)

    def _drop_checkpoints_after(self, step: int) -> None:
        """After divergence: checkpoints written since the last healthy loss hold a broken model."""
        for s, folder in self.run.checkpoints():
            if s > step:
                self.run.remove_checkpoint(folder)

    # -- the loop ---------------------------------------------------------------------------
    def _is_better(self, value: float) -> bool:
        best = self.state.best_value
        return best is None or (value > best if self.maximise else value < best)

    def _run_eval(self) -> dict[str, float] | None:
        t0 = time.perf_counter()
        try:
            metrics, weight = self.evaluate(max_batches=self.cfg.eval_batches)
        except _Stopped:
            self.hooks.emit(LogMessage("info", f"evaluation at step {self.state.step} cut short by the stop request"))
            return None
        if weight == 0:
            return None
        st, val = self.state, metrics["loss"]
        if self.best_metric not in metrics:
            raise RunError(f"train.best_metric is {self.best_metric!r}, but this job reports {', '.join(sorted(metrics))}", hint="set train.best_metric to one of those")
        try:
            self.guard.observe(val, st, "validation loss", self.phases[st.phase].learning_rate)
        except DivergedError:
            self.hooks.emit(self._eval_report(metrics, False, weight, t0))
            raise
        st.best_val_loss = val if st.best_val_loss is None else min(st.best_val_loss, val)
        is_best = self._is_better(metrics[self.best_metric])
        if is_best:
            st.best_value, st.best_step, st.evals_without_improvement = metrics[self.best_metric], st.step, 0
            if self.cfg.keep_best and st.step > 0 and self.world.is_main:
                self.job.save(self.run.best_dir)
        else:
            st.evals_without_improvement += 1
        self.hooks.emit(self._eval_report(metrics, is_best, weight, t0))
        return metrics

    def _eval_report(self, metrics: dict, is_best: bool, weight: float, t0: float) -> EvalReport:
        st = self.state
        return EvalReport(st.step, metrics["loss"], metrics.get("perplexity"), st.best_val_loss if st.best_val_loss is not None else metrics["loss"],
                          is_best, int(weight), time.perf_counter() - t0, metrics=metrics)

    def fit(self) -> str:
        """Train until total_steps, a stop request, or early stopping. Returns the status."""
        try:
            return self._fit()
        except DivergedError:
            if self.world.is_main:
                self._drop_checkpoints_after(self.state.healthy_step)  # what was saved since the last healthy loss is broken
            raise

    def _fit(self) -> str:
        cfg, st, emit = self.cfg, self.state, self.hooks.emit
        self._training()
        if st.step == 0 and self._validates:
            self._run_eval()  # the metrics before training, for comparison
        window = _Window()
        judged = _Window()  # the training loss the divergence guard judges: at least GUARD_MIN_WEIGHT of weight
        t_window = time.perf_counter()
        t_start = time.perf_counter() - st.elapsed_s
        status = "completed"
        mx.reset_peak_memory()
        while st.step < self.total_steps:
            if self._stop_requested():
                status = "stopped"
                break
            if st.step >= self._phase_bounds(st.phase)[1]:
                self._enter_phase(st.phase + 1)
                phase = self.phases[st.phase]
                emit(LogMessage("info", f"phase {st.phase + 1}/{len(self.phases)}: {phase.name} ({phase.steps} steps at learning rate {phase.learning_rate:g})"))
            loss, weight, size, metrics = self.train_step()
            window.add(loss, weight, size, metrics)
            judged.add(loss, weight, size, {})
            st.elapsed_s = time.perf_counter() - t_start
            last = st.step == self.total_steps
            if st.step % cfg.log_every == 0 or last or st.step == 1:
                dt = max(time.perf_counter() - t_window, 1e-9)
                steps_left = self.total_steps - st.step
                rate = st.step / max(st.elapsed_s, 1e-9)
                emit(
                    StepReport(
                        step=st.step, total_steps=self.total_steps, epoch=round(self._epoch_float(), 4),
                        loss=window.loss, learning_rate=float(self.optimizer.learning_rate.item()),
                        tokens=window.size, tokens_per_second=window.size / dt, peak_memory_gb=mx.get_peak_memory() / 1e9,
                        elapsed_s=st.elapsed_s, eta_s=steps_left / max(rate, 1e-9), metrics=window.metrics,
                    )
                )
                if not self._validates and (judged.weight >= GUARD_MIN_WEIGHT or last):
                    self.guard.observe(judged.loss, st, "training loss", self.phases[st.phase].learning_rate)
                    judged = _Window()
                window = _Window()
                t_window = time.perf_counter()
            if self._validates and (st.step % cfg.eval_every == 0 or last):
                self._run_eval()
                t_window = time.perf_counter()  # evaluation time is not training throughput
                if cfg.early_stopping_patience is not None and st.evals_without_improvement >= cfg.early_stopping_patience:
                    emit(LogMessage("info", f"early stopping: no better validation {self.best_metric} in {cfg.early_stopping_patience} evaluations (best {st.best_value:.4f} at step {st.best_step})"))
                    status = "early-stopped"
            if cfg.save_every is not None and st.step % cfg.save_every == 0 and not last:
                self.checkpoint()
            if status == "early-stopped":
                break
        self.checkpoint()
        return status

    @property
    def _validates(self) -> bool:
        return self.job.has_validation and self.cfg.eval_every is not None

    def checkpoint(self) -> Path:
        folder = self.run.checkpoint_dir(self.state.step)
        if self.world.is_main and checkpoint_problem(folder) is not None:  # rank 0 alone writes the run
            self.save_checkpoint(folder)
            self.prune_checkpoints(self.cfg.keep_checkpoints)
            self.hooks.emit(CheckpointSaved(self.state.step, str(folder)))
        return folder

    def save_result(self) -> tuple[Path, str | None]:
        """The run's result in RUN/<artifact>: the best evaluation's weights under keep_best, else the last step's."""
        final, best = self.run.result_dir(self.job.artifact), self.run.best_dir
        st = self.state
        if self.cfg.keep_best and best.is_dir() and st.best_step != st.step:
            tmp = self.run.best_copy_dir(self.job.artifact)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(best, tmp)
            publish_dir(tmp, final)
            return final, f"{self.job.artifact}/ holds the best validation {self.best_metric} ({st.best_value:.4f} at step {st.best_step}); the last step's weights are in checkpoints/"
        self.job.save(final)
        return final, None


class _Window:
    """Training numbers between two progress reports, weighted by each step's weight."""

    def __init__(self):
        self.weight, self.size, self._loss, self._metrics = 0.0, 0, 0.0, {}

    def add(self, loss: float, weight: float, size: int, metrics: dict[str, float]) -> None:
        self.weight += weight
        self.size += size
        self._loss += loss * weight
        for k, v in metrics.items():
            self._metrics[k] = self._metrics.get(k, 0.0) + v * weight

    @property
    def loss(self) -> float:
        return self._loss / max(self.weight, 1e-12)

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v / max(self.weight, 1e-12) for k, v in self._metrics.items()}
