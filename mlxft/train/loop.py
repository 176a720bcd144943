"""The one training loop: compiled step, accumulation, clipping, schedules, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlxft.data.batches import Batch, collate, epoch_order, eval_order
from mlxft.data.encode import Encoded
from mlxft.errors import RunError, write_error
from mlxft.events import CheckpointSaved, EvalReport, LogMessage, StepReport
from mlxft.runs import RunDir, atomic_write_text, checkpoint_problem, publish_dir


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


def build_optimizer(cfg, total_steps: int) -> optim.Optimizer:
    schedule = build_schedule(cfg.learning_rate, total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    # Bias correction on: the Adam of the papers and of PyTorch (MLX defaults it off, which makes the
    # first updates ~3x larger than the learning rate suggests).
    if cfg.optimizer == "adamw":
        return optim.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, bias_correction=True)
    if cfg.optimizer == "adam":
        return optim.Adam(learning_rate=schedule, bias_correction=True)
    return optim.SGD(learning_rate=schedule, weight_decay=cfg.weight_decay)


def enable_grad_checkpoint(block: nn.Module) -> None:
    """Recompute a block's activations in the backward pass (patches its class; training runs in its own process)."""
    cls = type(block)
    if getattr(cls, "_mlxft_checkpointed", False):
        return
    original = cls.__call__

    def checkpointed(self, *args, **kwargs):
        def inner(params, *args, **kwargs):
            self.update(params)
            return original(self, *args, **kwargs)

        return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

    cls.__call__ = checkpointed
    cls._mlxft_checkpointed = True


@dataclass
class LoopState:
    """Everything besides weights and optimizer state that a resumed run needs to continue exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # index of the next batch in this epoch's order
    best_val_loss: float | None = None
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


@dataclass(frozen=True)
class DivergenceGuard:
    """Judges each measured loss (validation when there is a split, else the training window).

    Diverged means `patience` checks in a row that are either at the level of guessing uniformly over the
    vocabulary (ln V) when the run started well below it, or far above the lowest loss seen
    (more than max(2, lowest) above it). Plain overfitting moves validation loss far less than that.
    """

    uniform_loss: float | None  # ln(vocabulary size); None when unknown
    patience: int

    def suspect(self, loss: float, st: "LoopState") -> str | None:
        u = self.uniform_loss
        if u is not None and loss >= 0.95 * u:
            if st.first_loss is not None and st.first_loss < 0.9 * u:
                return f"at the level of guessing uniformly over the vocabulary (ln V = {u:.2f}), after starting at {st.first_loss:.3f}"
            if st.last_checked_loss is not None and abs(loss - st.last_checked_loss) < 1e-3 * u:
                return f"stuck at the level of guessing uniformly over the vocabulary (ln V = {u:.2f}): the model no longer learns"
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
    """How the loop talks to the outside: events out, a stop request in, and how to save an adapter folder."""

    emit: Callable = lambda event: None
    should_stop: Callable[[], bool] = lambda: False
    save_adapter: Callable[[Path], None] = lambda folder: None


@dataclass
class TrainData:
    train: list[Encoded]
    valid: list[Encoded]
    pad_id: int = 0
    lengths: list[int] = field(init=False)

    def __post_init__(self):
        self.lengths = [len(s) for s in self.train]


def evaluate_loss(model: nn.Module, loss, samples: list[Encoded], batch_size: int, pad_id: int = 0, max_batches: int | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[float, int]:
    """Token-weighted mean loss of `loss(inputs, targets, positions, weights)` over samples; (nan, 0) if none.

    `should_stop` is asked between batches, so a stop request during a long split is honoured within a batch.
    """
    if not samples:
        return float("nan"), 0
    model.eval()
    batches = eval_order([len(s) for s in samples], batch_size)
    if max_batches is not None:
        batches = batches[:max_batches]
    total, ntoks = 0.0, 0
    for idx in batches:
        if should_stop is not None and should_stop():
            raise _Stopped()
        b = collate([samples[i] for i in idx], pad_id)
        value, _ = loss(mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights))
        total += value.item() * b.trained_tokens
        ntoks += b.trained_tokens
    return total / max(ntoks, 1), ntoks


def steps_per_epoch(n_samples: int, batch_size: int, accumulation: int) -> int:
    return max(1, math.ceil(math.ceil(n_samples / batch_size) / accumulation))


class Trainer:
    """Runs optimizer steps over TrainData; knows nothing about recipes' kinds or the run's UI."""

    def __init__(self, model: nn.Module, loss_fn, data: TrainData, cfg, *, seed: int, batching: str, total_steps: int, run_dir: Path, hooks: LoopHooks,
                 uniform_loss: float | None = None):
        self.model, self.data, self.cfg, self.seed = model, data, cfg, seed
        # Evaluations are rarer and steadier than training windows: fewer of them in a row are enough.
        self.guard = DivergenceGuard(uniform_loss, patience=2 if data.valid and cfg.eval_every is not None else 3)
        self.batching, self.total_steps, self.run_dir, self.hooks = batching, total_steps, Path(run_dir), hooks
        self.loss_fn = loss_fn
        self.optimizer = build_optimizer(cfg, total_steps)
        self.state = LoopState()
        self._order: list[list[int]] | None = None
        self._order_epoch = -1
        self._build_steps()

    # -- the step ---------------------------------------------------------------------------
    def _build_steps(self) -> None:
        model, optimizer, cfg = self.model, self.optimizer, self.cfg
        if not optimizer.state:
            # Create the optimizer state before tracing, so compiled updates read and write real arrays.
            optimizer.init(model.trainable_parameters())
        value_and_grad = nn.value_and_grad(model, self.loss_fn)

        def micro(inputs, targets, positions, weights):
            (loss, ntok), grads = value_and_grad(model, inputs, targets, positions, weights)
            return loss, ntok, grads

        def update(grads):
            if cfg.max_grad_norm is not None:
                grads, norm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
            else:
                norm = mx.array(0.0)
            optimizer.update(model, grads)
            return norm

        if cfg.compile:
            state = [model.state, mx.random.state]
            micro = mx.compile(micro, inputs=state, outputs=state)  # model.state must be an output too, or chained compiled calls break
            ustate = [model.state, optimizer.state]
            update = mx.compile(update, inputs=ustate, outputs=ustate)
        self._micro, self._update = micro, update
        self._eval_loss = mx.compile(partial(self.loss_fn, model), inputs=[model.state]) if cfg.compile else partial(self.loss_fn, model)

    # -- data position ----------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._order_epoch != epoch:
            self._order = epoch_order(self.data.lengths, self.cfg.batch_size, self.seed, epoch, self.batching)
            self._order_epoch = epoch
        return self._order

    def _next_batch(self) -> Batch:
        order = self._epoch_batches(self.state.epoch)
        if self.state.batch_in_epoch >= len(order):
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            order = self._epoch_batches(self.state.epoch)
        idx = order[self.state.batch_in_epoch]
        self.state.batch_in_epoch += 1
        return collate([self.data.train[i] for i in idx], self.data.pad_id)

    def _epoch_float(self) -> float:
        n = len(self._epoch_batches(self.state.epoch))
        return self.state.epoch + self.state.batch_in_epoch / max(n, 1)

    # -- one optimizer step -----------------------------------------------------------------
    def train_step(self) -> tuple[float, int]:
        # Dropout masks are a pure function of (seed, step): a resumed run draws the same ones.
        mx.random.seed(self.seed * 1_000_003 + self.state.step)
        acc, total_tokens, losses = None, 0, []
        accum = self.cfg.grad_accumulation
        for _ in range(accum):
            b = self._next_batch()
            loss, ntok, grads = self._micro(mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights))
            if accum > 1:
                # Token-weighted accumulation: the step's gradient is that of the mean over all its tokens.
                grads = tree_map(lambda g: g * ntok, grads)
                acc = grads if acc is None else tree_map(mx.add, acc, grads)
            else:
                acc = grads
            losses.append((loss, b.trained_tokens))
            total_tokens += b.trained_tokens
        if accum > 1:
            acc = tree_map(lambda g: g / max(total_tokens, 1), acc)
        self._update(acc)
        mx.eval(self.model.state, self.optimizer.state, [l for l, _ in losses])
        loss = sum(l.item() * n for l, n in losses) / max(total_tokens, 1)
        if not math.isfinite(loss):
            self._drop_checkpoints_after(self.state.healthy_step)
            raise DivergedError(
                f"the training loss became {loss} at step {self.state.step + 1}",
                hint="lower train.learning_rate, keep train.max_grad_norm set, or use dtype=float32, and start a new run",
            )
        self.state.step += 1
        self.state.trained_tokens += total_tokens
        self.state.last_train_loss = loss
        return loss, total_tokens

    def evaluate(self, samples: list[Encoded] | None = None, max_batches: int | None = None) -> tuple[float, int]:
        """Token-weighted mean loss over `samples` (default: the validation split)."""
        samples = self.data.valid if samples is None else samples
        try:
            return evaluate_loss(self.model, self._eval_loss, samples, self.cfg.batch_size, self.data.pad_id, max_batches, should_stop=self.hooks.should_stop)
        finally:
            self.model.train()

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path) -> Path:
        """adapter + optimizer + loop state, written to a temp folder and renamed into place."""
        tmp = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            self.hooks.save_adapter(tmp / "adapter")
            opt_state = dict(tree_flatten(self.optimizer.state))
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt_state)
            atomic_write_text(tmp / "state.json", self.state.to_json())  # last: marks the checkpoint complete
            publish_dir(tmp, folder)
        except (OSError, RuntimeError) as exc:  # MLX's writer raises RuntimeError on a short write
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)  # the older checkpoints stay as they were
            raise write_error(exc, folder, f"save the step-{self.state.step} checkpoint") from None
        return folder

    def resume_latest(self) -> Path:
        """Load the newest checkpoint that is whole and loads; set aside (as corrupt-step-N) and name each one skipped."""
        run = RunDir(self.run_dir)
        for _, folder in reversed(run.checkpoints()):
            problem = checkpoint_problem(folder)
            if problem is None:
                try:
                    self.load_checkpoint(folder)
                    return folder
                except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
                    problem = f"it does not load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            aside = folder.with_name(f"corrupt-{folder.name}")
            os.replace(folder, aside)  # out of the way, so this step can be checkpointed again; kept for a post-mortem
            self.hooks.emit(LogMessage("warning", f"skipped checkpoint {folder.name}: {problem}; moved to {aside.name}"))
        raise RunError(f"{self.run_dir}: no usable checkpoint to resume from", hint="start the run again with `mlxft train`")

    def load_checkpoint(self, folder: Path) -> None:
        from mlxft.llm.adapters import ADAPTER_WEIGHTS

        weights = mx.load(str(folder / "adapter" / ADAPTER_WEIGHTS))
        self.model.load_weights(list(weights.items()), strict=False)
        self.optimizer.init(self.model.trainable_parameters())
        opt = mx.load(str(folder / "optimizer.safetensors"))
        self.optimizer.state = tree_unflatten(list(opt.items()))
        self.state = LoopState.from_json((folder / "state.json").read_text())
        mx.eval(self.model.state, self.optimizer.state)
        self._build_steps()  # the compiled functions must capture the restored state objects

    def prune_checkpoints(self, keep: int) -> None:
        """Keep the newest `keep` checkpoints, plus the newest one from a step whose loss looked healthy."""
        found = RunDir(self.run_dir).checkpoints()
        healthy = [p for step, p in found if step <= self.state.healthy_step][-1:]
        for _, old in found[:-keep]:
            if old not in healthy:
                _remove_checkpoint(old)

    def _drop_checkpoints_after(self, step: int) -> None:
        """After divergence: checkpoints written since the last healthy loss hold a broken model."""
        for s, folder in RunDir(self.run_dir).checkpoints():
            if s > step:
                _remove_checkpoint(folder)

    # -- the loop ---------------------------------------------------------------------------
    def _run_eval(self) -> float | None:
        t0 = time.perf_counter()
        try:
            val, ntok = self.evaluate(max_batches=self.cfg.eval_batches)
        except _Stopped:
            self.hooks.emit(LogMessage("info", f"evaluation at step {self.state.step} cut short by the stop request"))
            return None
        if ntok == 0:
            return None
        st = self.state
        try:
            self.guard.observe(val, st, "validation loss", self.cfg.learning_rate)
        except DivergedError:
            self.hooks.emit(EvalReport(st.step, val, math.exp(min(val, 50.0)), st.best_val_loss if st.best_val_loss is not None else val, False, ntok, time.perf_counter() - t0))
            self._drop_checkpoints_after(st.healthy_step)
            raise
        is_best = st.best_val_loss is None or val < st.best_val_loss
        if is_best:
            st.best_val_loss, st.best_step, st.evals_without_improvement = val, st.step, 0
            if self.cfg.keep_best and st.step > 0:
                self.hooks.save_adapter(self.run_dir / "best")
        else:
            st.evals_without_improvement += 1
        self.hooks.emit(EvalReport(st.step, val, math.exp(min(val, 50.0)), st.best_val_loss, is_best, ntok, time.perf_counter() - t0))
        return val

    def fit(self) -> str:
        """Train until total_steps, a stop request, or early stopping. Returns the status."""
        cfg, st, emit = self.cfg, self.state, self.hooks.emit
        self.model.train()
        if st.step == 0 and cfg.eval_every is not None:
            self._run_eval()  # the loss before training, for comparison
        window_loss, window_tokens = 0.0, 0
        t_window = time.perf_counter()
        t_start = time.perf_counter() - st.elapsed_s
        status = "completed"
        mx.reset_peak_memory()
        while st.step < self.total_steps:
            if self.hooks.should_stop():
                status = "stopped"
                break
            loss, ntok = self.train_step()
            window_loss += loss * ntok
            window_tokens += ntok
            st.elapsed_s = time.perf_counter() - t_start
            last = st.step == self.total_steps
            if st.step % cfg.log_every == 0 or last or st.step == 1:
                dt = max(time.perf_counter() - t_window, 1e-9)
                steps_left = self.total_steps - st.step
                rate = st.step / max(st.elapsed_s, 1e-9)
                emit(
                    StepReport(
                        step=st.step, total_steps=self.total_steps, epoch=round(self._epoch_float(), 4),
                        loss=window_loss / max(window_tokens, 1), learning_rate=float(self.optimizer.learning_rate.item()),
                        tokens=window_tokens, tokens_per_second=window_tokens / dt, peak_memory_gb=mx.get_peak_memory() / 1e9,
                        elapsed_s=st.elapsed_s, eta_s=steps_left / max(rate, 1e-9),
                    )
                )
                if not self._validates:
                    try:
                        self.guard.observe(window_loss / max(window_tokens, 1), st, "training loss", self.cfg.learning_rate)
                    except DivergedError:
                        self._drop_checkpoints_after(st.healthy_step)
                        raise
                window_loss, window_tokens = 0.0, 0
                t_window = time.perf_counter()
            if cfg.eval_every is not None and (st.step % cfg.eval_every == 0 or last):
                self._run_eval()
                t_window = time.perf_counter()  # evaluation time is not training throughput
                if cfg.early_stopping_patience is not None and st.evals_without_improvement >= cfg.early_stopping_patience:
                    emit(LogMessage("info", f"early stopping: no better validation loss in {cfg.early_stopping_patience} evaluations (best {st.best_val_loss:.4f} at step {st.best_step})"))
                    status = "early-stopped"
            if cfg.save_every is not None and st.step % cfg.save_every == 0 and not last:
                self.checkpoint()
            if status == "early-stopped":
                break
        self.checkpoint()
        return status

    @property
    def _validates(self) -> bool:
        return bool(self.data.valid) and self.cfg.eval_every is not None

    def checkpoint(self) -> Path:
        folder = self.run_dir / "checkpoints" / f"step-{self.state.step:06d}"
        if checkpoint_problem(folder) is not None:
            self.save_checkpoint(folder)
            self.prune_checkpoints(self.cfg.keep_checkpoints)
            self.hooks.emit(CheckpointSaved(self.state.step, str(folder)))
        return folder


def _remove_checkpoint(folder: Path) -> None:
    """Rename first, then delete: a kill midway leaves a `.deleting-` folder (cleaned on the next start), never a half step-N."""
    doomed = folder.with_name(f".deleting-{folder.name}")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
