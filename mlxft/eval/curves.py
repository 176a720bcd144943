"""A run's loss curve: training and validation loss by step, read from its events and drawn as a PNG.

The points come from metrics.jsonl (`loss_curve(events)`), so the model card, MLflow and anyone else draw the same
curve. A resumed run re-reports the steps after its checkpoint: the last report of a step is the one kept.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_write_bytes
from mlxft.eval.classification import _draw_centered, _draw_text, _font, _text_size

TRAIN_COLOUR = (31, 119, 180)
VALID_COLOUR = (214, 96, 39)


@dataclass
class LossCurve:
    train: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss of the window ending there)
    valid: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    best_step: int | None = None  # the evaluation that was best on train.best_metric

    def __bool__(self) -> bool:
        return bool(self.train or self.valid)


def loss_curve(events) -> LossCurve:
    """The curve of a run's events (StepReport and EvalReport; other events and non-finite losses are passed over)."""
    from mlxft.events import EvalReport, StepReport

    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    best = None
    for e in events:
        if isinstance(e, StepReport) and math.isfinite(e.loss):
            train[e.step] = e.loss
        elif isinstance(e, EvalReport) and math.isfinite(e.val_loss):
            valid[e.step] = e.val_loss
            if e.is_best:
                best = e.step
    return LossCurve(sorted(train.items()), sorted(valid.items()), best)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    if step >= 1 and float(value).is_integer():
        return f"{int(value):,}"
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{decimals}f}"


def draw_loss_curve(curve: LossCurve, path: str | Path, title: str = "Loss") -> Path:
    """A PNG of training loss (line) and validation loss (line with dots) against the step; the best evaluation is ringed."""
    from PIL import Image, ImageDraw

    if not curve:
        raise ValueError("a loss curve needs at least one training or validation loss")
    width, height, pad = 720, 420, 16
    title_font, axis_font, small = _font(18), _font(14), _font(12)
    left, top, right, bottom = 72, 48, width - pad - 8, height - 76
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    _draw_centered(draw, (width // 2, pad + 8), title, title_font, (20, 20, 20))

    points = curve.train + curve.valid
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    x_lo, x_hi = min(steps), max(steps)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = min(losses), max(losses)
    margin = (y_hi - y_lo) * 0.08 or max(abs(y_hi) * 0.1, 0.1)
    y_lo, y_hi = y_lo - margin, y_hi + margin

    def x(step: float) -> float:
        return left + (step - x_lo) / (x_hi - x_lo) * (right - left)

    def y(loss: float) -> float:
        return bottom - (loss - y_lo) / (y_hi - y_lo) * (bottom - top)

    y_ticks = _ticks(y_lo, y_hi)
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for tick in y_ticks:
        draw.line((left, y(tick), right, y(tick)), fill=(235, 235, 235))
        label = _tick_label(tick, y_step)
        w, h = _text_size(draw, label, small)
        _draw_text(draw, (left - 6 - w, int(y(tick)) - h // 2), label, small, (90, 90, 90))
    x_ticks = [t for t in _ticks(x_lo, x_hi, 6) if x_lo <= t <= x_hi]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for tick in x_ticks:
        label = _tick_label(tick, max(x_step, 1.0))
        w, _ = _text_size(draw, label, small)
        draw.line((x(tick), bottom, x(tick), bottom + 4), fill=(80, 80, 80))
        _draw_text(draw, (int(x(tick)) - w // 2, bottom + 8), label, small, (90, 90, 90))

    if len(curve.train) > 1:
        draw.line([(x(s), y(v)) for s, v in curve.train], fill=TRAIN_COLOUR, width=2)
    for s, v in curve.train if len(curve.train) == 1 else ():
        draw.ellipse((x(s) - 3, y(v) - 3, x(s) + 3, y(v) + 3), fill=TRAIN_COLOUR)
    if len(curve.valid) > 1:
        draw.line([(x(s), y(v)) for s, v in curve.valid], fill=VALID_COLOUR, width=2)
    for s, v in curve.valid:
        draw.ellipse((x(s) - 3, y(v) - 3, x(s) + 3, y(v) + 3), fill=VALID_COLOUR)
        if s == curve.best_step:
            draw.ellipse((x(s) - 7, y(v) - 7, x(s) + 7, y(v) + 7), outline=(20, 20, 20), width=2)
    draw.rectangle((left, top, right, bottom), outline=(80, 80, 80))
    _draw_centered(draw, ((left + right) // 2, bottom + 34), "step", axis_font, (20, 20, 20))

    legend = [(TRAIN_COLOUR, "training loss"), (VALID_COLOUR, "validation loss")]
    lx = pad
    for colour, text in legend:
        draw.line((lx, height - pad - 6, lx + 18, height - pad - 6), fill=colour, width=3)
        _draw_text(draw, (lx + 24, height - pad - 12), text, small, (60, 60, 60))
        lx += 24 + _text_size(draw, text, small)[0] + 24
    if curve.best_step is not None:
        _draw_text(draw, (lx, height - pad - 12), f"ringed: the best evaluation (step {curve.best_step})", small, (60, 60, 60))

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
