"""The errors mlxft raises for things a user can fix: a message and a hint."""

from __future__ import annotations


class MlxftError(Exception):
    """A problem the user can act on. The CLI prints `message` and `hint` and exits 1."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(MlxftError):
    """A recipe that does not validate; `problems` lists every (location, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]], hint: str | None = None):
        lines = "\n".join(f"  {loc}: {msg}" for loc, msg in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the recipe\n{lines}", hint)
        self.source = source
        self.problems = problems


class DataError(MlxftError):
    """Bad training data: names the file, line and field."""


class ModelError(MlxftError):
    """A model that cannot be found, read or loaded."""


class RunError(MlxftError):
    """A training run that failed, was stopped, or cannot be resumed."""


class BrokenFileError(ModelError):
    """A model, adapter or checkpoint file that is missing, truncated or malformed: `path` names it, `reason` says how."""

    def __init__(self, path, reason: str, hint: str | None = None):
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason


class WriteError(MlxftError):
    """A file mlxft had to write could not be written: the disk is full, read-only, or not ours."""


def write_error(exc: BaseException, path, doing: str, hint: str | None = None) -> WriteError:
    """One message for every failed write: what failed, where, and (for a full disk) how much space is free.

    MLX's own writers raise RuntimeError without an errno; a nearly full disk is then the likely cause.
    """
    import errno
    import shutil
    from pathlib import Path

    path = Path(path)
    code = getattr(exc, "errno", None)
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    free_text = f"{free / 1e9:.2f} GB free" if free is not None and free >= 1e8 else f"{free / 1e6:.1f} MB free" if free is not None else "free space unknown"
    if code is None and _file_size_limit() is not None:
        code = errno.EFBIG  # an errno-less short write under `ulimit -f`: the limit is the likely cause
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) or (code is None and free is not None and free < 64e6):
        return WriteError(f"no space left on the disk holding {path} (while trying to {doing}; {free_text})", hint or "free some space and try again")
    if code == errno.EFBIG:
        limit = _file_size_limit()
        size = f" of {limit:,} bytes" if limit is not None else ""
        return WriteError(f"the file size limit{size} stopped writing {path} (while trying to {doing})", hint or "raise the limit (`ulimit -f unlimited`) and try again")
    if code == errno.EROFS:
        return WriteError(f"{path} is on a read-only file system (while trying to {doing})", hint or "choose a folder you can write to")
    if code in (errno.EACCES, errno.EPERM):
        return WriteError(f"permission denied writing {path} (while trying to {doing})", hint or "choose a folder you can write to, or fix its permissions")
    reason = getattr(exc, "strerror", None) or str(exc)
    return WriteError(f"cannot {doing} at {path}: {reason} ({free_text})", hint)


def _file_size_limit() -> int | None:
    """This process's RLIMIT_FSIZE in bytes (`ulimit -f`), or None when there is none."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft
