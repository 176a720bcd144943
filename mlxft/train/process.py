"""Training in a spawned child process, supervised by the caller: events over a pipe, clean stop, crash reports.

Two facts force the child: MLX work on a non-main thread can abort the interpreter at exit, and
running out of unified memory on Metal kills the process instead of raising. The supervisor
survives both and says what happened, with the last checkpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlxft.atomic import atomic_write_text
from mlxft.distributed import loopback_hostfile, rank_environment
from mlxft.errors import MlxftError, RunError, write_error
from mlxft.events import LogMessage, RunFailed, RunFinished, StepReport, event_from_dict, event_to_dict
from mlxft.recipe import Recipe
from mlxft.runs import MetricsWriter, RunDir


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
        return RunDir(self.path).adapter_dir

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "stopped", "early-stopped")


def _child_main(recipe_data: dict, run_dir: str, resume: bool, conn, stop_event) -> None:
    """Entry point of the training process (imports mlxft first, so the fast BLAS is preloaded)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which asks us to stop
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the supervisor while we booted
    import mlxft  # noqa: F401  (BLAS preload before mlx.core)
    from mlxft.distributed import current_world
    from mlxft.recipe import Recipe
    from mlxft.train.run import run_job
    from mlxft.train.loop import DivergedError, LoopHooks

    run = RunDir(run_dir)

    def send(event) -> None:
        try:
            conn.send(event_to_dict(event))
        except (BrokenPipeError, OSError):
            pass  # the supervisor is gone (e.g. the TUI quit and left us running): keep training

    try:
        lock = run.acquire_lock()  # before writing anything: one writer per run directory
        writer = MetricsWriter(run.metrics_path)
    except MlxftError as exc:
        send(RunFailed(step=0, error=exc.message, hint=exc.hint, last_checkpoint=None))  # not ours to record in the run
        conn.close()
        os._exit(LOCK_REFUSED)

    reached = {"step": 0}  # the last step reported, for a failure report

    def emit(event) -> None:
        if isinstance(event, StepReport):
            reached["step"] = event.step
        send(event)  # first, so the supervisor hears it even when the disk is full
        writer.write(event)

    def fail(message: str, hint: str | None, resumable: bool = True) -> None:
        last = run.latest_checkpoint()
        if last is not None:
            more = f"`mlxft train --resume {run.path}` continues from it" if resumable else "a new run must change the recipe, so it is kept for reference"
            hint = (hint + "; " if hint else "") + f"the last good checkpoint is {last.name}: {more}"
        event = RunFailed(step=reached["step"], error=message, hint=hint, last_checkpoint=str(last) if last else None)
        send(event)
        try:
            writer.write(event)
        except MlxftError:
            pass  # the disk that failed us may not take this line either; the supervisor heard it

    hooks = LoopHooks(emit=emit, should_stop=lambda: stop_event.is_set() or run.stop_requested())
    code = 0
    try:
        removed = run.remove_leftovers()
        if removed:
            emit(LogMessage("info", f"removed what an earlier, killed process left half-written: {', '.join(removed)}"))
        recipe = Recipe.model_validate(recipe_data)
        world = current_world()  # rank 0 of --ranks N (from the environment the supervisor set), or a world of one
        finished = run_job(recipe, run.path, hooks, resume=resume, world=world)
        emit(finished)
    except MlxftError as exc:
        fail(exc.message, exc.hint, resumable=not isinstance(exc, DivergedError))
        code = 1
    except MemoryError:
        fail("out of memory", "try `mlxft plan`, QLoRA, a smaller batch_size or max_seq_length, or grad_checkpoint")
        code = 1
    except Exception as exc:  # an engine bug: report it with its traceback rather than a bare exit code
        fail(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", "this is a bug in mlxft; please report it with the run directory")
        code = 1
    finally:
        run.clear_stop_request()  # honoured (or moot): a later resume must not stop at once
        writer.close()
        conn.close()
        os.close(lock)
    os._exit(code)  # skip interpreter teardown: MLX's exit-time cleanup has nothing left to do


LOCK_REFUSED = 3  # the child's exit code when another process holds the run's lock


def _rank_main(recipe_data: dict, run_dir: str, resume: bool, stop_event) -> None:
    """Entry point of a data-parallel rank other than 0: the same job on its shard, writing nothing to the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import mlxft  # noqa: F401  (BLAS preload before mlx.core)
    from mlxft.distributed import current_world
    from mlxft.recipe import Recipe
    from mlxft.train.loop import LoopHooks
    from mlxft.train.run import run_job

    run = RunDir(run_dir)
    code, rank = 0, "?"
    try:
        world = current_world()
        rank = world.rank
        hooks = LoopHooks(should_stop=lambda: stop_event.is_set() or run.stop_requested())
        run_job(Recipe.model_validate(recipe_data), run.path, hooks, resume=resume, world=world)
    except MlxftError as exc:
        print(f"mlxft rank {rank}: {exc.message}", file=sys.stderr, flush=True)
        code = 1
    except Exception as exc:  # noqa: BLE001  (rank 0 reports the run; this rank says why it stopped)
        print(f"mlxft rank {rank}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        code = 1
    os._exit(code)


@contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set, for a spawned child to inherit at start."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rank_threads(ranks: int) -> int | None:
    """Each local rank's share of the BLAS threads (the cores divided among the ranks); None for one rank."""
    if ranks == 1:
        return None
    return max(1, (os.cpu_count() or ranks) // ranks)


def _describe_exit(code: int | None) -> tuple[str, str]:
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            return f"the training process was killed ({sig})", "most often the system ran out of memory: try `mlxft plan`, QLoRA, a smaller batch or grad_checkpoint"
        return f"the training process died with {sig}", "see the log above"
    return f"the training process exited with code {code} without reporting why", "see the log above"


def _describe_lost_rank(rank: int, code: int, ranks: int) -> tuple[str, str]:
    what, hint = _describe_exit(code)
    return what.replace("the training process", f"rank {rank} of {ranks}") + "; the other ranks were stopped", hint


def _record_event(run: RunDir, event) -> None:
    """Write what only the supervisor saw (a death, a tracker's warning) into metrics.jsonl, so `mlxft runs`, the TUI and a later resume agree.

    Taken under the run's lock, so a run that another process has resumed meanwhile is left alone.
    """
    try:
        lock = run.acquire_lock(wait_s=0.5)
    except MlxftError:
        return
    try:
        writer = MetricsWriter(run.metrics_path)
        try:
            writer.write(event)
        finally:
            writer.close()
    except MlxftError:
        pass  # a full or read-only disk: the supervisor still reports the death on the terminal
    finally:
        os.close(lock)


def _append_event(run: RunDir, event) -> None:
    """Add a line to metrics.jsonl while the child (which holds the lock) writes it too: one O_APPEND write of a whole line."""
    try:
        writer = MetricsWriter(run.metrics_path)
        try:
            writer.write(event)
        finally:
            writer.close()
    except MlxftError:
        pass  # a full or read-only disk: the child's own writes say so


def supervise(recipe: Recipe, run: RunDir, *, resume: bool = False, on_event: Callable = lambda e: None, poll_s: float = 0.2, ranks: int = 1) -> Run:
    """Start the child, forward its events to `on_event` and the tracking sink, stop it cleanly on Ctrl-C, and report how it ended.

    Ctrl-C is taken by a handler rather than as KeyboardInterrupt, so it can arrive at any moment (even
    while the child is being spawned) without a traceback: the first asks for a checkpoint and a stop,
    the second terminates the child. The sink (mlxft.tracking: MLflow, or a null sink) sees every event here,
    in the supervisor; what it has to say (one warning when it fails) goes into the run's log.
    """
    from mlxft.tracking import open_sink

    run.refuse_if_locked()  # a second trainer on the same run is told who holds it, before anything starts
    sink = open_sink(recipe, run, resume=resume)  # a recipe asking for MLflow without mlflow installed stops here
    run.clear_stop_request()  # an old request must not stop the run we are starting
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    proc = ctx.Process(
        target=_child_main, args=(recipe.to_dict(), str(run.path), resume, send, stop),
        name=f"mlxft-train-{run.path.name}",
    )
    # Data-parallel: ranks 1..N-1 beside rank 0 (the child above), joined by MLX's ring backend over loopback.
    peers = [ctx.Process(target=_rank_main, args=(recipe.to_dict(), str(run.path), resume, stop), name=f"mlxft-rank{r}-{run.path.name}")
             for r in range(1, ranks)]
    world_dir = Path(tempfile.mkdtemp(prefix="mlxft-ranks-")) if ranks > 1 else None
    hostfile = str(world_dir / "hosts.json") if world_dir else ""
    if world_dir:
        loopback_hostfile(hostfile, ranks)
    interrupts = 0
    lost = None  # (rank, exit code) of a peer rank that died

    def interrupt(*_) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            stop.set()
            on_event(None)  # lets the caller print "stopping after this step..."
        elif proc.pid is not None:
            proc.terminate()

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if in_main else None
    try:
        # The child inherits a blocked SIGINT, so a Ctrl-C while it boots cannot raise inside its start-up.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for r, p in enumerate([proc, *peers]):
                with _environment(rank_environment(r, ranks, hostfile, _rank_threads(ranks)) if ranks > 1 else {}):
                    p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        send.close()
        result = Run(path=run.path, status="running")
        while True:
            if recv.poll(poll_s):
                try:
                    event = event_from_dict(recv.recv())
                except EOFError:  # the child closed its end: it finished, failed or was killed
                    break
                if event is not None:
                    result.events.append(event)
                    on_event(event)
                    sink.event(event)
            elif not proc.is_alive():
                break
            lost = lost or next(((r, p.exitcode) for r, p in enumerate(peers, 1) if p.exitcode not in (None, 0)), None)
            if lost:  # rank 0 would wait for it forever in the next all_sum
                proc.terminate()
                break
            for note in sink.warnings():
                _append_event(run, note)
                on_event(note)
        proc.join()
    finally:
        # a peer that died first explains rank 0's end, whatever rank 0 said (its next all_sum fails or waits)
        lost = lost or next(((r, p.exitcode) for r, p in enumerate(peers, 1) if p.pid is not None and p.exitcode not in (None, 0)), None)
        for p in peers:  # a rank left waiting for rank 0 in a collective has nothing more to do
            if p.pid is not None:
                p.join(timeout=5.0 if proc.exitcode == 0 else 0.5)
                if p.is_alive():
                    p.terminate()
                    p.join()
        if world_dir:
            shutil.rmtree(world_dir, ignore_errors=True)
        if in_main:
            signal.signal(signal.SIGINT, previous)
    last = run.latest_checkpoint()
    result.last_checkpoint = str(last) if last else None
    final = next((e for e in reversed(result.events) if isinstance(e, (RunFinished, RunFailed))), None)
    if isinstance(final, RunFinished):
        result.status = final.status
    elif isinstance(final, RunFailed):
        result.status, result.error, result.hint = "failed", final.error, final.hint
        if lost is not None:
            what, hint = _describe_lost_rank(*lost, ranks)
            result.error, result.hint = what, hint + (f"; {final.hint}" if final.hint else "")
    else:
        result.status = "died"
        result.error, result.hint = _describe_exit(proc.exitcode) if lost is None else _describe_lost_rank(*lost, ranks)
        step = max((e.step for e in result.events if isinstance(e, StepReport)), default=0)
        _record_event(run, RunFailed(step=step, error=result.error, hint=result.hint, last_checkpoint=result.last_checkpoint))
    for note in sink.close(result.status):
        if note.level == "warning":
            _record_event(run, note)
        on_event(note)
    return result


# The kinds a world of several ranks trains: their jobs keep no per-process cache in the run directory.
PARALLEL_KINDS = ("lm-lora", "lm-qlora", "lm-dora", "lm-full", "lm-classify")


# `mlxft train` without --ranks on MLX's CPU backend: two processes. MLX's CPU kernels outside BLAS run on one core, so a
# second rank uses the core one process leaves idle (benchmarks/train.py, SmolLM2-135M on 2 cores: 1.32x one process).
AUTO_CPU_RANKS = 2
RANKS_ENV = "MLXFT_RANKS"  # pins the default (e.g. 1), as --ranks does for one command


def auto_ranks(recipe: Recipe, data=None, available: int | None = None) -> tuple[int, str]:
    """The number of processes `mlxft train` uses when --ranks is not given, and why (one line for the user).

    On a GPU one process (the device does the work); on MLX's CPU backend AUTO_CPU_RANKS when the kind trains
    data-parallel, the batch splits, the machine has the cores and the memory plan says that many ranks fit.
    `data`: the train split's measured lengths when the caller has them (else measured only if the ceiling does not fit);
    `available`: the memory to judge against (default: the machine's, as every plan).
    """
    pinned = os.environ.get(RANKS_ENV, "").strip()
    if pinned:
        try:
            ranks = int(pinned)
        except ValueError:
            raise RunError(f"{RANKS_ENV}={pinned!r}: give a whole number of processes", hint=f"unset {RANKS_ENV}, or set it to 1 or more") from None
        return ranks, f"{ranks} rank(s) from {RANKS_ENV}"
    from mlxft.backend import default_device_is_gpu

    n = AUTO_CPU_RANKS
    if default_device_is_gpu():
        return 1, "one process: the GPU does the work"
    if recipe.kind not in PARALLEL_KINDS:
        return 1, f"one process: {recipe.kind} trains in one"
    if recipe.train.batch_size < n:
        return 1, f"one process: train.batch_size {recipe.train.batch_size} does not split over {n} ranks"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < n:
        return 1, f"one process: {cores} CPU core(s)"
    fits = _ranks_fit(recipe, n, data, available)
    if fits is not True:
        return 1, f"one process: {fits}"
    return n, f"{n} data-parallel ranks on this CPU (MLX's CPU kernels outside BLAS use one core each; --ranks 1 for one process)"


def _ranks_fit(recipe: Recipe, ranks: int, data=None, available: int | None = None) -> bool | str:
    """True when the memory plan says `ranks` processes fit here; else why not (unknown sizes count as not fitting)."""
    from mlxft.llm.batch_shapes import measure_train_lengths
    from mlxft.llm.catalogue import config_at_hand
    from mlxft.llm.memory import plan_memory

    try:
        config = config_at_hand(recipe.model)
        if config is None:
            return f"the model's size is not known before it loads, so {ranks} copies of it are not planned"
        plan = plan_memory(recipe, config, available, data, ranks=ranks)
        if plan.verdict != "fits" and data is None:  # the ceiling (batch_size x max_seq_length); the data's batches may be smaller
            plan = plan_memory(recipe, config, plan.available, measure_train_lengths(recipe), ranks=ranks)
    except (MlxftError, TypeError, ValueError):
        return f"the memory of {ranks} ranks could not be planned"
    if plan.verdict != "fits":
        return f"{ranks} ranks would need ~{plan.total / 1e9:.1f} GB of {plan.available / 1e9:.1f} GB ({plan.verdict})"
    return True


def check_ranks(recipe: Recipe, ranks: int) -> None:
    """Refuse a data-parallel world the recipe cannot use, before anything starts."""
    if ranks < 1:
        raise RunError(f"--ranks {ranks}: give 1 or more processes")
    if ranks == 1:
        return
    if recipe.kind not in PARALLEL_KINDS:
        raise RunError(f"--ranks {ranks}: data-parallel training runs {', '.join(PARALLEL_KINDS)}, and this recipe's kind is {recipe.kind}",
                       hint="train it in one process (drop --ranks)")
    if recipe.train.batch_size < ranks:
        raise RunError(f"--ranks {ranks}: every rank computes part of each batch, and train.batch_size is {recipe.train.batch_size}",
                       hint=f"set train.batch_size to at least {ranks}, or use fewer ranks")


def start_run(recipe: Recipe, *, on_event: Callable = lambda e: None, ranks: int = 1) -> Run:
    """Create a run directory for `recipe`, save the resolved recipe, and train in a child process (or `ranks` of them)."""
    check_ranks(recipe, ranks)
    from mlxft.tracking import URI_ENV, check_tracking, tracking_uri

    check_tracking(recipe)  # before a run directory exists
    mlflow = recipe.tracking.mlflow
    if mlflow is not None and (mlflow.uri is not None or not os.environ.get(URI_ENV)):
        mlflow.uri = tracking_uri(mlflow)  # a sqlite path made absolute, like the data's, so a resume from elsewhere logs to the same store
    run = RunDir.create(recipe.output_dir, recipe.name)
    # Store absolute local paths so `--resume` works from any folder.
    data_path = Path(recipe.data.path).expanduser()
    if data_path.exists():
        recipe.data.path = str(data_path.resolve())
    model_path = Path(recipe.model).expanduser()
    if model_path.exists():
        recipe.model = str(model_path.resolve())
    try:
        try:
            atomic_write_text(run.recipe_path, recipe.to_yaml())
        except OSError as exc:
            raise write_error(exc, run.recipe_path, "save the run's recipe") from None
        return supervise(recipe, run, on_event=on_event, ranks=ranks)
    except KeyboardInterrupt:
        # Ctrl-C before the supervisor took over: the run says so, instead of `starting` until it times out.
        _record_event(run, RunFailed(step=0, error="stopped by Ctrl-C before training started", hint="start it again with `mlxft train`", last_checkpoint=None))
        raise


def run_peer(recipe: Recipe, run_dir: str | Path | None, resume: bool) -> int:
    """This process is rank 1+ of a world that `mlx.launch` started (e.g. across Macs): train its shards in a child, write nothing.

    Rank 0 (started the same way, on its own host) writes the run; a resume takes rank 0's state over the ring, so this
    host needs the recipe's model and data at the same paths, not the run's checkpoints.
    """
    ctx = mp.get_context("spawn")
    scratch = Path(tempfile.mkdtemp(prefix="mlxft-peer-"))
    stop = ctx.Event()
    proc = ctx.Process(target=_rank_main, args=(recipe.to_dict(), str(run_dir or scratch), resume, stop), name="mlxft-rank")
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set()) if in_main else None
    try:
        proc.start()
        proc.join()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if proc.exitcode == 0 else 1


def resume_run(run_dir: str | Path, *, on_event: Callable = lambda e: None, ranks: int = 1) -> Run:
    """Continue a run from its latest complete checkpoint (the training process checks it again under the lock)."""
    run = RunDir(run_dir)
    recipe = run.load_recipe()
    check_ranks(recipe, ranks)
    if run.latest_checkpoint() is None:
        skipped = "; ".join(f"{p.name}: {why}" for p, why in run.skipped_checkpoints())
        raise RunError(f"{run.path}: no complete checkpoint to resume from" + (f" (unusable: {skipped})" if skipped else ""),
                       hint="start it again with `mlxft train`; checkpoints are written every train.save_every steps")
    return supervise(recipe, run, resume=True, on_event=on_event, ranks=ranks)
