"""How the data commands write: no output may be one of its inputs, whatever `overwrite` says; a failed write is a message.

An output clobbers an input when it is the same file (by device and inode, so symlinks and
hard links count), or when it would land directly in an input folder, where it becomes part of
that data set (a `train.jsonl` next to a `train.csv` makes the folder unreadable next time).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlxft.errors import DataError

DEFAULT_HINT = "write to another file or folder (--out); an input is never written over, even with --overwrite"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows symlinks: a link to an input is that input
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _files_under(folder: Path) -> Iterable[Path]:
    """Every file below `folder`, symlinked folders included, each real folder once (a link loop ends)."""
    seen: set[tuple[int, int] | None] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        here = _identity(Path(root))
        if here in seen:
            dirs[:] = []
            continue
        seen.add(here)
        yield from (Path(root) / f for f in files)


def refuse_writing_over_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path], *, hint: str = DEFAULT_HINT) -> None:
    """Raise one DataError naming every output that is an input or would land in an input folder; else return."""
    outputs = [Path(p).expanduser() for p in outputs]
    inputs = [Path(p).expanduser() for p in inputs]
    folders = {p.resolve(): p for p in inputs if p.is_dir()}
    problems: dict[Path, str] = {}
    existing = {ident: out for out in outputs if out.is_file() and (ident := _identity(out)) is not None}
    if existing:  # only an output that exists can be an input; walk input folders only then
        for source in [p for p in inputs if p.is_file()] + [f for folder in folders.values() for f in _files_under(folder)]:
            out = existing.pop(_identity(source), None)
            if out is not None:
                link = "" if os.path.abspath(out) == os.path.abspath(source) else " (through a link)"
                problems[out] = f"{out}: is the input file {source}{link}; writing there would destroy it"
    for out in outputs:
        if out not in problems and out.parent.resolve() in folders:
            problems[out] = f"{out}: would be written into the input folder {folders[out.parent.resolve()]}, where it becomes part of that data"
    if problems:
        listed = "\n".join(f"  {problems[out]}" for out in outputs if out in problems)
        raise DataError("will not write over an input:\n" + listed, hint=hint)


@contextmanager
def explain_write_errors(target: str | Path) -> Iterator[None]:
    """Turn an OS refusal while writing `target` (read-only, no such folder, disk full) into a DataError naming it."""
    try:
        yield
    except OSError as exc:  # the OS's own file name may be a temp file; the user knows `target`
        raise DataError(f"{target}: cannot write ({exc.strerror or exc})", hint=f"check that {target} can be created and written, and that the disk has space") from None
