"""Training in a spawned child process, supervised by the caller: events over a pipe, clean stop, crash reports.

Two facts force the child: MLX work on a non-main thread can abort the interpreter at exit, and
running out of unified memory on Metal kills the process instead of raising. The supervisor
survives both and says what happened, with the last checkpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlxft.errors import MlxftError, RunError
from mlxft.events import RunFailed, RunFinished, StepReport, event_from_dict, event_to_dict
from mlxft.recipe import Recipe
from mlxft.runs import RunDir, atomic_write_text


@dataclass
class Run:
    """The outcome of a supervised run: its directory, final status, and every event it emitted."""

    path: Path
    status: str  # completed | stopped | early-stopped | failed | died
    events: list = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    last_checkpoint: str | None = None

    @property
    def adapter_path(self) -> Path:
        return self.path / "adapter"

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "stopped", "early-stopped")


def _child_main(recipe_data: dict, run_dir: str, resume_from: str | None, conn, stop_event) -> None:
    """Entry point of the training process (imports mlxft first, so the fast BLAS is preloaded)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which asks us to stop
    import mlxft  # noqa: F401  (BLAS preload before mlx.core)
    from mlxft.recipe import Recipe
    from mlxft.runs import MetricsWriter
    from mlxft.train.lm import run_lm
    from mlxft.train.loop import LoopHooks

    run = RunDir(run_dir)
    writer = MetricsWriter(run.metrics_path)

    reached = {"step": 0}  # the last step reported, for a failure report

    def emit(event) -> None:
        if isinstance(event, StepReport):
            reached["step"] = event.step
        writer.write(event)
        try:
            conn.send(event_to_dict(event))
        except (BrokenPipeError, OSError):
            pass  # the supervisor is gone (e.g. the TUI quit and left us running): keep training

    hooks = LoopHooks(emit=emit, should_stop=lambda: stop_event.is_set() or run.stop_requested())
    code = 0
    try:
        recipe = Recipe.model_validate(recipe_data)
        finished = run_lm(recipe, run.path, hooks, Path(resume_from) if resume_from else None)
        emit(finished)
    except MlxftError as exc:
        last = run.latest_checkpoint()
        emit(RunFailed(step=reached["step"], error=exc.message, hint=exc.hint, last_checkpoint=str(last) if last else None))
        code = 1
    except Exception as exc:  # an engine bug: report it with its traceback rather than a bare exit code
        last = run.latest_checkpoint()
        emit(RunFailed(step=reached["step"], error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", hint="this is a bug in mlxft; please report it with the run directory", last_checkpoint=str(last) if last else None))
        code = 1
    finally:
        run.clear_stop_request()  # honoured (or moot): a later resume must not stop at once
        writer.close()
        conn.close()
    os._exit(code)  # skip interpreter teardown: MLX's exit-time cleanup has nothing left to do


def _describe_exit(code: int | None) -> tuple[str, str]:
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return f"the training process was killed ({sig})", "most often the system ran out of memory: try `mlxft plan`, QLoRA, a smaller batch or grad_checkpoint"
        return f"the training process died with {sig}", "see the log above; resume from the last checkpoint"
    return f"the training process exited with code {code} without reporting why", "see the log above"


def supervise(recipe: Recipe, run: RunDir, *, resume_from: Path | None = None, on_event: Callable = lambda e: None, poll_s: float = 0.2) -> Run:
    """Start the child, forward its events to `on_event`, stop it cleanly on Ctrl-C, and report how it ended."""
    run.clear_stop_request()  # an old request must not stop the run we are starting
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    proc = ctx.Process(
        target=_child_main, args=(recipe.model_dump(mode="json"), str(run.path), str(resume_from) if resume_from else None, send, stop),
        name=f"mlxft-train-{run.path.name}",
    )
    proc.start()
    send.close()
    result = Run(path=run.path, status="running")
    interrupts = 0
    while True:
        try:
            if recv.poll(poll_s):
                try:
                    event = event_from_dict(recv.recv())
                except EOFError:  # the child closed its end: it finished, failed or was killed
                    break
                if event is not None:
                    result.events.append(event)
                    on_event(event)
            elif not proc.is_alive():
                break
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 1:
                stop.set()
                on_event(None)  # lets the caller print "stopping after this step..."
            else:
                proc.terminate()
    proc.join()
    last = run.latest_checkpoint()
    result.last_checkpoint = str(last) if last else None
    final = next((e for e in reversed(result.events) if isinstance(e, (RunFinished, RunFailed))), None)
    if isinstance(final, RunFinished):
        result.status = final.status
    elif isinstance(final, RunFailed):
        result.status, result.error, result.hint = "failed", final.error, final.hint
    else:
        result.status = "died"
        result.error, result.hint = _describe_exit(proc.exitcode)
    return result


def start_run(recipe: Recipe, *, on_event: Callable = lambda e: None) -> Run:
    """Create a run directory for `recipe`, save the resolved recipe, and train in a child process."""
    run = RunDir.create(recipe.output_dir, recipe.name)
    # Store absolute local paths so `--resume` works from any folder.
    data_path = Path(recipe.data.path).expanduser()
    if data_path.exists():
        recipe.data.path = str(data_path.resolve())
    model_path = Path(recipe.model).expanduser()
    if model_path.exists():
        recipe.model = str(model_path.resolve())
    atomic_write_text(run.recipe_path, recipe.to_yaml())
    return supervise(recipe, run, on_event=on_event)


def resume_run(run_dir: str | Path, *, on_event: Callable = lambda e: None) -> Run:
    """Continue a run from its latest complete checkpoint."""
    run = RunDir(run_dir)
    recipe = run.load_recipe()
    last = run.latest_checkpoint()
    if last is None:
        raise RunError(f"{run.path}: no complete checkpoint to resume from", hint="start it again with `mlxft train`; checkpoints are written every train.save_every steps")
    return supervise(recipe, run, resume_from=last, on_event=on_event)
