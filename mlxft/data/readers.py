"""Streaming readers for every data source: JSONL, JSON, CSV/TSV, Parquet, `datasets` folders, Hub ids, image folders.

Each reader yields `Record`s (a row and where it came from) and, for a row it cannot read, a
`RowError` instead of raising, so validation can list every bad row in one pass. Nothing is
loaded whole: JSONL and CSV go line by line, JSON arrays are decoded element by element,
Parquet by record batch, `datasets` folders through their memory-mapped Arrow files.

What `line` means for each source (so a message can point at the row):
  .jsonl            the line number in the file
  .json (array)     the 1-based index of the element in the array (the reason of a RowError
                    also gives the line the element starts on)
  .csv / .tsv       the line number in the file where the row starts (the header is line 1)
  .parquet          the 1-based row index
  datasets / Hub    the 1-based row index; `source` is `<path>[<split>]`
  image folders     0: the `source` is the image file itself (its `where` is just the path);
                    rows of a metadata.csv/.jsonl keep that file's line numbers
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

from mlxft.errors import DataError

SPLIT_ALIASES = {"valid": ("valid", "validation", "val", "dev"), "train": ("train",), "test": ("test",)}
SPLIT_ORDER = ("train", "valid", "test")
DATA_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
JSON_CHUNK = 1 << 20  # characters read at a time from a JSON array
JSON_ELEMENT_LIMIT = 256 << 20  # a longer array element is reported rather than buffered on

# A CSV cell can hold a whole document; the csv module's default limit (128 KiB) would reject it.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class _Located:
    source: str
    line: int  # 0 when the source has no lines (an image file)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


@dataclass(frozen=True)
class Record(_Located):
    """One row and where it came from (so every problem can name its file and line)."""

    data: dict


@dataclass(frozen=True)
class RowError(_Located):
    """A row that could not be read at all (bad JSON, not an object, wrong column count)."""

    reason: str


Row = Record | RowError


# -- sources --------------------------------------------------------------------------------


def canonical_split(name: str) -> str:
    """`validation`, `val` and `dev` are all the `valid` split; other names stay as they are."""
    for split, aliases in SPLIT_ALIASES.items():
        if name.lower() in aliases:
            return split
    return name


def _is_datasets_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json"))


def _looks_like_hub_id(text: str) -> bool:
    if text.startswith(("hf://", "hub:")):
        return True
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) or Path(text).suffix.lower() in DATA_SUFFIXES:
        return False
    # `data/support` with a local data/ folder is a mistyped path, not a Hub id: say so at once.
    return not Path(text).parent.is_dir()


def _hub_id(text: str) -> str:
    for prefix in ("hf://datasets/", "hf://", "hub:"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and p.name not in METADATA_NAMES)


def _has_images(folder: Path, depth: int) -> bool:
    """True when image files (or an image metadata file) sit within `depth` folder levels."""
    for p in folder.iterdir():
        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.name in METADATA_NAMES):
            return True
        if p.is_dir() and depth > 0 and _has_images(p, depth - 1):
            return True
    return False


def detect_source(path: str | Path) -> str:
    """What kind of source `path` is: jsonl, json, csv, tsv, parquet, folder, datasets, images or hub."""
    text = str(path)
    p = Path(text).expanduser()
    if not p.exists():
        if _looks_like_hub_id(text):
            return "hub"
        raise DataError(f"{p}: no such file or folder", hint="give a data file (.jsonl .json .csv .tsv .parquet), a folder of train/valid/test files, an image folder, or a Hub id owner/name")
    if p.is_file():
        kind = DATA_SUFFIXES.get(p.suffix.lower())
        if kind is None:
            raise DataError(f"{p}: cannot read {p.suffix or 'extensionless'} files", hint=f"supported: {', '.join(sorted(DATA_SUFFIXES))}")
        return kind
    if not p.is_dir():  # a device, a pipe or a socket: no rows to stream, and no folder to list
        raise DataError(f"{p}: not a regular file or a folder", hint="give a data file (.jsonl .json .csv .tsv .parquet) or a folder")
    if _is_datasets_folder(p):
        return "datasets"
    if _data_files(p):
        return "folder"
    if _has_images(p, 2):
        return "images"
    raise DataError(f"{p}: no data files in this folder", hint="expected train/valid/test files (.jsonl .json .csv .tsv .parquet), a saved `datasets` folder, or <split>/<label>/<image> folders")


def _file_split(path: Path) -> str:
    """The split a data file holds, from its name: `train.jsonl`, `imdb_test_2000.csv`, `validation.parquet`."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    if canonical_split(stem) in SPLIT_ORDER or stem in SPLIT_ALIASES:
        return canonical_split(stem)
    found = {canonical_split(t) for t in re.split(r"[^A-Za-z]+", stem.lower()) if canonical_split(t) in SPLIT_ORDER}
    return found.pop() if len(found) == 1 else stem


def _folder_splits(folder: Path) -> dict[str, Callable[[], Iterator[Row]]]:
    files = _data_files(folder)
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_file_split(f), []).append(f)
    if len(files) == 1 and not any(s in SPLIT_ORDER for s in by_split):
        # One data file with no split in its name is the train split, as a lone file would be.
        by_split = {"train": files}
    clashes = {s: fs for s, fs in by_split.items() if len(fs) > 1}
    if clashes:
        listed = "; ".join(f"{s}: {', '.join(f.name for f in fs)}" for s, fs in clashes.items())
        raise DataError(f"{folder}: more than one file for the same split ({listed})", hint="keep one file per split, or point data.path at one file")
    return {s: (lambda f=fs[0]: _iter_file(f)) for s, fs in by_split.items()}


def _image_splits(root: Path) -> dict[str, Callable[[], Iterator[Row]]]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [d for d in subdirs if canonical_split(d.name) in SPLIT_ORDER]
    if not split_dirs:
        return {"train": lambda: _iter_image_split(root)}  # <root>/<label>/<image>: all train
    return {canonical_split(d.name): (lambda d=d: _iter_image_split(d)) for d in split_dirs}


def _datasets_splits(path: Path) -> dict[str, Callable[[], Iterator[Row]]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if not isinstance(ds, DatasetDict):
        return {"train": lambda: _iter_dataset(ds, str(path))}
    return {canonical_split(name): (lambda name=name: _iter_dataset(ds[name], f"{path}[{name}]")) for name in ds}


def _hub_splits(text: str) -> dict[str, Callable[[], Iterator[Row]]]:
    from datasets import get_dataset_split_names, load_dataset

    repo = _hub_id(text)
    try:
        names = get_dataset_split_names(repo)
    except Exception as exc:  # the Hub client raises many types; all mean "cannot reach this data set"
        raise DataError(f"{text}: not a local file or folder, and the Hub data set {repo!r} cannot be read ({type(exc).__name__}: {exc})", hint="check the path, or the Hub id and your network / login") from None

    def rows(name: str) -> Iterator[Row]:
        yield from _iter_dataset(load_dataset(repo, split=name, streaming=True), f"{repo}[{name}]")

    return {canonical_split(name): (lambda name=name: rows(name)) for name in names}


def _splits(path: str | Path) -> dict[str, Callable[[], Iterator[Row]]]:
    kind = detect_source(path)
    if kind == "hub":
        return _hub_splits(str(path))
    p = Path(str(path)).expanduser()
    if kind == "datasets":
        return _datasets_splits(p)
    if kind == "folder":
        return _folder_splits(p)
    if kind == "images":
        return _image_splits(p)
    return {"train": lambda: _iter_file(p)}  # a lone file is the train split


def find_splits(path: str | Path) -> list[str]:
    """The splits a source holds, canonical names (train, valid, test) first, then any others."""
    names = list(_splits(path))
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


def iter_rows(path: str | Path, split: str | None = None) -> Iterator[Row]:
    """Stream the rows of one split (`None`: every split in order), yielding a RowError for each unreadable row.

    A split the source does not have is a DataError naming the splits it does have.
    """
    splits = _splits(path)
    if split is None:
        for name in find_splits(path):
            yield from splits[name]()
        return
    name = canonical_split(split)
    if name not in splits:
        raise DataError(f"{path}: no {split!r} split", hint=f"this source has: {', '.join(sorted(splits)) or 'nothing'}")
    yield from splits[name]()


@dataclass(frozen=True)
class RowPage:
    """`rows` of one split from row `start` (0-based, counting unreadable rows too); `more`: rows follow."""

    split: str
    start: int
    rows: list[Row]
    more: bool
    found: int | None = None  # index in `rows` of the row asked for with `at`


def read_page(path: str | Path, split: str = "train", *, start: int = 0, count: int = 100, at: str | None = None) -> RowPage:
    """A page of rows, streamed: reads up to the page's end and no further, so a huge file is never loaded whole.

    With `at` (a row's `where`, e.g. `data/train.jsonl:42`), returns the page of `count` rows
    that holds that row; a row that is not in the split is a DataError.
    """
    if count < 1 or start < 0:
        raise DataError(f"a page needs count >= 1 and start >= 0, got count={count}, start={start}")
    name = canonical_split(split)
    rows: list[Row] = []
    found = None
    for i, row in enumerate(iter_rows(path, name)):
        if at is not None and found is None:
            if i % count == 0:
                rows, start = [], i
            if row.where == at:
                found = i - start
        elif i < start:
            continue
        if len(rows) == count:
            return RowPage(name, start, rows, True, found)
        rows.append(row)
    if at is not None and found is None:
        raise DataError(f"{path}: no row at {at} in the {name} split", hint="the file may have changed since it was validated; open it again")
    return RowPage(name, start, rows, False, found)


# -- files ----------------------------------------------------------------------------------


def _iter_file(path: Path) -> Iterator[Row]:
    kind = DATA_SUFFIXES[path.suffix.lower()]
    if kind == "jsonl":
        return iter_jsonl_rows(path)
    if kind == "json":
        return iter_json_rows(path)
    if kind in ("csv", "tsv"):
        return iter_csv_rows(path, "\t" if kind == "tsv" else ",")
    return iter_parquet_rows(path)


def iter_jsonl_rows(path: Path) -> Iterator[Row]:
    """One JSON object per line; blank lines are skipped, anything else that is not an object is a RowError."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield RowError(str(path), n, f"not valid UTF-8 (byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RowError(str(path), n, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield RowError(str(path), n, f"expected a JSON object, got {_json_type(obj)}")
                continue
            yield Record(str(path), n, obj)


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def iter_json_rows(path: Path) -> Iterator[Row]:
    """A JSON array of objects, decoded one element at a time; a file starting with `{` is read as JSON Lines.

    Memory holds one element plus a 1 MiB read buffer; an element is buffered up to 256 MiB while
    looking for its end. An element that is not valid JSON ends the file: where the next element
    starts cannot be known, so a RowError says the rest was not read.
    """
    with open(path, encoding="utf-8-sig") as f:
        buf, pos, eof, line = "", 0, False, 1

        def fill() -> bool:
            nonlocal buf, pos, eof
            chunk = f.read(JSON_CHUNK)
            if not chunk:
                eof = True
                return False
            buf, pos = buf[pos:] + chunk, 0
            return True

        def skip_space() -> None:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        try:
            skip_space()
            if pos >= len(buf):
                return  # an empty file has no rows
            if buf[pos] == "{":
                f.close()
                yield from iter_jsonl_rows(path)
                return
            if buf[pos] != "[":
                yield RowError(str(path), line, "expected a JSON array of objects (or one object per line)")
                return
            pos += 1
            decoder, index = json.JSONDecoder(), 0
            skip_space()
            if pos < len(buf) and buf[pos] == "]":
                return
            while True:
                index += 1
                skip_space()
                start_line = line
                while True:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError as exc:
                        if eof or len(buf) - pos > JSON_ELEMENT_LIMIT or not fill():
                            yield RowError(str(path), index, f"not valid JSON ({exc.msg}; element starts on line {start_line}); the rest of the file was not read")
                            return
                line += buf.count("\n", pos, end)
                pos = end
                if isinstance(obj, dict):
                    yield Record(str(path), index, obj)
                else:
                    yield RowError(str(path), index, f"expected a JSON object, got {_json_type(obj)} (line {start_line})")
                skip_space()
                if pos < len(buf) and buf[pos] == ",":
                    pos += 1
                    continue
                if pos < len(buf) and buf[pos] == "]":
                    return
                yield RowError(str(path), index + 1, f"expected ',' or ']' after element {index} on line {line}; the rest of the file was not read")
                return
        except UnicodeDecodeError as exc:
            yield RowError(str(path), 0, f"not valid UTF-8 ({exc.reason}); the rest of the file was not read")


def iter_csv_rows(path: Path, delimiter: str = ",") -> Iterator[Row]:
    """A CSV/TSV file with a header row; each row becomes {column: text}. Blank lines are skipped."""
    # surrogateescape keeps reading past a bad byte; the row that holds it becomes a RowError.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header, start = None, 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(str(path), start, f"cannot parse the row ({exc})")
                start = reader.line_num + 1
                continue
            n, start = start, reader.line_num + 1
            if not cells:
                continue
            bad = _undecodable(cells)
            if header is None:
                if bad or len(set(cells)) != len(cells) or not all(c.strip() for c in cells):
                    yield RowError(str(path), n, "the header row must name every column once" + (" (and be valid UTF-8)" if bad else ""))
                    return
                header = cells
                continue
            if bad:
                yield RowError(str(path), n, f"not valid UTF-8 in column {header[bad[0]] if bad[0] < len(header) else bad[0] + 1!r}")
            elif len(cells) != len(header):
                yield RowError(str(path), n, f"has {len(cells)} field(s) but the header has {len(header)}")
            else:
                yield Record(str(path), n, dict(zip(header, cells, strict=True)))


def _undecodable(cells: list[str]) -> list[int]:
    return [i for i, c in enumerate(cells) if any("\udc80" <= ch <= "\udcff" for ch in c)]


def iter_parquet_rows(path: Path, batch_size: int = 1024) -> Iterator[Row]:
    """A Parquet file, one record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        yield RowError(str(path), 0, f"cannot read the Parquet file ({exc})")
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                n += 1
                yield Record(str(path), n, row)
    except (pa.ArrowException, OSError) as exc:
        yield RowError(str(path), n + 1, f"cannot read the rest of the Parquet file ({exc})")


def _iter_dataset(ds, source: str) -> Iterator[Row]:
    for i, row in enumerate(ds, start=1):
        yield Record(source, i, dict(row))


# -- image folders --------------------------------------------------------------------------


def _iter_image_split(folder: Path) -> Iterator[Row]:
    """<folder>/<label>/<image>, or <folder>/metadata.(csv|jsonl) with file_name and label columns."""
    meta = next((folder / m for m in METADATA_NAMES if (folder / m).is_file()), None)
    if meta is not None:
        rows = iter_jsonl_rows(meta) if meta.suffix == ".jsonl" else iter_csv_rows(meta)
        for row in rows:
            if isinstance(row, RowError):
                yield row
                continue
            name = row.data.get("file_name")
            if not isinstance(name, str) or not name:
                yield RowError(row.source, row.line, "needs a 'file_name' column naming the image (relative to the metadata file)")
                continue
            data = {k: v for k, v in row.data.items() if k != "file_name"}
            yield Record(row.source, row.line, {"image": str(folder / name), **data})
        return
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for img in sorted(label_dir.iterdir()):
            if img.is_file() and img.suffix.lower() in IMAGE_SUFFIXES:
                yield Record(str(img), 0, {"image": str(img), "label": label_dir.name})
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for name in loose:
        # An image outside any label folder has no label; say so rather than skip it.
        yield RowError(str(folder / name), 0, "image is not inside a <label>/ folder, so it has no label")
