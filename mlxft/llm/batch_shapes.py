"""The batches a run will train on, measured from its data before any weights load: what the memory plan sizes.

`measure_train_lengths(recipe)` encodes the train split with the engine's own encoder and length policy
(`encode_records`, the code training runs) using only the tokenizer, and keeps each sample's length and
trained positions. `candidate_batches` rebuilds the run's batches from them (`epoch_order` and `collate`'s
padding), so the plan is sized by the longest batch the run will really see, not by `max_seq_length`.
Large splits are sampled: the longest rows by size (they make the longest batches) and a seeded sample.
"""

from __future__ import annotations

import heapq
import math
import os
import random
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

from mlxft.data.batches import PAD_MULTIPLE, TARGET_MULTIPLE, epoch_order, pack_layout
from mlxft.errors import DataError, MlxftError

EXACT_ROWS = 5000  # up to this many train rows, every one is encoded (~2-3 s of tokenizing on 2 CPU cores)
LONGEST_ROWS = 256  # beyond it, the longest rows by size are encoded ...
SAMPLE_ROWS = 1000  # ... and this many others drawn with a fixed seed
SIMULATED_EPOCHS = 8  # a run's batch order is rebuilt for at most this many epochs; beyond, every batch is seen


def padded_length(tokens: int) -> int:
    """The padded width of a batch whose longest sample has `tokens` tokens (inputs are one shorter), as `collate` pads."""
    return _round_up(tokens - 1, PAD_MULTIPLE)


def _round_up(n: int, k: int) -> int:
    return max(k, -(-n // k) * k)


@dataclass(frozen=True)
class BatchShape:
    """One batch as the training step sees it: samples x padded length, and the positions the loss reads."""

    batch: int
    length: int  # padded to PAD_MULTIPLE
    trained: int  # padded to TARGET_MULTIPLE; the LM head runs on these rows only

    def settings(self) -> dict:
        """The estimate_memory keywords for this batch."""
        return dict(batch_size=self.batch, seq_len=self.length, trained_tokens=self.trained)


def ceiling_batch(batch_size: int, max_seq_length: int, one_position: bool = False) -> BatchShape:
    """The largest batch a recipe allows: every sample max_seq_length tokens, every position trained
    (`one_position`: a classifier's, which feeds the whole prompt and reads one position of each)."""
    if one_position:
        return BatchShape(batch_size, _round_up(max_seq_length, PAD_MULTIPLE), _round_up(batch_size, TARGET_MULTIPLE))
    length = padded_length(max_seq_length)
    return BatchShape(batch_size, length, batch_size * length)


@dataclass(frozen=True)
class DataLengths:
    """A train split as training encodes it: tokens and trained positions per sample, after the length policy.

    `exact`: every row was encoded, in data order, so the run's own batches can be rebuilt. Otherwise the
    samples are the LONGEST_ROWS longest rows by size plus SAMPLE_ROWS drawn with a fixed seed, out of `rows`.
    `problem` says why nothing was measured; the plan then falls back to max_seq_length and says so.
    """

    path: str
    lengths: tuple[int, ...] = ()
    trained: tuple[int, ...] = ()
    rows: int = 0
    exact: bool = True
    problem: str | None = None

    @property
    def samples(self) -> int:
        return len(self.lengths)

    def capped(self, max_seq_length: int, overlong: str) -> DataLengths:
        """The same samples under a smaller max_seq_length; a truncated sample keeps at most all its positions trained."""
        if not self.lengths or max(self.lengths) <= max_seq_length:
            return self
        pairs = [(n, t) for n, t in zip(self.lengths, self.trained) if overlong == "truncate" or n <= max_seq_length]
        lengths = tuple(min(n, max_seq_length) for n, _ in pairs)
        trained = tuple(min(t, max_seq_length - 1) for _, t in pairs)
        return replace(self, lengths=lengths, trained=trained)


def candidate_batches(data: DataLengths, batch_size: int, micro_batches: int | None, seed: int, batching: str,
                      packing: tuple[int, float] | None = None, ranks: int = 1) -> tuple[list[BatchShape], str]:
    """The batches that could set the run's peak (none smaller in every dimension than another), and what they are.

    `micro_batches` is how many batches the run computes (steps x accumulation; None: whole epochs). With every
    sample measured, the run's own batch order is rebuilt; from a sample, the longest samples fill whole batches.
    `packing` (max row, attention cost): batching pack lays each batch out as `pack` does (rows x row length).
    `ranks` > 1: the shapes are those of one rank's part (every ranks-th sample of each batch, as the Trainer shards it).
    """
    n = data.samples
    if batching == "pack" and packing is not None:
        one = lambda ls, ts: packed_shape(ls, ts, *packing)  # noqa: E731
    else:
        one = batch_shape

    def shapes_of(batch: list[int]) -> list[BatchShape]:
        parts = [batch[r::ranks] for r in range(min(ranks, len(batch)))]
        return [one([data.lengths[i] for i in part], [data.trained[i] for i in part]) for part in parts]

    if data.exact:
        per_epoch = math.ceil(n / batch_size)
        wanted = per_epoch if micro_batches is None else micro_batches
        epochs = math.ceil(wanted / per_epoch)
        if epochs > SIMULATED_EPOCHS and batching in ("bucket", "pack"):
            # Bucketed batches hold the same samples every epoch (only ties move), so one epoch shows them all.
            batches, seen = epoch_order(list(data.lengths), batch_size, seed, 0, batching), per_epoch
        else:
            batches = [b for e in range(min(epochs, SIMULATED_EPOCHS)) for b in epoch_order(list(data.lengths), batch_size, seed, e, batching)]
            batches, seen = batches[:wanted], min(wanted, len(batches))
        shapes = [shape for b in batches for shape in shapes_of(b)]
        if epochs > SIMULATED_EPOCHS and batching == "pad":
            shapes.append(_worst_random_batch(data, -(-batch_size // ranks)))  # later epochs may group the longest samples
        what = f"the largest of the {seen:,} batches this run trains on" if seen < per_epoch else f"the largest of {per_epoch:,} batches of {n:,} samples"
        return _frontier(shapes), what
    order = sorted(range(n), key=lambda i: (data.lengths[i], data.trained[i]), reverse=True)
    shapes = [shape for k in range(0, n, batch_size) for shape in shapes_of(order[k:k + batch_size])]
    drawn = min(SAMPLE_ROWS, data.rows - LONGEST_ROWS)
    what = f"estimated from the {LONGEST_ROWS:,} longest of {data.rows:,} rows by size and {drawn:,} drawn at random"
    return _frontier(shapes), what


def batch_shape(lengths: list[int], trained: list[int]) -> BatchShape:
    """The shape `collate` gives samples of these token lengths and trained positions."""
    return BatchShape(len(lengths), padded_length(max(lengths)), _round_up(sum(trained), TARGET_MULTIPLE))


def packed_shape(lengths: list[int], trained: list[int], max_row: int, attention_cost: float) -> BatchShape:
    """The shape `pack` gives samples of these token lengths: its rows, their length and the trained positions."""
    length, rows = pack_layout([n - 1 for n in lengths], max_row, attention_cost)
    return BatchShape(len(rows), length, _round_up(sum(trained), TARGET_MULTIPLE))


def _worst_random_batch(data: DataLengths, batch_size: int) -> BatchShape:
    """With random batches, the longest sample may meet the samples with the most trained positions."""
    longest = max(data.lengths)
    trained = sum(sorted(data.trained, reverse=True)[:batch_size])
    shape = batch_shape([longest], [trained])
    return BatchShape(min(batch_size, data.samples), shape.length, min(shape.trained, batch_size * shape.length))


def _frontier(shapes: list[BatchShape]) -> list[BatchShape]:
    """Drop every shape that another matches or exceeds in batch, length and trained positions (it needs no more memory)."""
    kept: list[BatchShape] = []
    for s in sorted(set(shapes), key=lambda s: (s.length, s.batch, s.trained), reverse=True):
        if not any(k.batch >= s.batch and k.length >= s.length and k.trained >= s.trained for k in kept):
            kept.append(s)
    return kept


# ---------------------------------------------------------------------------------------------------------
# Measuring a recipe's data

_CACHE: dict[tuple, DataLengths] = {}
_CACHE_SIZE = 8
_TOKENIZERS: dict[tuple, object] = {}


def measure_train_lengths(recipe, *, allow_download: bool = False) -> DataLengths:
    """The recipe's train split as training would encode it, with only the tokenizer loaded; never raises for bad input.

    Local data only (a Hub dataset is not downloaded to plan). `allow_download` lets a catalogue key or Hub id
    fetch its tokenizer files; otherwise only a local folder or the Hugging Face cache is used. Results are kept
    per (model, data section, data files' sizes and times), so a form that changes only the batch size re-plans at once.
    """
    d = recipe.data
    key = _key(recipe)
    if isinstance(key, DataLengths):
        return key
    if key in _CACHE:
        return _CACHE[key]
    try:
        tokenizer = _plan_tokenizer(recipe, allow_download)
    except MlxftError as exc:  # not kept: the tokenizer may be downloaded or fixed without the data changing
        return DataLengths(d.path, problem=f"no tokenizer at hand ({exc.message.splitlines()[0]})")
    try:
        measured = _measure(recipe, tokenizer)
    except MlxftError as exc:  # e.g. bad rows: training would refuse them too
        measured = DataLengths(d.path, problem=exc.message.splitlines()[0].rstrip(":"))
    except OSError as exc:
        measured = DataLengths(d.path, problem=f"cannot read {d.path} ({exc.strerror or exc})")
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = measured
    return measured


def cached_train_lengths(recipe) -> DataLengths | None:
    """What `measure_train_lengths` would return without tokenizing anything, or None when that needs tokenizing."""
    key = _key(recipe)
    return key if isinstance(key, DataLengths) else _CACHE.get(key)


def _key(recipe) -> tuple | DataLengths:
    """The cache key of a recipe's measurement, or the answer itself when there is nothing to measure."""
    d = recipe.data
    path = Path(d.path).expanduser()
    if not path.exists():
        from mlxft.data.readers import detect_source

        hub = not d.path.startswith((".", "/", "~")) and detect_source(d.path) == "hub"
        return DataLengths(d.path, problem="the data is a Hub dataset, not downloaded to plan" if hub else f"no data at {d.path}")
    try:
        return (recipe.model, recipe.trust_remote_code, d.model_dump_json(), _stamp(path))
    except OSError as exc:
        return DataLengths(d.path, problem=f"cannot read {d.path} ({exc.strerror or exc})")


def _stamp(path: Path) -> tuple:
    """Sizes and modification times of the data's files: a changed file is measured again."""
    files = [path] if path.is_file() else sorted(islice((p for p in path.rglob("*") if p.is_file()), 10_000))
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in (os.stat(p),))


def _plan_tokenizer(recipe, allow_download: bool):
    from mlxft.llm.loading import TOKENIZER_PATTERNS, load_tokenizer, resolve_model_path

    spec = recipe.model
    key = (spec, recipe.trust_remote_code)
    if key not in _TOKENIZERS:
        path = Path(spec).expanduser()
        if not path.is_dir():
            if path.suffix.lower() == ".gguf" and not allow_download:
                raise MlxftError(f"{spec}: a GGUF's tokenizer is read when it is imported, not to plan")
            path = resolve_model_path(spec, allow_download=allow_download, patterns=TOKENIZER_PATTERNS)
        _TOKENIZERS.clear()  # one at a time: a tokenizer can hold hundreds of MB
        _TOKENIZERS[key] = load_tokenizer(str(path), trust_remote_code=recipe.trust_remote_code)
    return _TOKENIZERS[key]


def _measure(recipe, tokenizer) -> DataLengths:
    from mlxft.data.encode import SampleEncoder, encode_records
    from mlxft.data.pairs import PairEncoder, encode_pairs
    from mlxft.data.readers import Record, canonical_split, find_splits, iter_rows
    from mlxft.recipe import CLASSIFY_KINDS, PREFERENCE_KINDS

    d = recipe.data
    if canonical_split(d.train_split) not in find_splits(d.path):
        return DataLengths(d.path, problem=f"{d.path} has no '{d.train_split}' split")
    rows, picked, exact = 0, [], True
    longest: list[tuple[int, int, Record]] = []  # a min-heap of (size, row number, record)
    sample: list[Record] = []
    draw = random.Random(0)
    unreadable = 0
    for row in iter_rows(d.path, d.train_split):
        if not isinstance(row, Record):
            unreadable += 1
            continue
        rows += 1
        if exact and rows <= EXACT_ROWS:
            picked.append(row)
            continue
        if exact:  # one row too many: keep only the longest rows and a sample from here on
            exact = False
            for i, r in enumerate(picked):
                _keep(longest, sample, draw, (_size(r.data), i, r), i + 1)
            picked = []
        _keep(longest, sample, draw, (_size(row.data), rows - 1, row), rows)
    if unreadable:
        return DataLengths(d.path, rows=rows, problem=f"{unreadable} unreadable row(s) in the {d.train_split} split (`mlxft data validate {d.path}` lists them)")
    if not exact:
        picked = [r for _, _, r in sorted(longest, reverse=True)] + sample
    try:
        if recipe.kind in CLASSIFY_KINDS:
            from mlxft.llm.classify import measure_prompt_lengths

            # A classifier feeds the whole prompt (one longer than an SFT sample's inputs) and reads one position of each.
            lengths = tuple(n + 1 for n in measure_prompt_lengths(recipe, tokenizer, picked))
            if not lengths:
                return DataLengths(d.path, rows=rows, problem=f"no usable texts in the {d.train_split} split")
            return DataLengths(d.path, lengths, (1,) * len(lengths), rows, exact)
        if recipe.kind in PREFERENCE_KINDS:
            # A pair counts as one sample as long as its longer answer, trained on both answers' tokens.
            pairs, _ = encode_pairs(picked, PairEncoder(tokenizer, d), d.max_seq_length, d.overlong)
            lengths, trained = tuple(len(p) for p in pairs), tuple(p.chosen.trained_tokens + p.rejected.trained_tokens for p in pairs)
            if not pairs:
                return DataLengths(d.path, rows=rows, problem=f"no usable pairs in the {d.train_split} split")
            return DataLengths(d.path, lengths, trained, rows, exact)
        encoded, _ = encode_records(picked, SampleEncoder(tokenizer, d), d.format, d.max_seq_length, d.overlong)
    except DataError as exc:
        bad = exc.message.splitlines()[0].rstrip(":")
        return DataLengths(d.path, rows=rows, problem=f"{bad}, which training refuses; `mlxft data validate {d.path} --model {recipe.model}` names them")
    if not encoded:
        return DataLengths(d.path, rows=rows, problem=f"no usable samples in the {d.train_split} split")
    return DataLengths(d.path, tuple(len(e) for e in encoded), tuple(e.trained_tokens for e in encoded), rows, exact)


def _keep(longest: list, sample: list, draw: random.Random, item: tuple, seen: int) -> None:
    """Keep `item` among the LONGEST_ROWS largest; what falls out competes for a uniform sample (reservoir)."""
    out = heapq.heappushpop(longest, item) if len(longest) >= LONGEST_ROWS else heapq.heappush(longest, item)
    if out is None:
        return
    others = seen - LONGEST_ROWS
    if len(sample) < SAMPLE_ROWS:
        sample.append(out[2])
    elif (j := draw.randrange(others)) < SAMPLE_ROWS:
        sample[j] = out[2]


def _size(value) -> int:
    """UTF-8 bytes of every string in a row (iteratively: a deeply nested row must not overflow the stack)."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += len(v.encode("utf-8", "surrogatepass"))
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total
