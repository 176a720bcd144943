"""Read one split of training records from any source `readers` knows, keeping file and line for every row."""

from __future__ import annotations

from pathlib import Path

from mlxft.data.readers import SPLIT_ALIASES, Record, RowError, canonical_split, find_splits, iter_rows
from mlxft.errors import DataError

__all__ = ["SPLIT_ALIASES", "Record", "RowError", "read_split"]  # Record and RowError live in readers

MAX_LISTED = 20  # unreadable rows shown in one error; the count always covers all of them


def read_split(path: str | Path, split: str) -> list[Record] | None:
    """Records of one split, or None when the source has no such split.

    `path` is anything `readers.iter_rows` reads: one data file (the train split), a folder of
    train/valid/test files (.jsonl .json .csv .tsv .parquet), a saved `datasets` folder, an
    image folder or a Hub id. Every unreadable row is listed in one DataError.
    """
    if canonical_split(split) not in find_splits(path):
        return None
    records, errors = [], []
    for row in iter_rows(path, split):
        (errors if isinstance(row, RowError) else records).append(row)
    if errors:
        shown = "\n".join(f"  {e.where}: {e.reason}" for e in errors[:MAX_LISTED])
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise DataError(
            f"{len(errors)} unreadable row(s) in the {split} split:\n{shown}{more}",
            hint="fix or remove these rows; `mlxft data validate` lists every problem in the data",
        )
    return records
