"""Validate a data set in one streaming pass: every bad row by file and line, counts, token lengths, duplicates, leakage, labels, images.

`validate_data(path)` reads every split the source has through `readers`, normalises each row
through `formats` and, given a tokenizer, encodes it with the engine's own `SampleEncoder` and
length policy, so the lengths and drops it reports are exactly what training would see.

`report.usable` is the verdict `mlxft data validate` exits on. It is False when training could
not start or would stop on this data:
  - the source has no train split, or the format cannot be determined;
  - any row of any split is malformed (unreadable, or a RowProblem such as a missing field or a
    misordered conversation): the engine refuses a split with a bad row rather than skip it;
  - the train split has no good rows, or the length policy would drop all of them.
Duplicates, leakage, label imbalance, over-long rows and non-RGB images are warnings: training
can go on, but the user should know. Nothing is dropped silently: each drop is counted and listed.
"""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field, fields
from itertools import chain
from pathlib import Path

from mlxft.data import formats
from mlxft.data.readers import Record, RowError, detect_source, find_splits, iter_rows
from mlxft.errors import DataError
from mlxft.textsafe import dump_json, escape_lines

IMBALANCE_RATIO = 3.0  # max/min class count above which the report warns
SHOWN = 50  # problems and pairs printed by format_text; to_json() has them all
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
HISTOGRAM_BINS = 20  # at most; fewer when the lengths span fewer values


@dataclass(frozen=True)
class Problem:
    """One malformed row: where it is, the field at fault (None: the whole row) and why."""

    split: str
    where: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: " + (f"{self.field}: " if self.field else "") + self.reason


@dataclass
class SplitReport:
    """What one split holds. `rows` = `good` + `bad`; pairs are (this row, the row it repeats)."""

    name: str
    rows: int = 0
    good: int = 0
    bad: int = 0
    formats: Counter = field(default_factory=Counter)
    token_lengths: dict | None = None  # min, median, p95, max and histogram over the good rows, before the length policy
    over_max_length: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_target: int = 0
    dropped_where: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str]] = field(default_factory=list)
    leaked: list[tuple[str, str]] = field(default_factory=list)  # (this row, the train row it repeats)
    labels: Counter = field(default_factory=Counter)
    image_sizes: dict | None = None  # width and height: min, median, max
    image_modes: Counter = field(default_factory=Counter)

    @property
    def usable_rows(self) -> int:
        """Good rows left after the length policy: what training would use."""
        return self.good - self.dropped_overlong - self.dropped_no_target


@dataclass
class ValidationReport:
    """Everything `validate_data` found; `usable` says whether training could run on it."""

    path: str
    source: str
    format: str | None
    max_seq_length: int
    overlong: str
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # reasons training cannot start, beyond row problems
    warnings: list[str] = field(default_factory=list)
    class_weights: dict | None = None

    @property
    def usable(self) -> bool:
        return not self.errors and not self.problems

    def to_dict(self) -> dict:
        """Plain JSON values; label keys become strings (JSON object keys must be)."""

        def plain(value):
            # asdict() would rebuild a Counter from its (key, count) pairs, so convert by hand.
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, (SplitReport, Problem)):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            return value

        out = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        out["usable"] = self.usable
        return out

    def to_json(self) -> str:
        return dump_json(self.to_dict(), indent=2)

    def format_text(self) -> str:
        """The report for a terminal; labels, reasons and locations come from the data, so every line is escaped."""
        lines = [f"{self.path} ({self.source}), format: {self.format or 'unknown'}"]
        for s in self.splits.values():
            lines.append(f"  {s.name}: {s.rows} rows, {s.good} good, {s.bad} bad" + (f"  [{', '.join(f'{k}: {v}' for k, v in s.formats.items())}]" if s.formats else ""))
            if s.token_lengths:
                t = s.token_lengths
                lines.append(f"    tokens min/median/p95/max: {t['min']}/{t['median']}/{t['p95']}/{t['max']}; {s.over_max_length} over max_seq_length {self.max_seq_length}")
            policy = [f"{n} {what}" for n, what in ((s.truncated, "will be truncated"), (s.dropped_overlong, "will be dropped as over-long"), (s.dropped_no_target, "will be dropped with nothing to learn")) if n]
            if policy:
                lines.append(f"    length policy ({self.overlong}): " + "; ".join(policy))
                lines += [f"      {w}" for w in s.dropped_where[:SHOWN]]
            if s.labels:
                lines.append("    labels: " + ", ".join(f"{k}: {v}" for k, v in sorted(s.labels.items(), key=lambda kv: str(kv[0]))))
            if s.image_sizes:
                w, h = s.image_sizes["width"], s.image_sizes["height"]
                lines.append(f"    images: width {w['min']}-{w['max']} (median {w['median']}), height {h['min']}-{h['max']} (median {h['median']}); modes " + ", ".join(f"{k}: {v}" for k, v in s.image_modes.most_common()))
            for title, pairs in (("exact duplicates", s.duplicates), ("near duplicates", s.near_duplicates), ("also in train (leakage)", s.leaked)):
                if pairs:
                    lines.append(f"    {len(pairs)} {title}:")
                    lines += [f"      {a} repeats {b}" for a, b in pairs[:SHOWN]]
                    if len(pairs) > SHOWN:
                        lines.append(f"      ... and {len(pairs) - SHOWN} more (see --json)")
        if self.class_weights:
            lines.append("  suggested class weights: " + ", ".join(f"{k}: {v:.3g}" for k, v in self.class_weights.items()))
        if self.problems:
            lines.append(f"{len(self.problems)} malformed row(s):")
            lines += [f"  {p}" for p in self.problems[:SHOWN]]
            if len(self.problems) > SHOWN:
                lines.append(f"  ... and {len(self.problems) - SHOWN} more (see --json)")
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("usable: yes" if self.usable else "usable: NO, fix the errors and malformed rows above")
        return escape_lines(lines)


def normalized_text(text: str) -> str:
    """Lowercase, punctuation stripped, whitespace collapsed: what near duplicates share."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def _digest(text: str) -> int:
    # 8 bytes as an int keeps each remembered example small; collisions need ~4e9 rows.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class _Locations:
    """Row locations packed into one int each, so remembering every example of a 1 GB file stays small."""

    def __init__(self):
        self.sources: list[str] = []
        self.ids: dict[str, int] = {}

    def pack(self, row: Record) -> int:
        sid = self.ids.setdefault(row.source, len(self.sources))
        if sid == len(self.sources):
            self.sources.append(row.source)
        return sid << 32 | row.line

    def where(self, packed: int) -> str:
        source, line = self.sources[packed >> 32], packed & 0xFFFFFFFF
        return f"{source}:{line}" if line else source


def _spread(values: array, *, p95: bool = True) -> dict:
    import numpy as np

    a = np.frombuffer(values, dtype=np.int64)
    out = {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}
    if p95:
        out["p95"] = float(np.percentile(a, 95))
    return out


def _histogram(values: array, bins: int = HISTOGRAM_BINS) -> dict:
    """Equal-width bins with whole-number edges: bin i holds lo[i] <= value < lo[i+1] (the last edge is max + 1)."""
    import numpy as np

    a = np.frombuffer(values, dtype=np.int64)
    low, high = int(a.min()), int(a.max())
    width = -(-(high - low + 1) // bins)  # ceiling: every value gets a bin
    counts = np.bincount((a - low) // width)
    return {"edges": [low + i * width for i in range(len(counts) + 1)], "counts": [int(c) for c in counts]}


class _Encoder:
    """The engine's encoder and length policy, applied to already-normalised rows."""

    def __init__(self, tokenizer, max_len: int, overlong: str, mask_prompt: bool):
        from mlxft.data.encode import SampleEncoder
        from mlxft.recipe import DataSection

        from mlxft.data.pairs import PairEncoder

        self.encoder = SampleEncoder(tokenizer, DataSection(path="-", mask_prompt=mask_prompt))
        self.pairs = PairEncoder(tokenizer, DataSection(path="-", format="preference"))
        self.max_len, self.overlong = max_len, overlong

    def measure(self, record: Record, canonical: dict, split: SplitReport, lengths: array) -> None:
        from mlxft.data.encode import EncodeStats, apply_length_policy

        if "chosen" in canonical:  # a preference pair: its longer answer with the prompt, as the DPO/ORPO trainer sees it
            from mlxft.data.pairs import PairStats

            pair = self.pairs.encode(record)
            longest = max(len(pair[0]), len(pair[1]))
            lengths.append(longest)
            split.over_max_length += longest > self.max_len
            stats = PairStats()
            if self.pairs.fit(pair, record.where, self.max_len, self.overlong, stats) is None:
                split.dropped_overlong += 1
                split.dropped_where += stats.dropped_where
            split.truncated += stats.prompt_truncated
            return
        row = {"text": canonical["text"]} if "label" in canonical else canonical  # a classifier reads the text
        fmt = "chat" if "messages" in row else "completion" if "completion" in row else "text"
        enc = self.encoder.encode(Record(record.source, record.line, row), fmt)
        lengths.append(len(enc))
        split.over_max_length += len(enc) > self.max_len
        if "label" in canonical:
            return  # the length policy (and prompt masking) is the language-model trainer's
        stats = EncodeStats()
        apply_length_policy(enc, record.where, self.max_len, self.overlong, stats)
        split.truncated += stats.truncated
        split.dropped_overlong += stats.dropped_overlong
        split.dropped_no_target += stats.dropped_no_target
        split.dropped_where += stats.dropped_where


def validate_data(
    path: str | Path,
    *,
    fmt: str = "auto",
    mapping: dict | None = None,
    tokenizer=None,
    max_seq_length: int = 2048,
    overlong: str = "truncate",
    mask_prompt: bool = True,
    allow_outside_paths: bool = False,
) -> ValidationReport:
    """Read every split of `path` once and report what training would make of it (see the module docstring).

    A path that does not exist, or a bad `fmt`/`mapping`, is a DataError; everything about the
    rows themselves goes in the report. An image folder's images outside it are malformed rows
    unless `allow_outside_paths`.
    """
    if fmt != "auto" and fmt not in formats.FORMATS:
        raise DataError(f"unknown data format {fmt!r}", hint=f"formats: auto, {', '.join(formats.FORMATS)}")
    if overlong not in ("truncate", "drop"):
        raise DataError(f"overlong is {overlong!r}", hint="truncate or drop")
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise DataError(f"max_seq_length (--max-seq-length): {max_seq_length!r} must be a whole number >= 1", hint="the longest sequence training keeps, e.g. 2048")
    formats.column_names(mapping)  # a bad mapping fails here, before any reading
    report = ValidationReport(str(path), detect_source(path), None if fmt == "auto" else fmt, max_seq_length, overlong)
    names = find_splits(path)
    if "train" not in names:
        report.errors.append(f"no train split (found: {', '.join(names) or 'nothing'})")
    if not names:
        return report
    first = iter_rows(path, names[0], allow_outside_paths=allow_outside_paths)
    head = []
    if fmt == "auto":
        for row in first:
            head.append(row)
            if sum(isinstance(r, Record) for r in head) >= formats.DETECT_ROWS:
                break
        try:
            report.format = formats.detect_format(head, mapping)
        except DataError as exc:
            report.errors.append(f"{exc.message} ({exc.hint})")
    encoder = _Encoder(tokenizer, max_seq_length, overlong, mask_prompt) if tokenizer is not None and report.format in {*formats.LM_FORM, "classification", "preference"} else None
    train_keys: dict[int, int] = {}
    locations = _Locations()
    for name in names:
        rows = chain(head, first) if name == names[0] else iter_rows(path, name, allow_outside_paths=allow_outside_paths)
        report.splits[name] = _validate_split(name, rows, report, mapping, encoder, train_keys, locations)
    _summarize(report)
    return report


def _keys(canonical: dict, image: formats.ImageFacts | None) -> tuple[int, int, int]:
    """(exact, near, leak) keys of one example. Images compare by content, not by path."""
    if image is not None:
        exact = _digest(f"{image.digest}\n{canonical['label']}")
        return exact, _digest(image.digest), _digest(image.digest)
    exact = _digest(json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=str))
    near = _digest(normalized_text(formats.example_text(canonical)))
    # A classification text in train and test leaks even when the labels differ.
    leak = _digest(normalized_text(canonical["text"])) if "label" in canonical else near
    return exact, near, leak


def _validate_split(name, rows, report: ValidationReport, mapping, encoder, train_keys: dict, locations: _Locations) -> SplitReport:
    split = SplitReport(name)
    exact_seen: dict[int, int] = {}
    near_seen: dict[int, int] = {}
    image_col = formats.column_names(mapping)["image"]
    lengths, widths, heights = array("q"), array("q"), array("q")
    for row in rows:
        split.rows += 1
        if isinstance(row, RowError):
            split.bad += 1
            report.problems.append(Problem(name, row.where, None, row.reason))
            continue
        if report.format is None:
            continue  # counted; without a format there is nothing more to check
        try:
            canonical = formats.normalize(row, report.format, mapping, check_images=False)
            image = formats.inspect_image(canonical["image"], image_col) if "image" in canonical else None
            if encoder is not None:
                encoder.measure(row, canonical, split, lengths)
        except formats.RowProblem as p:
            split.bad += 1
            report.problems.append(Problem(name, row.where, p.field, p.reason))
            continue
        except DataError as exc:  # the encoder's own refusals (e.g. no chat template) name the row already
            split.bad += 1
            report.problems.append(Problem(name, row.where, None, exc.message.removeprefix(f"{row.where}: ")))
            continue
        split.good += 1
        split.formats[report.format] += 1
        if "label" in canonical:
            split.labels[canonical["label"]] += 1
        if image is not None:
            widths.append(image.width)
            heights.append(image.height)
            split.image_modes[image.mode] += 1
        exact, near, leak = _keys(canonical, image)
        here = locations.pack(row)
        if exact in exact_seen:
            split.duplicates.append((row.where, locations.where(exact_seen[exact])))
        elif near in near_seen:
            split.near_duplicates.append((row.where, locations.where(near_seen[near])))
        exact_seen.setdefault(exact, here)
        near_seen.setdefault(near, here)
        if name == "train":
            train_keys.setdefault(leak, here)
        elif leak in train_keys:
            split.leaked.append((row.where, locations.where(train_keys[leak])))
    if lengths:
        split.token_lengths = {**_spread(lengths), "histogram": _histogram(lengths)}
    if widths:
        split.image_sizes = {"width": _spread(widths, p95=False), "height": _spread(heights, p95=False)}
    return split


def _summarize(report: ValidationReport) -> None:
    """The verdict's errors and the warnings, from the per-split counts."""
    train = report.splits.get("train")
    if train is not None and report.format is not None:
        if train.good == 0:
            report.errors.append("the train split has no good rows")
        elif train.usable_rows == 0:
            report.errors.append(f"the length policy ({report.overlong}) would drop every train row")
    for s in report.splits.values():
        n = s.truncated + s.dropped_overlong
        if s.over_max_length:
            what = "truncated" if report.overlong == "truncate" else "dropped"
            report.warnings.append(f"{s.name}: {s.over_max_length} row(s) longer than max_seq_length {report.max_seq_length}" + (f" will be {what}" if n else " (a classifier truncates them)"))
        if s.dropped_no_target:
            report.warnings.append(f"{s.name}: {s.dropped_no_target} row(s) have no trainable tokens after truncation and will be dropped")
        if s.duplicates:
            report.warnings.append(f"{s.name}: {len(s.duplicates)} exact duplicate row(s)")
        if s.near_duplicates:
            report.warnings.append(f"{s.name}: {len(s.near_duplicates)} near-duplicate row(s) (same text up to case, punctuation and spacing)")
        if s.leaked:
            report.warnings.append(f"{s.name}: {len(s.leaked)} row(s) also appear in train, so evaluation on {s.name} overstates quality")
        odd = {m: c for m, c in s.image_modes.items() if m != "RGB"}
        if odd:
            kinds = ", ".join(f"{m}{' (grayscale)' if m in GRAYSCALE_MODES else ''}: {c}" for m, c in sorted(odd.items()))
            report.warnings.append(f"{s.name}: {sum(odd.values())} image(s) are not RGB ({kinds}); they need converting to RGB for a 3-channel backbone")
    if train is not None and train.labels:
        counts = train.labels
        if len(counts) == 1:
            report.warnings.append(f"train: every row has the label {next(iter(counts))!r}; a classifier needs at least two classes")
        elif max(counts.values()) / min(counts.values()) > IMBALANCE_RATIO:
            (big, nb), (small, ns) = counts.most_common()[0], counts.most_common()[-1]
            report.warnings.append(f"train: labels are imbalanced ({big!r}: {nb} vs {small!r}: {ns}, ratio {nb / ns:.1f} > {IMBALANCE_RATIO:g}); consider the suggested class weights")
        total = sum(counts.values())
        report.class_weights = {label: total / (len(counts) * c) for label, c in sorted(counts.items(), key=lambda kv: str(kv[0]))}
        for s in report.splits.values():
            unseen = sorted(str(k) for k in s.labels if k not in counts)
            if s.name != "train" and unseen:
                report.warnings.append(f"{s.name}: label(s) never seen in train: {', '.join(unseen[:10])}")
