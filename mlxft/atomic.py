"""Writes that no reader sees half-done: files (text, bytes, a stream, safetensors) and whole folders.

A file is written to a temp file in its own folder, fsynced and renamed over the target, so a kill or a full
disk at any moment leaves the old file (or none) and never a torn one; a failed write removes its temp file.
A folder is filled under a temp name (`temp_dir_for`) and put in place by `publish_dir`. The temp names are
the ones `mlxft.runs` recognises as leftovers of a killed writer. Errors are the OS's own (OSError, or MLX's
RuntimeError on a short safetensors write): each caller turns them into one message with
`mlxft.errors.write_error`, naming what it was saving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _temp_path(path: Path, suffix: str = "") -> Path:
    """The temp file beside `path` that becomes it: `.NAME.tmp-PID` (+ suffix)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """A file to stream into that appears at `path` only once it is complete (temp file, fsync, rename)."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(path: str | Path, arrays: dict, metadata: dict | None = None) -> None:
    """`mx.save_safetensors`, atomically. The temp name keeps the .safetensors suffix (MLX appends one to any
    other name) and starts with a dot, so mlx-lm's `model*.safetensors` glob never picks up a half-written file."""
    import mlx.core as mx

    path = Path(path)
    tmp = _temp_path(path, ".safetensors")
    try:
        mx.save_safetensors(str(tmp), arrays, metadata=metadata)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable (best effort: some file systems cannot fsync a folder)."""
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


def temp_dir_for(final: Path) -> Path:
    """A new empty folder beside `final` (`.NAME.xxxxxxxx`) to fill and then `publish_dir` as `final`."""
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def publish_dir(tmp: Path, final: Path) -> None:
    """Atomically put a fully written folder at `final` (replacing an older one)."""
    for f in tmp.iterdir():
        if f.is_file():
            _fsync_file(f)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
