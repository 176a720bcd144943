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

Hostile rows are RowErrors too, found before anything parses or tokenizes them: a row over
`max_row_bytes()` (4 MB unless MLXFT_MAX_ROW_MB says otherwise) is skipped unread, and a row
nested deeper than MAX_NESTING levels is refused (Python's JSON would recurse to a crash).
An image folder only yields images that resolve inside it (`..`, absolute `file_name`s and
symlinks out are RowErrors) unless the caller passes `allow_outside_paths=True`.
"""

from __future__ import annotations

import csv
import json
import os
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
JSON_CHUNK = 1 << 20  # characters read at a time from a JSON array (bytes of an over-long JSONL line)
DEFAULT_MAX_ROW_MB = 4.0  # a row this long is ~1M tokens: far past any context, and tokenizing it takes GBs
MAX_ROW_ENV = "MLXFT_MAX_ROW_MB"
MAX_NESTING = 100  # JSON levels; real rows use a handful, and deeper ones crash recursive code
OUTSIDE_HINT = "pass --allow-outside-paths (allow_outside_paths=True) to read images outside the data folder"

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


def max_row_bytes() -> int:
    """The largest row readers accept, in bytes: DEFAULT_MAX_ROW_MB, or MLXFT_MAX_ROW_MB (in MB, 1 MB = 1e6 bytes)."""
    text = os.environ.get(MAX_ROW_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_ROW_MB * 1e6)
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise DataError(f"{MAX_ROW_ENV}={text!r} is not a size in MB", hint=f"set it to a number of MB above 0, e.g. {MAX_ROW_ENV}=64, or unset it for {DEFAULT_MAX_ROW_MB:g} MB")
    return int(mb * 1e6)


def _oversized(size: int, limit: int, unit: str = "bytes") -> str:
    return (f"the row is {size / 1e6:.1f} MB ({size:,} {unit}), over the {limit / 1e6:g} MB row limit, so it was not read; "
            f"split it into shorter rows, or raise the limit with {MAX_ROW_ENV}=N (MB)")


def _nesting_problem(value, openers: int | None = None) -> str | None:
    """Why a parsed row is nested too deeply, or None. `openers` (brackets in the raw text) skips the walk when few."""
    if openers is not None and openers <= MAX_NESTING:
        return None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            return _too_deep()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return None


def _too_deep() -> str:
    return f"nested more than {MAX_NESTING} levels deep; data rows are flat objects, lists of turns or similar"


def _text_size(value) -> int:
    """Characters of text in a row already in memory (Parquet, `datasets`): what tokenizing would have to hold."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def _checked(source: str, line: int, data: dict, limit: int) -> Row:
    """A row from a source that is read whole before we see it: refused by its text size and nesting."""
    size = _text_size(data)
    if size > limit:
        return RowError(source, line, _oversized(size, limit, "characters"))
    problem = _nesting_problem(data)
    return RowError(source, line, problem) if problem else Record(source, line, data)


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


def _image_splits(root: Path, allow_outside_paths: bool) -> dict[str, Callable[[], Iterator[Row]]]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [d for d in subdirs if canonical_split(d.name) in SPLIT_ORDER]
    inside = None if allow_outside_paths else root.resolve()
    if not split_dirs:
        return {"train": lambda: _iter_image_split(root, inside)}  # <root>/<label>/<image>: all train
    return {canonical_split(d.name): (lambda d=d: _iter_image_split(d, inside)) for d in split_dirs}


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


def _splits(path: str | Path, allow_outside_paths: bool = False) -> dict[str, Callable[[], Iterator[Row]]]:
    kind = detect_source(path)
    if kind == "hub":
        return _hub_splits(str(path))
    p = Path(str(path)).expanduser()
    if kind == "datasets":
        return _datasets_splits(p)
    if kind == "folder":
        return _folder_splits(p)
    if kind == "images":
        return _image_splits(p, allow_outside_paths)
    return {"train": lambda: _iter_file(p)}  # a lone file is the train split


def find_splits(path: str | Path) -> list[str]:
    """The splits a source holds, canonical names (train, valid, test) first, then any others."""
    names = list(_splits(path))
    return [s for s in SPLIT_ORDER if s in names] + sorted(s for s in names if s not in SPLIT_ORDER)


def iter_rows(path: str | Path, split: str | None = None, *, allow_outside_paths: bool = False) -> Iterator[Row]:
    """Stream the rows of one split (`None`: every split in order), yielding a RowError for each unreadable row.

    A split the source does not have is a DataError naming the splits it does have. An image
    folder's rows naming images outside it are RowErrors unless `allow_outside_paths`.
    """
    splits = _splits(path, allow_outside_paths)
    names = find_splits(path) if split is None else [canonical_split(split)]
    if names[0:1] and names[0] not in splits:
        raise DataError(f"{path}: no {split!r} split", hint=f"this source has: {', '.join(sorted(splits)) or 'nothing'}")
    try:
        for name in names:
            yield from splits[name]()
    except OSError as exc:  # only the reading: a consumer's own errors are never thrown in here
        raise DataError(f"{exc.filename or path}: cannot read ({exc.strerror or exc})", hint="check that the file exists and is readable") from None


@dataclass(frozen=True)
class RowPage:
    """`rows` of one split from row `start` (0-based, counting unreadable rows too); `more`: rows follow."""

    split: str
    start: int
    rows: list[Row]
    more: bool
    found: int | None = None  # index in `rows` of the row asked for with `at`


def read_page(path: str | Path, split: str = "train", *, start: int = 0, count: int = 100, at: str | None = None, allow_outside_paths: bool = False) -> RowPage:
    """A page of rows, streamed: reads up to the page's end and no further, so a huge file is never loaded whole.

    With `at` (a row's `where`, e.g. `data/train.jsonl:42`), returns the page of `count` rows
    that holds that row; a row that is not in the split is a DataError.
    """
    if count < 1 or start < 0:
        raise DataError(f"a page needs count >= 1 and start >= 0, got count={count}, start={start}", hint="--count is the rows per page, --start the first row (0-based)")
    name = canonical_split(split)
    rows: list[Row] = []
    found = None
    for i, row in enumerate(iter_rows(path, name, allow_outside_paths=allow_outside_paths)):
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


def _bounded_lines(f, limit: int) -> Iterator[tuple[int, bytes | str | int]]:
    """(line number, line) for each line of a file; a line over `limit` bytes (characters) comes as its length, never held whole."""
    ends = (b"\n",) if "b" in f.mode else ("\n", "\r")  # a text file opened with newline="" may end lines with \r alone
    n = 0
    while raw := f.readline(limit + 1):
        n += 1
        if len(raw) <= limit or raw.endswith(ends):
            yield n, raw
            continue
        size = len(raw)
        while not raw.endswith(ends) and (raw := f.readline(JSON_CHUNK)):
            size += len(raw)
        yield n, size


def iter_jsonl_rows(path: Path) -> Iterator[Row]:
    """One JSON object per line; blank lines are skipped, anything else that is not an object is a RowError.

    A line over `max_row_bytes()` is a RowError without being read into memory whole.
    """
    limit = max_row_bytes()
    with open(path, "rb") as f:
        for n, raw in _bounded_lines(f, limit):
            if isinstance(raw, int):
                yield RowError(str(path), n, _oversized(raw, limit))
                continue
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
            except RecursionError:
                yield RowError(str(path), n, _too_deep())
                continue
            if not isinstance(obj, dict):
                yield RowError(str(path), n, f"expected a JSON object, got {_json_type(obj)}")
                continue
            problem = _nesting_problem(obj, raw.count(b"{") + raw.count(b"["))
            yield RowError(str(path), n, problem) if problem else Record(str(path), n, obj)


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


_OUTSIDE_STRING = re.compile(r'["\[\]{},]')
_INSIDE_STRING = re.compile(r'["\\]')


def iter_json_rows(path: Path) -> Iterator[Row]:
    """A JSON array of objects, decoded one element at a time; a file starting with `{` is read as JSON Lines.

    Memory holds one element plus a 1 MiB read buffer. An element that will not decode within
    `max_row_bytes()` characters, or nests too deeply, is skipped by its brackets and quotes (a
    RowError) and reading goes on after it; only an element that never ends stops the file.
    """
    limit = max_row_bytes()
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

        def skip_element() -> int | None:
            """Move past the element at `pos` without decoding it; its length in characters, None if the file ends first."""
            nonlocal pos, line
            depth, in_string, size, i = 0, False, 0, pos

            def consume(upto: int) -> None:
                nonlocal pos, line, size
                size += upto - pos
                line += buf.count("\n", pos, upto)
                pos = upto

            while True:
                m = (_INSIDE_STRING if in_string else _OUTSIDE_STRING).search(buf, i)
                j = m.start() if m else len(buf)
                if m is None or (in_string and buf[j] == "\\" and j + 1 >= len(buf)):
                    consume(j)  # keep an escape whose next character is in the next chunk
                    if not fill():
                        return None
                    i = pos
                    continue
                ch, i = buf[j], j + 1
                if in_string:
                    if ch == "\\":
                        i = j + 2
                        continue
                    in_string = False
                elif ch == '"':
                    in_string = True
                    continue
                elif ch in "[{":
                    depth += 1
                    continue
                elif depth == 0:  # a bare value ends at the next ',' or ']'
                    i = j
                elif ch in "]}":
                    depth -= 1
                else:
                    continue
                if depth == 0:
                    consume(i)
                    return size

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
                start_line, problem = line, None
                while True:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                    except json.JSONDecodeError as exc:
                        if not eof and len(buf) - pos <= limit and fill():
                            continue
                        problem = f"not valid JSON ({exc.msg}; element starts on line {start_line})"
                    except RecursionError:
                        problem = f"{_too_deep()} (line {start_line})"
                    break
                if problem is None:
                    problem = _nesting_problem(obj, buf.count("{", pos, end) + buf.count("[", pos, end))
                    line += buf.count("\n", pos, end)
                    pos = end
                    if problem is None and not isinstance(obj, dict):
                        problem = f"expected a JSON object, got {_json_type(obj)}"
                    yield RowError(str(path), index, f"{problem} (line {start_line})") if problem else Record(str(path), index, obj)
                else:
                    size = skip_element()
                    if size is None:
                        yield RowError(str(path), index, f"{problem}; the rest of the file was not read")
                        return
                    yield RowError(str(path), index, f"{_oversized(size, limit, 'characters')} (line {start_line})" if size > limit else problem)
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
    """A CSV/TSV file with a header row; each row becomes {column: text}. Blank lines are skipped.

    A row over the row limit is a RowError: a line that long is never read whole (the csv module
    sees a blank line in its place); a row of many shorter lines is measured once parsed.
    """
    limit = max_row_bytes()
    overlong: dict[int, int] = {}  # line -> its length, for lines given to the csv module as blank

    def lines() -> Iterator[str]:
        for n, line in _bounded_lines(f, limit):
            if isinstance(line, int):
                overlong[n] = line
                line = "\n"
            yield line

    # surrogateescape keeps reading past a bad byte; the row that holds it becomes a RowError.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(lines(), delimiter=delimiter)
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
            if n in overlong:
                yield RowError(str(path), n, _oversized(overlong.pop(n), limit, "characters"))
                if header is None:
                    return  # without its header no row can be read
                continue
            if not cells:
                continue
            bad = _undecodable(cells)
            if header is None:
                if bad or len(set(cells)) != len(cells) or not all(c.strip() for c in cells):
                    yield RowError(str(path), n, "the header row must name every column once" + (" (and be valid UTF-8)" if bad else ""))
                    return
                header = cells
                continue
            size = sum(map(len, cells))
            if size > limit:
                yield RowError(str(path), n, _oversized(size, limit, "characters"))
            elif bad:
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
    n, limit = 0, max_row_bytes()
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                n += 1
                yield _checked(str(path), n, row, limit)
    except (pa.ArrowException, OSError) as exc:
        yield RowError(str(path), n + 1, f"cannot read the rest of the Parquet file ({exc})")


def _iter_dataset(ds, source: str) -> Iterator[Row]:
    limit = max_row_bytes()
    for i, row in enumerate(ds, start=1):
        yield _checked(source, i, dict(row), limit)


# -- image folders --------------------------------------------------------------------------


def _outside(path: Path, inside: Path | None) -> bool:
    """Whether `path`, symlinks followed, lies outside the folder `inside` (None: anywhere is allowed)."""
    return inside is not None and not path.resolve().is_relative_to(inside)


def _iter_image_split(folder: Path, inside: Path | None) -> Iterator[Row]:
    """<folder>/<label>/<image>, or <folder>/metadata.(csv|jsonl) with file_name and label columns.

    Image paths are absolute, so they mean the same file whatever the working folder (a relative
    one would be joined again to its row's source). With `inside` (the resolved data folder), an
    image that resolves outside it is a RowError.
    """
    base = folder.absolute()
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
            image = base / Path(name).expanduser()
            if _outside(image, inside):
                yield RowError(row.source, row.line, f"file_name: {name!r} is outside the data folder {inside}; {OUTSIDE_HINT}")
                continue
            data = {k: v for k, v in row.data.items() if k != "file_name"}
            yield Record(row.source, row.line, {"image": str(image), **data})
        return
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        escapes = _outside(label_dir, inside)
        for img in sorted(label_dir.iterdir()):
            if img.is_file() and img.suffix.lower() in IMAGE_SUFFIXES:
                if escapes or (img.is_symlink() and _outside(img, inside)):
                    yield RowError(str(img), 0, f"links to {img.resolve()}, outside the data folder {inside}; {OUTSIDE_HINT}")
                    continue
                yield Record(str(img), 0, {"image": str(img.absolute()), "label": label_dir.name})
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for name in loose:
        # An image outside any label folder has no label; say so rather than skip it.
        yield RowError(str(folder / name), 0, "image is not inside a <label>/ folder, so it has no label")
