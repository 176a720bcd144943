"""What every classifier job shares: the order of its labels, class weights, and macro-F1 from per-class counts.

Validation runs batch by batch and the Trainer keeps weighted means of what each batch reports. Per-class true
positives, false positives and false negatives travel as shares of the batch (`class_count_metrics`); their
weighted means are shares of the whole split, from which `finish_class_metrics` derives each class's recall and
the macro-F1, exactly as if the split had been scored at once.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def label_order(labels) -> list:
    """Class names in a stable order: integers numerically, names alphabetically."""
    values = set(labels)
    return sorted(values) if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else sorted(map(str, values))


def class_weights(counts: list[int], setting, names: list[str] | None = None) -> np.ndarray:
    """Per-class loss weights: 'auto' = n / (k * count_c) (inverse frequency, mean 1 over samples), 'none' = 1,
    or a mapping {label name: weight} (labels it does not name weigh 1; `names` are the classes in order)."""
    counts = np.asarray(counts, dtype=np.float64)
    if isinstance(setting, dict):
        return np.array([float(setting.get(str(n), 1.0)) for n in names], np.float32)
    if setting == "none":
        return np.ones(len(counts), np.float32)
    return (counts.sum() / (len(counts) * np.maximum(counts, 1))).astype(np.float32)


def class_count_metrics(pred: mx.array, labels: mx.array, num_classes: int) -> dict[str, mx.array]:
    """Per-class true/false positive and false negative shares of one batch (`_tp0`, `_fp0`, `_fn0`, ...)."""
    out = {}
    for c in range(num_classes):
        t, p = labels == c, pred == c
        out[f"_tp{c}"] = (t & p).astype(mx.float32).mean()
        out[f"_fp{c}"] = (~t & p).astype(mx.float32).mean()
        out[f"_fn{c}"] = (t & ~p).astype(mx.float32).mean()
    return out


def finish_class_metrics(metrics: dict[str, float], classes: list) -> dict[str, float]:
    """The split's metrics without the count shares, plus `recall/<label>` per class and `macro_f1`."""
    out = {k: v for k, v in metrics.items() if not k.startswith("_")}
    f1s = []
    for c, name in enumerate(classes):
        tp, fp, fn = metrics[f"_tp{c}"], metrics[f"_fp{c}"], metrics[f"_fn{c}"]
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 1.0)
        out[f"recall/{name}"] = tp / (tp + fn) if tp + fn > 0 else float("nan")
    out["macro_f1"] = float(np.mean(f1s))
    return out
