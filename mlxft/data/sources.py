"""Read training records from JSONL files and saved `datasets` folders, keeping file and line for every row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mlxft.errors import DataError

SPLIT_ALIASES = {"valid": ("valid", "validation", "val", "dev"), "train": ("train",), "test": ("test",)}


@dataclass(frozen=True)
class Record:
    """One row and where it came from (so every problem can name its file and line)."""

    source: str
    line: int
    data: dict

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def iter_jsonl(path: Path) -> Iterator[Record]:
    """Stream records; a line that is not a JSON object is a DataError naming the line."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})", hint="each line of a .jsonl file must be one JSON object") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}", hint='e.g. {"messages": [...]} or {"prompt": ..., "completion": ...}')
            yield Record(str(path), n, obj)


def _is_datasets_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file() or (path / "state.json").is_file()


def _datasets_split(path: Path, split: str) -> list[Record] | None:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        for name in SPLIT_ALIASES.get(split, (split,)):
            if name in ds:
                part = ds[name]
                return [Record(f"{path}[{name}]", i + 1, dict(row)) for i, row in enumerate(part)]
        return None
    if split != "train":
        return None
    return [Record(str(path), i + 1, dict(row)) for i, row in enumerate(ds)]


def find_split_file(folder: Path, split: str) -> Path | None:
    for name in SPLIT_ALIASES.get(split, (split,)):
        p = folder / f"{name}.jsonl"
        if p.is_file():
            return p
    return None


def read_split(path: str | Path, split: str) -> list[Record] | None:
    """Records of one split, or None when the source has no such split.

    `path` is a folder of <split>.jsonl files, a saved `datasets` folder, or a single .jsonl
    file (which is the train split).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder", hint="data.path is a folder with train.jsonl / valid.jsonl / test.jsonl, or one .jsonl file")
    if path.is_file():
        if path.suffix not in (".jsonl", ".json"):
            raise DataError(f"{path}: expected a .jsonl file", hint="`mlxft data convert` (data issue) will read CSV/Parquet; for now convert to JSONL")
        return list(iter_jsonl(path)) if split == "train" else None
    if _is_datasets_folder(path):
        return _datasets_split(path, split)
    f = find_split_file(path, split)
    return list(iter_jsonl(f)) if f is not None else None
