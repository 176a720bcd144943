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
    if mode == "bucket":
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


def collate(samples: list[Encoded], pad_id: int = 0) -> Batch:
    """Shift to (inputs, targets), pad to a multiple of 8, and list the trained positions."""
    longest = max(len(s) for s in samples) - 1
    L = _round_up(longest, PAD_MULTIPLE)
    B = len(samples)
    inputs = np.full((B, L), pad_id, dtype=np.int32)
    targets = np.full((B, L), pad_id, dtype=np.int32)
    mask = np.zeros((B, L), dtype=bool)
    for i, s in enumerate(samples):
        n = len(s) - 1
        inputs[i, :n] = s.ids[:-1]
        targets[i, :n] = s.ids[1:]
        mask[i, :n] = s.mask[1:]
    flat = np.flatnonzero(mask.reshape(-1)).astype(np.int32)
    T = _round_up(len(flat), TARGET_MULTIPLE)
    positions = np.zeros(T, dtype=np.int32)
    positions[: len(flat)] = flat
    weights = np.zeros(T, dtype=np.float32)
    weights[: len(flat)] = 1.0
    return Batch(inputs, targets, positions, weights, int(len(flat)), B * L)
