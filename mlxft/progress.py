"""Render run events for a terminal: a one-line progress bar on a TTY, plain log lines otherwise."""

from __future__ import annotations

import shutil
import sys

from mlxft.events import CheckpointSaved, EvalReport, LogMessage, RunFailed, RunFinished, RunStarted, StepReport


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _metrics_text(metrics: dict, digits: int) -> str:
    """A job's own metrics (rewards/margins, accuracy...) as `name value` pairs, in the job's order."""
    return "".join(f" {k} {v:.{digits}f}" for k, v in metrics.items() if isinstance(v, (int, float)))


class ProgressPrinter:
    """Callable event sink for the CLI."""

    def __init__(self, stream=None, tty: bool | None = None):
        self.out = stream or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.last_val: float | None = None
        self.last_step: StepReport | None = None
        self.unit = "tok"
        self.charted: tuple = ()  # the job's headline metrics: the only ones the per-step lines show (metrics.jsonl has all)
        self._bar_shown = False

    def _line(self, text: str) -> None:
        if self._bar_shown:
            self.out.write("\r\033[K")
            self._bar_shown = False
        self.out.write(text + "\n")
        self.out.flush()
        if self.tty and self.last_step is not None:
            self._bar(self.last_step)

    def _bar(self, e: StepReport) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        val = f" val {self.last_val:.3f}" if self.last_val is not None else ""
        tail = f" {e.step}/{e.total_steps} loss {e.loss:.3f}{val}{_metrics_text(self._headline(e.metrics), 3)} | {e.tokens_per_second:,.0f} {self.unit}/s | {e.peak_memory_gb:.2f} GB | ETA {_fmt_time(e.eta_s)}"
        room = max(10, width - len(tail) - 4)
        filled = int(room * e.step / max(e.total_steps, 1))
        self.out.write("\r\033[K[" + "#" * filled + "-" * (room - filled) + "]" + tail[: width - room - 3])
        self.out.flush()
        self._bar_shown = True

    def _headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in self.charted if k in metrics} if self.charted else metrics

    def __call__(self, e) -> None:
        if e is None:
            self._line("stopping after the current step and saving a checkpoint (Ctrl-C again to kill it)...")
        elif isinstance(e, RunStarted):
            self.unit, self.charted = e.unit, tuple(e.charted)
            what = f"resuming at step {e.resumed_from_step}" if e.resumed_from_step else "training"
            self._line(
                f"{what}: {e.method} on {e.model} [{e.device}, {e.compute_dtype}] "
                f"{e.trainable_parameters:,} trainable of {e.total_parameters:,} parameters "
                f"({100 * e.trainable_parameters / max(e.total_parameters, 1):.2f}%), {e.train_samples} train / {e.valid_samples} valid samples, {e.total_steps} steps"
            )
            self._line(f"run directory: {e.run_dir}")
        elif isinstance(e, StepReport):
            self.last_step = e
            if self.tty:
                self._bar(e)
            else:
                self._line(
                    f"step {e.step}/{e.total_steps} epoch {e.epoch:.2f} loss {e.loss:.4f}{_metrics_text(self._headline(e.metrics), 4)} lr {e.learning_rate:.2e} "
                    f"{e.tokens_per_second:,.0f} {self.unit}/s peak {e.peak_memory_gb:.2f} GB eta {_fmt_time(e.eta_s)}"
                )
        elif isinstance(e, EvalReport):
            self.last_val = e.val_loss
            mark = " (best)" if e.is_best else ""
            ppl = f" (perplexity {e.val_perplexity:.2f})" if e.val_perplexity is not None else ""
            others = {k: v for k, v in e.metrics.items() if k not in ("loss", "perplexity")}
            self._line(f"step {e.step}: validation loss {e.val_loss:.4f}{ppl}{_metrics_text(others, 4)}{mark}")
        elif isinstance(e, CheckpointSaved):
            self._line(f"checkpoint: {e.path}")
        elif isinstance(e, LogMessage):
            self._line(("warning: " if e.level == "warning" else "") + e.message)
        elif isinstance(e, RunFinished):
            self.last_step = None  # the bar is done: what follows goes on clean lines
            self._line(f"{e.status} at step {e.step} in {_fmt_time(e.seconds)}; adapter: {e.adapter_path}")
        elif isinstance(e, RunFailed):
            self.last_step = None
            self._line(f"failed after step {e.step}")  # the CLI prints the error and its hint after this
