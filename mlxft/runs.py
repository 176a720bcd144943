"""The run directory: resolved recipe, metrics.jsonl, checkpoints and the adapter; atomic writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlxft.errors import RunError
from mlxft.events import event_from_dict, event_to_dict

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_open(path: Path, mode: str = "w"):
    """A file to stream into that appears at `path` only once it is complete (temp file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (so a write to one would destroy the other)."""
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: Path, final: Path) -> None:
    """Atomically put a fully written folder at `final` (replacing an older one)."""
    for f in tmp.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        path = cls.next_path(output_dir, name)
        path.mkdir()
        (path / "checkpoints").mkdir()
        return cls(path)

    recipe_path = property(lambda self: self.path / "recipe.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    adapter_dir = property(lambda self: self.path / "adapter")
    best_dir = property(lambda self: self.path / "best")
    stop_path = property(lambda self: self.path / "STOP")

    def request_stop(self) -> None:
        """Ask the run's training process to save a checkpoint and stop after its current step.

        A file rather than a signal, so any process can ask: `mlxft stop`, the TUI, or a script.
        """
        atomic_write_text(self.stop_path, f"stop requested by pid {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop_request(self) -> None:
        self.stop_path.unlink(missing_ok=True)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (state.json is written last), oldest first."""
        found = []
        if self.checkpoints_dir.is_dir():
            for p in self.checkpoints_dir.iterdir():
                m = CHECKPOINT_RE.match(p.name)
                if m and (p / "state.json").is_file():
                    found.append((int(m.group(1)), p))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1][1] if cps else None

    def load_recipe(self):
        from mlxft.recipe import load_recipe

        if not self.recipe_path.is_file():
            raise RunError(f"{self.path} is not an mlxft run directory (no recipe.yaml)", hint="pass the folder that `mlxft train` printed")
        return load_recipe(self.recipe_path)

    def raw_events(self) -> list[dict]:
        """Every metrics.jsonl line as a dict, with its `time` (a torn last line from a killed run is skipped)."""
        out = []
        if self.metrics_path.is_file():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def events(self) -> list:
        """Every event recorded so far, as event objects."""
        out = []
        for data in self.raw_events():
            try:
                event = event_from_dict(data)
            except TypeError:
                continue
            if event is not None:
                out.append(event)
        return out


class MetricsWriter:
    """Appends one JSON object per event to metrics.jsonl, flushed per event."""

    def __init__(self, path: Path):
        self._f = open(path, "a", encoding="utf-8")

    def write(self, event) -> None:
        self._f.write(json.dumps(event_to_dict(event)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


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
    status: str  # running | completed | stopped | early-stopped | failed | interrupted | starting
    model: str
    method: str
    step: int
    total_steps: int
    last_loss: float | None
    best_val_loss: float | None
    started: float  # unix time of the first event (or of the recipe file)
    pid: int = 0
    error: str | None = None

    @property
    def resumable(self) -> bool:
        return self.status in ("stopped", "failed", "interrupted") and RunDir(self.path).latest_checkpoint() is not None


def summarize_run(run: RunDir) -> RunSummary:
    """Status and progress of one run; a run whose training process is gone without a final event is `interrupted`."""
    from mlxft.events import EvalReport, RunFailed, RunFinished, RunStarted, StepReport

    raw_events = run.raw_events()
    started = raw_events[0].get("time", 0.0) if raw_events else (run.recipe_path.stat().st_mtime if run.recipe_path.exists() else 0.0)
    s = RunSummary(path=run.path, status="starting", model="", method="", step=0, total_steps=0, last_loss=None, best_val_loss=None, started=started)
    if not raw_events and run.recipe_path.is_file():
        try:
            r = run.load_recipe()
            s.model, s.method, s.total_steps = r.model, r.method, r.train.steps or 0
        except Exception:
            pass
    for data in raw_events:
        e = event_from_dict(data)
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
    if s.status == "running" and not process_alive(s.pid):
        s.status = "interrupted"
    elif s.status == "starting" and time.time() - started > 600:
        s.status = "interrupted"  # never reported a start: the process died while loading
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
    for path in (p for p in root.iterdir() if p.is_dir() and (p / "recipe.yaml").is_file()):
        metrics = RunDir(path).metrics_path
        stamp = (metrics.stat().st_size, metrics.stat().st_mtime_ns) if metrics.is_file() else None
        cached = cache.get(path) if cache is not None else None
        if cached is None or cached[0] != stamp or cached[1].status in ("running", "starting"):
            cached = (stamp, summarize_run(RunDir(path)))
            if cache is not None:
                cache[path] = cached
        runs.append(cached[1])
    return sorted(runs, key=lambda r: r.started, reverse=True)
