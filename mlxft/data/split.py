"""Seeded train/valid/test splits, stratified by a label, and writing them without touching the user's input.

How rows are counted into splits (the rule `split_rows` keeps):

- The overall split sizes are `n * fraction` rounded by largest remainder, so
  they add up to `n` and each is within 1 of its share.
- With `label_key`, every label's rows are split in the same proportions: a
  label's count in a split is its share rounded down or up (within 1 of
  `n_label * fraction`), and the rounding is chosen so the overall sizes above
  still hold. So a label too small to reach every split (one row at 80/10/10)
  lands in one split only: the one the overall sizes still need, preferring
  the split where its share is largest (usually train). It is never dropped.
- A split with fraction 0 is always empty. Rows without the label key share
  the label `None`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mlxft.atomic import atomic_write_text
from mlxft.data.outputs import explain_write_errors, refuse_writing_over_inputs
from mlxft.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")


def split_rows(
    rows: Sequence[Any],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    label_key: str | Callable[[Any], Any] | None = None,
) -> dict[str, list]:
    """Split `rows` into train/valid(/test) by `fractions`; the same rows and seed always give the same split.

    `fractions` has two (train, valid) or three (train, valid, test) entries that
    add up to 1. `label_key` is a dict key, an attribute name, or a function of a
    row; with it every label is split in proportion (see the module docstring).
    """
    names = _check_fractions(fractions)
    rng = random.Random(seed)
    groups = _group_by_label(rows, label_key)
    # Shuffle each label's rows in a fixed label order so the result depends only on rows and seed.
    for label in groups:
        rng.shuffle(groups[label])
    counts = _stratified_counts([len(g) for g in groups.values()], list(fractions))
    splits: dict[str, list] = {name: [] for name in names}
    for group, group_counts in zip(groups.values(), counts):
        start = 0
        for name, k in zip(names, group_counts):
            splits[name].extend(group[start : start + k])
            start += k
    # Interleave the labels inside each split: training order should not run label by label.
    for name in names:
        rng.shuffle(splits[name])
    return splits


def write_splits(
    splits: dict[str, list],
    out_dir: str | Path,
    *,
    input_paths: Iterable[str | Path] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write each split as `out_dir/<name>.jsonl` (atomically) and return the paths.

    Never writes over one of `input_paths` (the files the rows came from), even
    with `overwrite=True`; refuses existing split files unless `overwrite=True`.
    Every refusal is found before anything is written.
    """
    out_dir = Path(out_dir).expanduser()
    targets = {name: out_dir / f"{name}.jsonl" for name in splits}
    refuse_writing_over_inputs(targets.values(), input_paths, hint="write the splits to a different folder (e.g. data/split)")
    existing = [f"  {path}: already exists" for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise DataError(f"{out_dir}: will not write the splits\n" + "\n".join(existing),
                        hint="choose another folder, or pass --overwrite (overwrite=True) to replace the old split files")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder", hint="give a folder for train.jsonl / valid.jsonl / test.jsonl")
    with explain_write_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, path in targets.items():
            atomic_write_text(path, "".join(json.dumps(_plain(row), ensure_ascii=False) + "\n" for row in splits[name]))
    return targets


def parse_fractions(text: str, flag: str = "--fractions") -> tuple[float, ...]:
    """`0.8,0.1,0.1` as split fractions: 2 or 3 numbers, each above 0 and below 1, adding up to 1 (within 1e-6).

    Stricter than `split_rows` (which allows a 0 for an empty split): a person asking for a split
    wants rows in it; for no test split give two fractions.
    """
    parts = [p.strip() for p in str(text).split(",")]
    problems, values = [], []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            problems.append(f"{part!r} is not a number" if part else "an entry is empty")
            continue
        if not 0 < value < 1:  # also false for nan
            problems.append(f"{part} is not between 0 and 1")
        values.append(value)
    if len(parts) not in (2, 3):
        problems.append(f"give 2 (train, valid) or 3 (train, valid, test) fractions, got {len(parts)}")
    elif not problems and abs(sum(values) - 1.0) > 1e-6:
        problems.append(f"they add up to {sum(values):g}, not 1")
    if problems:
        raise DataError(f"{flag} {text!r}: " + "; ".join(dict.fromkeys(problems)), hint=f"e.g. {flag} 0.8,0.1,0.1 (train, valid, test) or {flag} 0.9,0.1 (train, valid)")
    return tuple(values)


def _check_fractions(fractions: Sequence[float]) -> tuple[str, ...]:
    problems = []
    if len(fractions) not in (2, 3):
        problems.append(f"give 2 (train, valid) or 3 (train, valid, test) fractions, got {len(fractions)}")
    bad = [f for f in fractions if not isinstance(f, (int, float)) or isinstance(f, bool) or not math.isfinite(f) or f < 0]
    if bad:
        problems.append(f"fractions must be numbers >= 0, got {bad}")
    elif fractions and abs(sum(fractions) - 1.0) > 1e-6:
        problems.append(f"fractions must add up to 1, they add up to {sum(fractions):g}")
    if problems:
        raise DataError(f"split fractions {tuple(fractions)}: " + "; ".join(problems), hint="e.g. fractions=(0.8, 0.1, 0.1)")
    return SPLIT_NAMES[: len(fractions)]


def _group_by_label(rows: Sequence[Any], label_key) -> dict[Any, list]:
    if label_key is None:
        return {None: list(rows)}
    groups: dict[Any, list] = {}
    for row in rows:
        groups.setdefault(_label_of(row, label_key), []).append(row)
    return {label: groups[label] for label in sorted(groups, key=lambda v: (type(v).__name__, repr(v)))}


def _label_of(row: Any, label_key) -> Any:
    if callable(label_key):
        value = label_key(row)
    elif isinstance(row, dict):
        value = row.get(label_key)
    else:
        value = getattr(row, label_key, None)
    try:
        hash(value)
    except TypeError:  # a list or dict label still needs to group equal values together
        value = json.dumps(value, sort_keys=True, default=str)
    return value


def _largest_remainder(n: int, fractions: list[float]) -> list[int]:
    ideal = [n * f for f in fractions]
    counts = [math.floor(x) for x in ideal]
    order = sorted(range(len(fractions)), key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _stratified_counts(sizes: list[int], fractions: list[float]) -> list[list[int]]:
    """Per label, how many rows go to each split: each count is floor or ceil of its share, totals as overall.

    This is a 0/1 "controlled rounding": every label has `extra` rows left after
    rounding down, and each split needs `need` more to reach its overall size.
    Ryser's greedy (fill the neediest split from the labels with most rows left)
    finds a way whenever one exists.
    """
    k = len(fractions)
    base = [[math.floor(n * f) for f in fractions] for n in sizes]
    remainder = [[n * f - b for f, b in zip(fractions, row)] for n, row in zip(sizes, base)]
    extra = [n - sum(row) for n, row in zip(sizes, base)]
    totals = _largest_remainder(sum(sizes), fractions)
    need = [totals[i] - sum(row[i] for row in base) for i in range(k)]
    counts = [list(row) for row in base]
    left = list(extra)
    for i in sorted(range(k), key=lambda i: (-need[i], -fractions[i], i)):
        candidates = [g for g in range(len(sizes)) if left[g] > 0 and fractions[i] > 0]
        candidates.sort(key=lambda g: (-left[g], -remainder[g][i], g))
        for g in candidates[: need[i]]:
            counts[g][i] += 1
            left[g] -= 1
    # Should the overall sizes be out of reach, still place every row: by each label's own largest remainder.
    if any(left):
        counts = [_largest_remainder(n, fractions) for n in sizes]
    return counts


def _plain(row: Any) -> Any:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    return row
