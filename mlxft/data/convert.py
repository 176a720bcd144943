"""`mlxft data convert`: read any supported source and format, write the canonical training JSONL per split
(or, with `to="openai"`, OpenAI's fine-tuning JSONL: SFT or DPO rows checked against OpenAI's rules; openai_format.py)."""

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
    to: str = "mlxft"
    problems: list[str] = field(default_factory=list)  # to="openai": what OpenAI would refuse in a written file (too few examples, too big)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.out_dir} ({self.format}" + (" -> OpenAI fine-tuning JSONL)" if self.to == "openai" else ")")]
        lines += [f"  {split}: {n} rows -> {self.out_dir / (split + '.jsonl')}" for split, n in self.written.items()]
        if self.skipped:
            lines.append(f"  {len(self.skipped)} bad row(s) not written:")
            lines += [f"    {s}" for s in self.skipped[:50]]
            if len(self.skipped) > 50:
                lines.append(f"    ... and {len(self.skipped) - 50} more (`mlxft data validate` lists them all)")
        if self.to == "openai":
            lines.append("  OpenAI's rules: " + (f"{len(self.problems)} problem(s):" if self.problems else "met"))
            lines += [f"    {p}" for p in self.problems] + [f"    warning: {w}" for w in self.warnings[:20]]
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
    to: str = "mlxft",
) -> ConvertResult:
    """Normalise every split of `path` into `out_dir/<split>.jsonl`; bad rows are listed, never silently dropped.

    All or nothing: the splits are streamed into a hidden folder inside `out_dir` and moved into
    place only when every split has at least one good row; otherwise a DataError says why and
    nothing is left behind. Never writes over an input (see `outputs`), and over existing
    outputs only with `overwrite`. `allow_outside_paths` lets an image folder name images outside it.
    `to="openai"` writes OpenAI's fine-tuning rows instead; a row OpenAI would refuse is listed with the rule and not
    written, and what concerns a whole file (fewer than 10 training examples, over 512 MB) is in `result.problems`.
    """
    if to not in ("mlxft", "openai"):
        raise DataError(f"unknown output layout {to!r}", hint="--to mlxft (the canonical training rows) or --to openai")
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
    result = ConvertResult(out_dir=out_dir, format=fmt, to=to)
    created = not out_dir.exists()
    with explain_write_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    try:
        empty: dict[str, list[str]] = {}  # split -> its bad rows, for each split that would be written empty
        for split in splits:
            before = len(result.skipped)
            with explain_write_errors(out_dir):  # reading errors are DataErrors already (see iter_rows)
                result.written[split] = _convert_split(iter_rows(src, split, allow_outside_paths=allow_outside_paths), staging / f"{split}.jsonl", fmt, mapping, to_chat, result.skipped,
                                                       result.warnings if to == "openai" else None)
            if result.written[split] == 0:
                empty[split] = result.skipped[before:]
        if empty:
            raise DataError(f"{src}: nothing written: " + "; ".join(_why_empty(split, bad) for split, bad in empty.items()),
                            hint=f"fix or remove those rows (`mlxft data validate {src}` lists every problem), check --format and --map, or remove an empty split file")
        if to == "openai":
            _check_openai_files(staging, splits, targets, result)
        with explain_write_errors(out_dir):
            for split, target in targets.items():
                os.replace(staging / f"{split}.jsonl", target)
            fsync_dir(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed convert leaves no empty folder behind either
    return result


def _check_openai_files(staging: Path, splits: list[str], targets: dict[str, Path], result: ConvertResult) -> None:
    """The whole-file rules over each written split (its rows were checked one by one as they were written)."""
    from mlxft.data.openai_format import MAX_FILE_BYTES, MIN_EXAMPLES

    for split in splits:
        size, n = (staging / f"{split}.jsonl").stat().st_size, result.written[split]
        if size > MAX_FILE_BYTES:
            result.problems.append(f"{targets[split]}: {size / 2**20:,.0f} MB; OpenAI takes files up to 512 MB (split the data)")
        if split == "train" and n < MIN_EXAMPLES:
            result.problems.append(f"{targets[split]}: {n} example(s); OpenAI needs at least {MIN_EXAMPLES} to fine-tune")


def _convert_split(rows, target: Path, fmt: str, mapping: dict | None, to_chat: bool, skipped: list[str], openai: list[str] | None = None) -> int:
    """Stream one split's canonical rows into `target` (a 1 GB input is never held in memory); the rows written.

    `openai` (a list for the warnings): write OpenAI's rows, each checked against its rules; a refused row is skipped."""
    if openai is not None:
        from mlxft.data.openai_format import example_problems, to_openai
    written = 0
    with open(target, "w", encoding="utf-8") as out:
        for row in rows:
            if isinstance(row, RowError):
                skipped.append(f"{row.where}: {row.reason}")
                continue
            try:
                canonical = formats.normalize(row, fmt, mapping)
                if openai is not None:
                    canonical = to_openai(canonical)
                    _, problems, warnings = example_problems(canonical)
                    if problems:
                        skipped.append(f"{row.where}: OpenAI would refuse it: " + "; ".join(f"{f}: {r}" for f, r in problems))
                        continue
                    openai += [f"{row.where}: {w}" for w in warnings]
            except formats.RowProblem as problem:
                skipped.append(f"{row.where}: {problem.field}: {problem.reason}")
                continue
            out.write(json.dumps(as_chat(canonical) if to_chat and openai is None else canonical, ensure_ascii=False) + "\n")
            written += 1
        out.flush()
        os.fsync(out.fileno())
    return written


def _why_empty(split: str, bad: list[str]) -> str:
    if not bad:
        return f"the {split} split has no rows"
    shown = "".join(f"\n    {b}" for b in bad[:10]) + (f"\n    ... and {len(bad) - 10} more" if len(bad) > 10 else "")
    return f"every row of the {split} split is bad ({len(bad)}):{shown}"
