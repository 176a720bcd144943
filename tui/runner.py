"""The one module that knows both the engine and Textual's world: engine work runs in child processes.

The UI never runs MLX itself (MLX on a non-main thread can abort the interpreter, and out-of-memory
on Metal kills the process). Training is `mlxft train` in its own session, writing to its run
directory; the UI follows `metrics.jsonl`, so a run started in another terminal looks the same.
Evaluation and chat are `mlxft` commands whose output streams back over a pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlxft.events import event_from_dict
from mlxft.runs import RunDir


def mlxft_argv(*args: str) -> list[str]:
    """The command line of a headless `mlxft` command, with this interpreter (so the same install runs it)."""
    return [sys.executable, "-m", "mlxft", *args]


def logs_dir() -> Path:
    root = Path(os.environ.get("MLXFT_CACHE", Path.home() / ".cache" / "mlxft")) / "tui"
    root.mkdir(parents=True, exist_ok=True)
    return root


class MetricsFollower:
    """Reads the lines appended to a run's metrics.jsonl since the last call (a torn last line waits)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # replaced by a shorter file: start over
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        return out

    def poll_events(self) -> list:
        return [e for e in (event_from_dict(d) for d in self.poll()) if e is not None]


class TrainProcess:
    """A `mlxft train` started by the UI: its own session (closing the UI does not kill it), output to a log file."""

    def __init__(self, popen: subprocess.Popen, run_path: Path, log_path: Path):
        self.popen, self.run_path, self.log_path = popen, Path(run_path), Path(log_path)
        self.started = time.time()
        self.recipe_path: Path | None = None  # the recipe file `start` wrote and trains (None: a resume)

    @classmethod
    def start(cls, recipe_yaml: str, run_path: Path) -> "TrainProcess":
        """Train a recipe whose `output_dir`/`name` make `run_path` (see `RunDir.next_path`)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        recipe_file = logs_dir() / f"{run_path.name}-{stamp}.yaml"
        recipe_file.write_text(recipe_yaml, encoding="utf-8")
        proc = cls._spawn(mlxft_argv("train", str(recipe_file)), run_path, logs_dir() / f"{run_path.name}-{stamp}.log")
        proc.recipe_path = recipe_file
        return proc

    @classmethod
    def resume(cls, run_path: Path) -> "TrainProcess":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls._spawn(mlxft_argv("train", "--resume", str(run_path)), run_path, logs_dir() / f"{Path(run_path).name}-resume-{stamp}.log")

    @classmethod
    def _spawn(cls, argv: list[str], run_path: Path, log_path: Path) -> "TrainProcess":
        log = open(log_path, "wb")
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd())
        finally:
            log.close()  # the child holds its own descriptor
        return cls(popen, run_path, log_path)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stop(self) -> None:
        """Save a checkpoint and stop after the current step (the same request `mlxft stop` makes)."""
        if RunDir(self.run_path).recipe_path.is_file():
            RunDir(self.run_path).request_stop()
        if self.running:
            try:
                self.popen.send_signal(signal.SIGINT)  # the supervisor turns this into a clean stop, even while loading
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_run_dir(run_path: Path) -> None:
    """Stop a run this UI did not start (attached): the stop file is read by its training process."""
    RunDir(run_path).request_stop()


INTERRUPT_GRACE_S = 15.0  # a command asked to stop with SIGINT cleans up this long before it is killed


async def stream_command(args: list[str], on_line, *, stdin_text: str | None = None, interrupt: bool = False) -> tuple[int, str]:
    """Run a headless `mlxft` command; call `on_line(line)` for each stdout line as it arrives.

    Returns (exit code, stderr). Runs on the event loop (an async worker), not on a thread. Cancelled, the command
    is terminated; with `interrupt`, it gets SIGINT instead, so its own clean-up runs (an export removes its
    half-written folder), and is killed only if it has not ended within INTERRUPT_GRACE_S.
    """
    proc = await asyncio.create_subprocess_exec(
        *mlxft_argv(*args), stdin=asyncio.subprocess.PIPE if stdin_text is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    if stdin_text is not None:
        proc.stdin.write(stdin_text.encode())
        await proc.stdin.drain()
        proc.stdin.close()
    err_chunks: list[bytes] = []

    async def read_err():
        while chunk := await proc.stderr.read(4096):
            err_chunks.append(chunk)

    err_task = asyncio.create_task(read_err())
    try:
        while line := await proc.stdout.readline():
            on_line(line.decode("utf-8", errors="replace").rstrip("\n"))
        code = await proc.wait()
    except asyncio.CancelledError:
        if proc.returncode is None:
            if interrupt:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), INTERRUPT_GRACE_S)
                except asyncio.TimeoutError:
                    proc.kill()
            else:
                proc.terminate()
            await proc.wait()
        raise
    await err_task
    return code, b"".join(err_chunks).decode("utf-8", errors="replace")


def error_from_stderr(err: str, code: int, command: str = "mlxft") -> tuple[str, str | None]:
    """(message, hint) for a failed headless command: its `error: ...` / `  hint: ...` lines, else the end of its output."""
    lines = err.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("error: ")), None)
    if start is not None:
        message, hint = [lines[start][len("error: "):]], None
        for line in lines[start + 1:]:
            if line.strip().startswith("hint: "):
                hint = line.strip()[len("hint: "):]
                break
            message.append(line)
        return "\n".join(message).rstrip(), hint
    tail = "\n".join([line for line in lines if line.strip()][-12:]) or "(no output)"
    return f"{command} exited with {code}:\n{tail}", "run the same command in a terminal to see everything it printed"
