"""Calibration of a classifier's probabilities: expected calibration error over confidence bins, and a reliability diagram PNG.

A prediction's confidence is its top probability. Predictions are binned by confidence into equal-width bins;
a calibrated classifier is right as often as it is confident in each bin. ECE = sum over bins of
(share of predictions in the bin) x |accuracy - mean confidence| (Guo et al. 2017, with 10 bins by default).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlxft.atomic import atomic_write_bytes
from mlxft.eval.classification import _draw_centered, _draw_text, _font, _text_size


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean top probability in the bin (NaN when empty)
    accuracy: float  # share right in the bin (NaN when empty)


@dataclass(frozen=True)
class Calibration:
    ece: float
    bins: tuple[CalibrationBin, ...]
    total: int

    def to_dict(self) -> dict:
        return {"ece": self.ece, "total": self.total, "bins": [asdict(b) for b in self.bins]}


def calibration(truth, probs, n_bins: int = 10) -> Calibration:
    """Bin predictions (argmax of `probs` [N, classes]) by confidence and compare each bin's accuracy with its confidence."""
    truth, probs = np.asarray(truth), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(truth) != len(probs) or len(truth) == 0:
        raise ValueError(f"calibration needs probabilities [N, classes] for N > 0 labels, got {probs.shape} for {len(truth)}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)  # (lower, upper]; 0 goes to the first
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        conf = float(confidence[inside].mean()) if n else float("nan")
        acc = float(correct[inside].mean()) if n else float("nan")
        if n:
            ece += n / len(truth) * abs(acc - conf)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), n, conf, acc))
    return Calibration(float(ece), tuple(bins), len(truth))


def draw_reliability_diagram(cal: Calibration, path: str | Path, title: str | None = None) -> Path:
    """A PNG of accuracy per confidence bin (bars) against the diagonal of perfect calibration, with each bin's count."""
    from PIL import Image, ImageDraw

    width, height, pad = 520, 460, 16
    title_font, axis_font, small = _font(18), _font(14), _font(12)
    left, top, right, bottom = 64, 48, width - pad, height - 72
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    _draw_centered(draw, (width // 2, pad + 8), title or f"Reliability (ECE {cal.ece:.3f})", title_font, (20, 20, 20))
    plot_w, plot_h = right - left, bottom - top

    def x(v: float) -> float:
        return left + v * plot_w

    def y(v: float) -> float:
        return bottom - v * plot_h

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line((left, y(tick), right, y(tick)), fill=(235, 235, 235))
        label = f"{tick:.2f}"
        w, h = _text_size(draw, label, small)
        _draw_text(draw, (left - 6 - w, int(y(tick)) - h // 2), label, small, (90, 90, 90))
        _draw_text(draw, (int(x(tick)) - w // 2, bottom + 6), label, small, (90, 90, 90))
    for b in cal.bins:
        if not b.count:
            continue
        x0, x1 = x(b.lower) + 2, x(b.upper) - 2
        draw.rectangle((x0, y(b.accuracy), x1, bottom), fill=(107, 174, 214), outline=(8, 48, 107))
        # The gap to the bin's mean confidence, outlined in red: where the bar would end if it were calibrated.
        lo, hi = sorted((b.accuracy, b.confidence))
        draw.rectangle((x0, y(hi), x1, y(lo)), outline=(200, 60, 40), width=2)
        count = str(b.count)
        w, _ = _text_size(draw, count, small)
        _draw_text(draw, (int((x0 + x1) / 2) - w // 2, int(y(max(b.accuracy, b.confidence))) - 16), count, small, (60, 60, 60))
    draw.line((x(0), y(0), x(1), y(1)), fill=(120, 120, 120), width=1)
    draw.rectangle((left, top, right, bottom), outline=(80, 80, 80))
    _draw_centered(draw, ((left + right) // 2, bottom + 30), "confidence (top probability)", axis_font, (20, 20, 20))
    strip_text = "accuracy"
    w, h = _text_size(draw, strip_text, axis_font)
    strip = Image.new("RGB", (w + 4, h + 6), (255, 255, 255))
    _draw_text(ImageDraw.Draw(strip), (2, 2), strip_text, axis_font)
    strip = strip.rotate(90, expand=True)
    image.paste(strip, (pad - 4, (top + bottom) // 2 - strip.height // 2))
    note = "bars: accuracy per bin; red: gap to the bin's mean confidence; numbers: predictions"
    _draw_text(draw, (pad, height - pad - 12), note, small, (110, 110, 110))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
