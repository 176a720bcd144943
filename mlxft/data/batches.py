"""Batches with little padding: length-bucketed, seeded per epoch so a resumed run sees the same order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlxft.data.encode import Encoded

PAD_MULTIPLE = 8  # sequence lengths are rounded up to this: fewer distinct shapes for the compiled step
TARGET_MULTIPLE = 32  # and the count of trained positions to this


@dataclass
class Batch:
    inputs: np.ndarray  # int32 [B, L]
    targets: np.ndarray  # int32 [B, L]
    positions: np.ndarray  # int32 [T]: flat indices (into B*L) of trained positions, padded
    weights: np.ndarray  # float32 [T]: 1 for real trained positions, 0 for padding
    trained_tokens: int
    padded_tokens: int  # B*L, what the forward pass computes


def epoch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, mode: str) -> list[list[int]]:
    """The batches (lists of sample indices) of one epoch; a pure function of its arguments."""
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    if mode in ("bucket", "pack"):  # pack: the same batches, laid out without padding (see `pack`)
        # Sort by length with a random tie-break, cut into batches, then shuffle the batch order.
        order = np.lexsort((rng.random(n), np.asarray(lengths)))
        batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]
    order = rng.permutation(n)
    return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def eval_order(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _round_up(n: int, k: int) -> int:
    return max(k, -(-n // k) * k)


def padded_width(positions: int) -> int:
    """The width `collate` pads a batch to whose longest sample has this many positions."""
    return _round_up(positions, PAD_MULTIPLE)


def _trained_positions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The flat indices of the trained positions, padded to TARGET_MULTIPLE, their 0/1 weights, and how many are real."""
    flat = np.flatnonzero(mask.reshape(-1)).astype(np.int32)
    T = _round_up(len(flat), TARGET_MULTIPLE)
    positions = np.zeros(T, dtype=np.int32)
    positions[: len(flat)] = flat
    weights = np.zeros(T, dtype=np.float32)
    weights[: len(flat)] = 1.0
    return positions, weights, int(len(flat))


def collate(samples: list[Encoded], pad_id: int = 0) -> Batch:
    """Shift to (inputs, targets), pad to a multiple of 8, and list the trained positions."""
    longest = max(len(s) for s in samples) - 1
    L = padded_width(longest)
    B = len(samples)
    inputs = np.full((B, L), pad_id, dtype=np.int32)
    targets = np.full((B, L), pad_id, dtype=np.int32)
    mask = np.zeros((B, L), dtype=bool)
    for i, s in enumerate(samples):
        n = len(s) - 1
        inputs[i, :n] = s.ids[:-1]
        targets[i, :n] = s.ids[1:]
        mask[i, :n] = s.mask[1:]
    positions, weights, trained = _trained_positions(mask)
    return Batch(inputs, targets, positions, weights, trained, B * L)


# -- packing: a batch's samples laid out padding-free ------------------------------------------------


@dataclass
class PackedBatch(Batch):
    """A batch whose samples sit end to end in rows; `segments` [R, L] numbers each position's sample (-1: padding).

    Attention must stay inside a segment (block-diagonal causal); the loss rows (`positions`) are those of `collate`.
    """

    segments: np.ndarray | None = None  # int32 [R, L]
    real_tokens: int = 0  # positions that hold a sample's token (the rest is padding)


def pack_rows(sizes: list[int], row_length: int) -> list[list[int]]:
    """First-fit decreasing: the indices of `sizes` grouped into rows whose sizes sum to at most `row_length`."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for r, room in enumerate(free):
            if sizes[i] <= room:
                rows[r].append(i)
                free[r] -= sizes[i]
                break
        else:
            rows.append([i])
            free.append(row_length - sizes[i])
    for row in rows:
        row.sort()  # samples keep their batch order within a row
    return rows


def pack_layout(sizes: list[int], max_row: int, attention_cost: float) -> tuple[int, list[list[int]]]:
    """The row length and rows that compute `sizes` (positions per sample) most cheaply.

    Longer rows waste less on padding but attend over more positions: a row of length L costs L * (1 + attention_cost
    * L) in units of one position's non-attention work. Candidates are multiples of the longest sample up to `max_row`
    (rounded to PAD_MULTIPLE); first-fit decreasing fills each.
    """
    longest = _round_up(max(sizes), PAD_MULTIPLE)
    top = max(longest, min(_round_up(max_row, PAD_MULTIPLE), _round_up(sum(sizes), PAD_MULTIPLE)))
    candidates = sorted({min(longest * k, top) for k in range(1, max(1, top // longest) + 2)} | {top})
    best = None
    for length in candidates:
        rows = pack_rows(sizes, length)
        cost = len(rows) * length * (1.0 + attention_cost * length)
        if best is None or cost <= best[0] + 1e-9:  # a tie goes to fewer, longer rows (larger matmuls)
            best = (cost, length, rows)
    return best[1], best[2]


def pack(samples: list[Encoded], pad_id: int = 0, max_row: int = 2048, attention_cost: float = 0.0) -> Batch | PackedBatch:
    """Shift each sample to (inputs, targets) and lay the samples end to end in rows (see `pack_layout`).

    No target crosses a sample boundary: a sample of n tokens gives n - 1 positions, as in `collate`.
    """
    sizes = [len(s) - 1 for s in samples]
    L, rows = pack_layout(sizes, max_row, attention_cost)
    if all(len(row) == 1 for row in rows):
        return collate(samples, pad_id)  # nothing shares a row: the plain causal batch is the same layout, and cheaper
    R = len(rows)
    inputs = np.full((R, L), pad_id, dtype=np.int32)
    targets = np.full((R, L), pad_id, dtype=np.int32)
    segments = np.full((R, L), -1, dtype=np.int32)
    mask = np.zeros((R, L), dtype=bool)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s, n = samples[i], sizes[i]
            inputs[r, at : at + n] = s.ids[:-1]
            targets[r, at : at + n] = s.ids[1:]
            mask[r, at : at + n] = s.mask[1:]
            segments[r, at : at + n] = i
            at += n
    positions, weights, trained = _trained_positions(mask)
    return PackedBatch(inputs, targets, positions, weights, trained, R * L, segments=segments, real_tokens=int(sum(sizes)))
