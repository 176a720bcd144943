"""`mlxft data convert`: read any supported source and format, write the canonical training JSONL per split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.data import formats
from mlxft.data.readers import RowError, detect_source, find_splits, iter_rows
from mlxft.errors import DataError
from mlxft.runs import atomic_open, same_file


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


def convert_data(path: str | Path, out_dir: str | Path, *, fmt: str = "auto", mapping: dict | None = None, to_chat: bool = False, overwrite: bool = False) -> ConvertResult:
    """Normalise every split of `path` into `out_dir/<split>.jsonl`; bad rows are listed, never silently dropped.

    Never writes over the input files, and over existing outputs only with `overwrite`.
    """
    src, out_dir = Path(path), Path(out_dir)
    splits = find_splits(src)
    if fmt == "auto":
        fmt = formats.detect_format(iter_rows(src, splits[0]), mapping)
    targets = {split: out_dir / f"{split}.jsonl" for split in splits}
    inputs = [p for p in ([src] if src.is_file() else src.rglob("*")) if p.is_file()] if detect_source(src) != "hub" else []
    clashes = [str(t) for t in targets.values() if any(same_file(t, i) for i in inputs)]
    if clashes:
        raise DataError(f"converting would overwrite the input: {', '.join(clashes)}", hint="choose another --out folder")
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not overwrite:
        raise DataError(f"{out_dir}: already holds {', '.join(existing)}", hint="choose another --out folder, or pass --overwrite")
    result = ConvertResult(out_dir=out_dir, format=fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        written = 0
        with atomic_open(targets[split]) as out:  # streamed: a 1 GB input is never held in memory
            for row in iter_rows(src, split):
                if isinstance(row, RowError):
                    result.skipped.append(f"{row.where}: {row.reason}")
                    continue
                try:
                    canonical = formats.normalize(row, fmt, mapping)
                except formats.RowProblem as problem:
                    result.skipped.append(f"{row.where}: {problem.field}: {problem.reason}")
                    continue
                out.write(json.dumps(as_chat(canonical) if to_chat else canonical, ensure_ascii=False) + "\n")
                written += 1
        result.written[split] = written
    return result
