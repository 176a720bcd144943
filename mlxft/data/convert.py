"""`mlxft data convert`: read any supported source and format, write the canonical training JSONL per split."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import fsync_dir
from mlxft.data import formats
from mlxft.data.outputs import explain_write_errors, refuse_writing_over_inputs
from mlxft.data.readers import RowError, detect_source, find_splits, iter_rows
from mlxft.errors import DataError


@dataclass
class ConvertResult:
    out_dir: Path
    format: str
    written: dict[str, int] = field(default_factory=dict)  # split -> rows written
    skipped: list[str] = field(default_factory=list)  # "file:line: field: reason" for every row not written

    def summary(self) -> str:
        lines = [f"{self.out_dir} ({self.format})"]
        lines += [f"  {split}: {n} rows -> {self.out_dir / (split + '.jsonl')}" for split, n in self.written.items()]
        if self.skipped:
            lines.append(f"  {len(self.skipped)} bad row(s) not written:")
            lines += [f"    {s}" for s in self.skipped[:50]]
            if len(self.skipped) > 50:
                lines.append(f"    ... and {len(self.skipped) - 50} more (`mlxft data validate` lists them all)")
        return "\n".join(lines)


def as_chat(row: dict) -> dict:
    """A prompt/completion row as a two-turn conversation (for chat models); other rows unchanged."""
    if set(row) == {"prompt", "completion"}:
        turns = [{"role": "user", "content": row["prompt"]}] if row["prompt"] else []
        return {"messages": turns + [{"role": "assistant", "content": row["completion"]}]}
    return row


def convert_data(
    path: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "auto",
    mapping: dict | None = None,
    to_chat: bool = False,
    overwrite: bool = False,
    allow_outside_paths: bool = False,
) -> ConvertResult:
    """Normalise every split of `path` into `out_dir/<split>.jsonl`; bad rows are listed, never silently dropped.

    All or nothing: the splits are streamed into a hidden folder inside `out_dir` and moved into
    place only when every split has at least one good row; otherwise a DataError says why and
    nothing is left behind. Never writes over an input (see `outputs`), and over existing
    outputs only with `overwrite`. `allow_outside_paths` lets an image folder name images outside it.
    """
    src, out_dir = Path(path).expanduser(), Path(out_dir).expanduser()
    splits = find_splits(src)
    if fmt == "auto":
        fmt = formats.detect_format(iter_rows(src, splits[0], allow_outside_paths=allow_outside_paths), mapping)
    targets = {split: out_dir / f"{split}.jsonl" for split in splits}
    refuse_writing_over_inputs(targets.values(), [src] if detect_source(src) != "hub" else [])
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder", hint="give --out a folder for the converted splits")
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not overwrite:
        raise DataError(f"{out_dir}: already holds {', '.join(existing)}", hint="choose another --out folder, or pass --overwrite")
    result = ConvertResult(out_dir=out_dir, format=fmt)
    created = not out_dir.exists()
    with explain_write_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    try:
        empty: dict[str, list[str]] = {}  # split -> its bad rows, for each split that would be written empty
        for split in splits:
            before = len(result.skipped)
            with explain_write_errors(out_dir):  # reading errors are DataErrors already (see iter_rows)
                result.written[split] = _convert_split(iter_rows(src, split, allow_outside_paths=allow_outside_paths), staging / f"{split}.jsonl", fmt, mapping, to_chat, result.skipped)
            if result.written[split] == 0:
                empty[split] = result.skipped[before:]
        if empty:
            raise DataError(f"{src}: nothing written: " + "; ".join(_why_empty(split, bad) for split, bad in empty.items()),
                            hint=f"fix or remove those rows (`mlxft data validate {src}` lists every problem), check --format and --map, or remove an empty split file")
        with explain_write_errors(out_dir):
            for split, target in targets.items():
                os.replace(staging / f"{split}.jsonl", target)
            fsync_dir(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed convert leaves no empty folder behind either
    return result


def _convert_split(rows, target: Path, fmt: str, mapping: dict | None, to_chat: bool, skipped: list[str]) -> int:
    """Stream one split's canonical rows into `target` (a 1 GB input is never held in memory); the rows written."""
    written = 0
    with open(target, "w", encoding="utf-8") as out:
        for row in rows:
            if isinstance(row, RowError):
                skipped.append(f"{row.where}: {row.reason}")
                continue
            try:
                canonical = formats.normalize(row, fmt, mapping)
            except formats.RowProblem as problem:
                skipped.append(f"{row.where}: {problem.field}: {problem.reason}")
                continue
            out.write(json.dumps(as_chat(canonical) if to_chat else canonical, ensure_ascii=False) + "\n")
            written += 1
        out.flush()
        os.fsync(out.fileno())
    return written


def _why_empty(split: str, bad: list[str]) -> str:
    if not bad:
        return f"the {split} split has no rows"
    shown = "".join(f"\n    {b}" for b in bad[:10]) + (f"\n    ... and {len(bad) - 10} more" if len(bad) > 10 else "")
    return f"every row of the {split} split is bad ({len(bad)}):{shown}"
