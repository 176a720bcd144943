"""The run directory: its layout (recipe, metrics.jsonl, checkpoints, best, the result, eval), its lock, its status."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_write_text
from mlxft.errors import RunError, write_error
from mlxft.events import event_from_dict, event_to_dict

# The layout of a run directory, which RunDir (and nothing else) spells out:
#   recipe.yaml  metrics.jsonl  README.md  model.json  STOP  .lock
#   checkpoints/step-NNNNNN/{<artifact>/, optimizer.safetensors, state.json}   best/   <artifact>/ (adapter/)   eval/
#   cache/  a job's one-off work on the starting model, read back on resume (DPO's reference log-probs, image features)
ADAPTER_DIR = "adapter"  # an LM job's artifact: the adapter folder in a run directory and in each checkpoint
CHECKPOINT_STATE = "state.json"  # the loop state, written last: a checkpoint is complete once it is there
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")
LOCK_NAME = ".lock"
# Names mlxft gives half-written things: atomic files and temp folders (mlxft.atomic), a best/ copy, a checkpoint being pruned.
TEMP_RE = re.compile(r"^\.(.+\.tmp-\d+(\.safetensors)?|(step-\d{6,}|best|adapter)\.[a-z0-9_]{8}|adapter-from-best|deleting-step-\d{6,})$")
OLD_RE = re.compile(r"^\.(.+)\.old-\d+$")  # publish_dir's previous copy, kept until the new one is in place


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read whole (header, JSON, every tensor inside the file), or None.

    Reads the header only: cheap enough to check every file of a checkpoint before trusting it.
    """
    from mlxft.errors import BrokenFileError
    from mlxft.llm.model_files import check_safetensors

    try:
        check_safetensors(path, path.name)
    except BrokenFileError as exc:
        return exc.reason
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (missing or torn files), or None when it looks whole."""
    state = folder / CHECKPOINT_STATE
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no state.json (it was never finished)"
    except (OSError, ValueError, UnicodeDecodeError):
        return "state.json is unreadable or not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        return "state.json has no step"
    weights = sorted(folder.rglob("*.safetensors"))
    if not weights:
        return "no weights (.safetensors) in it"
    for w in weights:
        problem = safetensors_problem(w)
        if problem:
            return str(w.relative_to(folder).parent / problem) if w.parent != folder else problem
    for j in folder.rglob("*.json"):
        if j == state:
            continue
        try:
            json.loads(j.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return f"{j.relative_to(folder)} is unreadable or not JSON"
    return None


def _read_holder(fd: int) -> dict | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {holder.get('pid')}{where} since {since}"


class RunDir:
    """One training run on disk. Everything the TUI or CLI shows can be rebuilt from here."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def next_path(output_dir: str | Path, name: str | None) -> Path:
        """Where `create` would put a run now: output_dir/name, or name-2, name-3... when taken."""
        root = Path(output_dir)
        base = name or time.strftime("run-%Y%m%d-%H%M%S")
        path, n = root / base, 1
        while path.exists():  # never reuse (and so never overwrite) an existing run
            n += 1
            path = root / f"{base}-{n}"
        return path

    @classmethod
    def create(cls, output_dir: str | Path, name: str | None) -> "RunDir":
        """Make a new run folder; the name is claimed by mkdir, which only one process can win, so racing starts never share one."""
        root = Path(output_dir)
        base = name or time.strftime("run-%Y%m%d-%H%M%S")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 100_000):
                path = root / (base if n == 1 else f"{base}-{n}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                run = cls(path)
                run.checkpoints_dir.mkdir()
                return run
        except OSError as exc:
            raise write_error(exc, root, "create the run directory") from None
        raise RunError(f"{root}: every name {base}, {base}-2 ... {base}-99999 is taken", hint="choose another name or output_dir")

    @classmethod
    def containing(cls, path: str | Path) -> "RunDir | None":
        """The run a path belongs to: the run directory itself, or one of its artifact folders (RUN/adapter, RUN/best)."""
        path = Path(path)
        for candidate in (cls(path), cls(path.parent)):
            if candidate.recipe_path.is_file() and candidate.metrics_path.is_file():
                return candidate
        return None

    recipe_path = property(lambda self: self.path / "recipe.yaml")  # the resolved recipe
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    readme_path = property(lambda self: self.path / "README.md")  # how to use, load and resume the result
    model_json_path = property(lambda self: self.path / "model.json")  # the base model: its name and the folder it loaded from
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / ADAPTER_DIR)
    best_dir = property(lambda self: self.path / "best")  # the best evaluation's weights, under train.keep_best
    eval_dir = property(lambda self: self.path / "eval")  # where `mlxft eval` of the run's adapter writes by default

    def cache_path(self, name: str) -> Path:
        """A file of the job's cache (computed once before training, read back on resume); its folder exists."""
        folder = self.path / "cache"
        folder.mkdir(exist_ok=True)
        return folder / name

    def read_cache(self, name: str, fingerprint: str, what: str) -> tuple[dict | None, str | None]:
        """(numpy arrays, None) when cache/NAME holds what was computed for `fingerprint`; else (None, why not, or None if absent)."""
        import numpy as np

        from mlxft.llm.model_files import load_safetensors_checked

        path = self.cache_path(name)
        if not path.is_file():
            return None, None
        arrays = load_safetensors_checked(path, what, hint="delete it: the next run computes it again")
        with open(path, "rb") as f:
            meta = json.loads(f.read(int.from_bytes(f.read(8), "little"))).get("__metadata__") or {}
        if meta.get("fingerprint") != fingerprint:
            return None, f"{path.name} was computed for other data, settings or model: computing it again"
        return {k: np.array(v) for k, v in arrays.items()}, None

    def write_cache(self, name: str, arrays: dict, fingerprint: str, what: str) -> None:
        """Write cache/NAME (numpy arrays) atomically, stamped with the fingerprint `read_cache` checks."""
        import mlx.core as mx

        from mlxft.atomic import atomic_save_safetensors

        path = self.cache_path(name)
        try:
            atomic_save_safetensors(path, {k: mx.array(v) for k, v in arrays.items()}, metadata={"fingerprint": fingerprint})
        except (OSError, RuntimeError) as exc:
            raise write_error(exc, path, f"write {what}") from None
    stop_path = property(lambda self: self.path / "STOP")

    def result_dir(self, artifact: str) -> Path:
        """Where a job saves its result: RUN/<artifact> (an LM job's artifact is ADAPTER_DIR)."""
        return self.path / artifact

    def best_copy_dir(self, artifact: str) -> Path:
        """The temp copy of best/ that becomes RUN/<artifact> (a leftover is cleaned by `remove_leftovers`)."""
        return self.path / f".{artifact}-from-best"

    def request_stop(self) -> None:
        """Ask the run's training process to save a checkpoint and stop after its current step.

        A file rather than a signal, so any process can ask: `mlxft stop`, the TUI, or a script.
        """
        atomic_write_text(self.stop_path, f"stop requested by pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop_request(self) -> None:
        self.stop_path.unlink(missing_ok=True)

    lock_path = property(lambda self: self.path / LOCK_NAME)

    def acquire_lock(self, wait_s: float = 3.0) -> int:
        """Become the run's one writer: an exclusive OS lock on RUN/.lock, released by the kernel when this process ends.

        Returns the lock's file descriptor; keep it open for as long as the run is written. A short wait
        covers a reader that is probing the lock at that moment.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(exc, self.lock_path, "lock the run directory") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise self._locked_error(holder) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time(), "host": socket.gethostname()}).encode(), 0)
        return fd

    def refuse_if_locked(self) -> None:
        """Raise the "already being trained by pid N since ..." error when a live process holds the run."""
        holder = self.lock_holder()
        if holder is not None:
            raise self._locked_error(holder)

    def _locked_error(self, holder: dict | None) -> RunError:
        return RunError(f"{self.path} is already being trained by {_describe_holder(holder)}",
                        hint=f"one process writes a run at a time: wait for it to finish, or `mlxft stop {self.path}`")

    def lock_holder(self) -> dict | None:
        """Who holds the run's lock now ({pid, since, host}), or None when no live process does."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd) or {"pid": 0, "since": 0.0}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def remove_leftovers(self) -> list[str]:
        """Delete what a killed writer left half-done: temp files and folders mlxft names, checkpoints without state.json.

        Only the lock holder calls this, only inside this run directory, and only for names mlxft writes.
        Returns what was removed (relative paths) so the caller can say so.
        """
        removed = []
        for folder in (self.path, self.checkpoints_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if p.name == LOCK_NAME:
                    continue
                m = OLD_RE.match(p.name)
                if m and not (folder / m.group(1)).exists():
                    os.replace(p, folder / m.group(1))  # killed between the two renames of publish_dir: the old copy is the real one
                    continue
                if m:  # the new copy made it: the old one is garbage
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    removed.append(str(p.relative_to(self.path)))
                    continue
                if TEMP_RE.match(p.name) or (folder == self.checkpoints_dir and CHECKPOINT_RE.match(p.name) and not (p / CHECKPOINT_STATE).is_file()):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    removed.append(str(p.relative_to(self.path)))
        return removed

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def set_aside(self, checkpoint: Path) -> Path:
        """Move a checkpoint that cannot be used out of the way (as corrupt-step-N, kept for a post-mortem); returns where."""
        aside = checkpoint.with_name(f"corrupt-{checkpoint.name}")
        os.replace(checkpoint, aside)
        return aside

    @staticmethod
    def remove_checkpoint(checkpoint: Path) -> None:
        """Rename first, then delete: a kill midway leaves a `.deleting-` folder (cleaned on the next start), never a half step-N."""
        doomed = checkpoint.with_name(f".deleting-{checkpoint.name}")
        os.replace(checkpoint, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (state.json is written last), oldest first."""
        found = []
        if self.checkpoints_dir.is_dir():
            for p in self.checkpoints_dir.iterdir():
                m = CHECKPOINT_RE.match(p.name)
                if m and (p / CHECKPOINT_STATE).is_file():
                    found.append((int(m.group(1)), p))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that passes `checkpoint_problem` (a torn or truncated one is passed over)."""
        for _, path in reversed(self.checkpoints()):
            if checkpoint_problem(path) is None:
                return path
        return None

    def skipped_checkpoints(self) -> list[tuple[Path, str]]:
        """Checkpoints newer than `latest_checkpoint` that cannot be used, with why."""
        out = []
        for _, path in reversed(self.checkpoints()):
            problem = checkpoint_problem(path)
            if problem is None:
                break
            out.append((path, problem))
        return out

    def load_recipe(self):
        from mlxft.recipe import load_recipe

        if not self.recipe_path.is_file():
            raise RunError(f"{self.path} is not an mlxft run directory (no recipe.yaml)", hint="pass the folder that `mlxft train` printed")
        return load_recipe(self.recipe_path)

    def raw_events(self, problems: list[str] | None = None) -> list[dict]:
        """Every readable metrics.jsonl line as a dict, with its `time`.

        A line that is not a JSON object (a torn last line from a killed run, an edit by hand) is skipped,
        and named in `problems` when a list is given, so one bad line never hides the rest of the run.
        """
        out = []
        if not self.metrics_path.is_file():
            return out
        with open(self.metrics_path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    data = None
                if not isinstance(data, dict):
                    if not line.endswith("\n"):
                        continue  # the last line, still being written or torn by a kill: the next writer ends it
                    if problems is not None:
                        problems.append(f"{self.metrics_path}:{n}: not a JSON object, skipped")
                    continue
                data["_line"] = n
                out.append(data)
        return out

    def events(self, problems: list[str] | None = None) -> list:
        """Every event recorded so far, as event objects (lines that do not make an event are skipped and named)."""
        return self.events_from(self.raw_events(problems), problems)

    def events_from(self, raw_events: list[dict], problems: list[str] | None = None) -> list:
        """The event objects of lines already read by `raw_events`."""
        out = []
        for data in raw_events:
            try:
                event = event_from_dict(data)
            except ValueError as exc:
                if problems is not None:
                    problems.append(f"{self.metrics_path}:{data['_line']}: {exc}, skipped")
                continue
            if event is not None:
                out.append(event)
        return out


class MetricsWriter:
    """Appends one JSON line per event to metrics.jsonl; a line is on disk whole or not at all."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            end = os.lseek(self._fd, 0, os.SEEK_END)
            with open(self.path, "rb") as f:
                torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
            if torn:
                os.write(self._fd, b"\n")  # a killed writer left a torn line: end it, so the next event is a line of its own
        except OSError as exc:
            raise write_error(exc, self.path, "write the run's metrics") from None

    def write(self, event) -> None:
        line = (json.dumps(event_to_dict(event)) + "\n").encode("utf-8")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)  # take back the part that made it, so no torn line is left
            except OSError:
                pass
            raise write_error(exc, self.path, "write the run's metrics") from None

    def close(self) -> None:
        os.close(self._fd)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


@dataclass
class RunSummary:
    """What a list of runs shows, rebuilt from the run directory alone (so headless runs appear too)."""

    path: Path
    status: str  # running | starting | completed | stopped | early-stopped | failed | interrupted | unreadable
    model: str
    method: str
    step: int
    total_steps: int
    last_loss: float | None
    best_val_loss: float | None
    started: float  # unix time of the first event (or of the recipe file)
    pid: int = 0
    error: str | None = None
    problems: list[str] = field(default_factory=list)  # metrics.jsonl lines that were skipped, and why

    @property
    def resumable(self) -> bool:
        return self.status in ("stopped", "failed", "interrupted") and RunDir(self.path).latest_checkpoint() is not None


STARTUP_GRACE_S = 120.0  # a run with a recipe but no lock and no event yet may still be booting its process


def summarize_run(run: RunDir) -> RunSummary:
    """Status and progress of one run.

    A run is `running` only while a process holds its lock (the kernel releases it the instant that
    process dies, however it dies), so a killed run never shows as running. Runs written before the
    lock existed fall back to asking whether their pid is alive.
    """
    from mlxft.events import EvalReport, RunFailed, RunFinished, RunStarted, StepReport

    problems: list[str] = []
    raw_events = run.raw_events(problems)
    recipe_time = run.recipe_path.stat().st_mtime if run.recipe_path.exists() else 0.0
    started = raw_events[0].get("time", recipe_time) if raw_events else recipe_time
    if not isinstance(started, (int, float)):
        started = recipe_time
    s = RunSummary(path=run.path, status="starting", model="", method="", step=0, total_steps=0, last_loss=None, best_val_loss=None, started=started)
    if run.recipe_path.is_file():
        try:
            r = run.load_recipe()
            s.model, s.method, s.total_steps = r.model, r.method, r.train.steps or 0
        except Exception as exc:  # a broken recipe.yaml must not hide the run: list it, say why
            problems.append(f"{run.recipe_path}: {getattr(exc, 'message', exc)}".splitlines()[0])
    for e in run.events_from(raw_events, problems):
        if isinstance(e, RunStarted):
            s.status, s.model, s.method, s.total_steps, s.pid, s.error = "running", e.model, e.method, e.total_steps, e.pid, None
            s.step = max(s.step, e.resumed_from_step)
        elif isinstance(e, StepReport):
            s.step, s.last_loss = e.step, e.loss
        elif isinstance(e, EvalReport):
            s.best_val_loss = e.best_val_loss
        elif isinstance(e, RunFinished):
            s.status, s.step = e.status, e.step
            if e.best_val_loss is not None:
                s.best_val_loss = e.best_val_loss
        elif isinstance(e, RunFailed):
            s.status, s.error = "failed", e.error.splitlines()[0] if e.error else None
    s.problems = problems
    holder = run.lock_holder()
    if holder is not None:
        if s.status not in ("running", "starting"):
            s.status = "starting"  # a resume that is still loading: the old final event is history
        s.pid = holder.get("pid") or s.pid
    elif s.status in ("running", "starting"):
        if run.lock_path.exists():
            s.status = "interrupted"  # its writer is gone without a final event
        elif s.status == "running" and not process_alive(s.pid):
            s.status = "interrupted"  # a run from before the lock: its pid is gone
        elif s.status == "starting" and time.time() - recipe_time > STARTUP_GRACE_S:
            s.status = "interrupted"  # never reported a start and nothing holds it: the process died while loading
    return s


def list_runs(root: str | Path, cache: dict | None = None) -> list[RunSummary]:
    """Every run directory under `root` (one level), newest first.

    With a `cache` dict (kept by a caller that lists repeatedly, e.g. the TUI), a run's metrics.jsonl is
    read again only when its size or mtime changed, or while it is running (its process may be gone).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for path in (p for p in root.iterdir() if p.is_dir() and RunDir(p).recipe_path.is_file()):
        metrics = RunDir(path).metrics_path
        stamp = (metrics.stat().st_size, metrics.stat().st_mtime_ns) if metrics.is_file() else None
        cached = cache.get(path) if cache is not None else None
        if cached is None or cached[0] != stamp or cached[1].status in ("running", "starting"):
            cached = (stamp, _summarize_or_say_why(RunDir(path)))
            if cache is not None:
                cache[path] = cached
        runs.append(cached[1])
    return sorted(runs, key=lambda r: r.started, reverse=True)


def _summarize_or_say_why(run: RunDir) -> RunSummary:
    """One unreadable run (permissions, a broken file) is listed as such; it never hides the others."""
    try:
        return summarize_run(run)
    except Exception as exc:
        mtime = run.path.stat().st_mtime if run.path.exists() else 0.0
        return RunSummary(path=run.path, status="unreadable", model="", method="", step=0, total_steps=0, last_loss=None,
                          best_val_loss=None, started=mtime, error=f"{type(exc).__name__}: {exc}", problems=[f"{run.path}: cannot be read ({exc})"])
