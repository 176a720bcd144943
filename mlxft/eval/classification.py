"""Classification scores for a tuned classifier: per-class metrics, a confusion matrix, its errors, and a PNG of it."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlxft.atomic import atomic_write_bytes
from mlxft.errors import MlxftError

OTHER = "(other)"  # the column for predictions that are none of the labels (unparsed or invented answers)

_WHITE = (255, 255, 255)
# Stops of matplotlib's "Blues", which people already read as "more".
_MID_BLUE = (107, 174, 214)
_DARK_BLUE = (8, 48, 107)


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support for one class, or an average over classes."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    """Scores of predictions against true labels.

    `confusion[i][j]` counts items whose true label is `labels[i]` and whose prediction is
    `columns[j]`; the last column is `OTHER`, so a prediction outside the labels is counted
    as a miss for its row and never dropped.
    """

    labels: tuple[str, ...]
    per_class: dict[str, ClassScores]
    macro: ClassScores
    weighted: ClassScores
    accuracy: float
    confusion: list[list[int]]
    other: int  # how many predictions were none of the labels
    total: int
    closed: bool = False  # predictions can only be labels (an image classifier's argmax): no OTHER column

    @property
    def columns(self) -> tuple[str, ...]:
        """The confusion matrix's column names: the labels, then `OTHER` (unless the label set is closed)."""
        return self.labels if self.closed else (*self.labels, OTHER)


def classification_report(
    y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None, *, closed: bool = False
) -> ClassificationReport:
    """Score `y_pred` against `y_true`; labels default to the sorted distinct true labels.

    Labels are compared as strings, so `1` and `"1"` are the same class. A prediction that
    is not a label goes to the `OTHER` column and counts as wrong.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    true = [str(y) for y in y_true]
    pred = [str(y) for y in y_pred]
    names = _check_labels(true, pred, labels)
    mapped = [p if p in set(names) else OTHER for p in pred]

    p, r, f, s = precision_recall_fscore_support(
        true, mapped, labels=list(names), zero_division=0
    )
    averages = {
        kind: precision_recall_fscore_support(
            true, mapped, labels=list(names), average=kind, zero_division=0
        )
        for kind in ("macro", "weighted")
    }
    # Rows for OTHER are always empty (no true label is OTHER): keep only the label rows.
    matrix = confusion_matrix(true, mapped, labels=[*names, OTHER])[: len(names)]
    report = ClassificationReport(
        labels=names,
        per_class={
            name: ClassScores(float(p[i]), float(r[i]), float(f[i]), int(s[i]))
            for i, name in enumerate(names)
        },
        macro=ClassScores(
            *(float(v) for v in averages["macro"][:3]), support=len(true)
        ),
        weighted=ClassScores(
            *(float(v) for v in averages["weighted"][:3]), support=len(true)
        ),
        accuracy=float(accuracy_score(true, mapped)),
        confusion=[[int(v) for v in row] for row in matrix],
        other=sum(1 for m in mapped if m == OTHER),
        total=len(true),
    )
    if closed:
        if report.other:
            raise MlxftError(f"{report.other} prediction(s) are none of the labels, in a report of a closed label set")
        report = dataclasses.replace(report, confusion=[row[: len(names)] for row in report.confusion], closed=True)
    return report


def _check_labels(
    true: list[str], pred: list[str], labels: Sequence | None
) -> tuple[str, ...]:
    """The label names to score, after collecting every problem with the inputs."""
    problems = []
    if len(true) != len(pred):
        problems.append(f"{len(true)} true labels but {len(pred)} predictions")
    if not true:
        problems.append("no items to score")
    names = (
        tuple(sorted(set(true)))
        if labels is None
        else tuple(str(label) for label in labels)
    )
    if len(set(names)) != len(names):
        problems.append(f"repeated labels in {list(names)}")
    if OTHER in names:
        problems.append(f"{OTHER!r} is reserved for predictions outside the labels")
    unknown = sorted(set(true) - set(names))
    if unknown:
        problems.append(f"true labels not in the label list: {unknown[:10]}")
    if problems:
        raise MlxftError(
            "cannot score these predictions: " + "; ".join(problems),
            hint="pass one prediction per item, and a label list that covers every true label",
        )
    return names


def roc_auc(truth, probs, labels: Sequence[str]) -> dict[str, float]:
    """ROC AUC of class probabilities [N, classes] against label ids: binary (P(second label)), or one-vs-rest per
    class with their macro mean; NaN where a class is absent."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    truth, probs = np.asarray(truth), np.asarray(probs)

    def one(positive: int) -> float:
        y = truth == positive
        return float(roc_auc_score(y, probs[:, positive])) if 0 < y.sum() < len(y) else float("nan")

    if len(labels) == 2:
        return {labels[1]: one(1)}
    per = {name: one(i) for i, name in enumerate(labels)}
    finite = [v for v in per.values() if v == v]
    return {**per, "macro": float(np.mean(finite)) if finite else float("nan")}


def errors_for_class(
    items: Sequence, y_true: Sequence, y_pred: Sequence, cls
) -> tuple[list, list]:
    """The items the model got wrong for `cls`: (false positives, false negatives).

    False positives were predicted `cls` but are something else; false negatives are `cls`
    but were predicted something else (including an unparsed answer).
    """
    if not len(items) == len(y_true) == len(y_pred):
        raise MlxftError(
            f"{len(items)} items, {len(y_true)} true labels and {len(y_pred)} predictions",
            hint="pass one true label and one prediction per item, in the same order",
        )
    name = str(cls)
    false_positives, false_negatives = [], []
    for item, t, p in zip(items, y_true, y_pred):
        t, p = str(t), str(p)
        if p == name and t != name:
            false_positives.append(item)
        elif t == name and p != name:
            false_negatives.append(item)
    return false_positives, false_negatives


def format_report(report: ClassificationReport, width: int = 80) -> str:
    """A terminal table of per-class and average scores, then the confusion matrix as a text grid."""
    name_w = min(max(len(n) for n in (*report.labels, "weighted avg")), 24)
    lines = [
        f"{'':<{name_w}}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}"
    ]
    for name in report.labels:
        s = report.per_class[name]
        lines.append(
            f"{_shorten(name, name_w):<{name_w}}  {s.precision:>9.3f}  {s.recall:>6.3f}  {s.f1:>6.3f}  {s.support:>7}"
        )
    lines.append("")
    for title, s in (("macro avg", report.macro), ("weighted avg", report.weighted)):
        lines.append(
            f"{title:<{name_w}}  {s.precision:>9.3f}  {s.recall:>6.3f}  {s.f1:>6.3f}  {s.support:>7}"
        )
    lines.append(
        f"{'accuracy':<{name_w}}  {'':>9}  {'':>6}  {report.accuracy:>6.3f}  {report.total:>7}"
    )
    if report.other:
        lines.append(
            f"{report.other} of {report.total} predictions were none of the labels: see the {OTHER} column"
        )
    lines += ["", *_format_confusion(report, width)]
    return "\n".join(lines)


def _format_confusion(report: ClassificationReport, width: int) -> list[str]:
    """The confusion matrix with true labels down and predicted labels across, fitted to `width`.

    When the label names do not fit across, the columns are numbered and each row name
    carries its number, so no two columns end up with the same cut-down name.
    """
    corner = "true \\ predicted"
    count_w = max(len(str(v)) for row in report.confusion for v in row)
    names = list(report.labels)
    widths = [max(count_w, len(c)) for c in report.columns]
    numbered = len(corner) + sum(w + 2 for w in widths) > width
    if numbered:
        headers = [str(i + 1) for i in range(len(names))] + ([] if report.closed else [OTHER])
        names = [
            f"{i + 1:>{len(str(len(names)))}} {name}" for i, name in enumerate(names)
        ]
        widths = [max(count_w, len(h)) for h in headers]
    else:
        headers = list(report.columns)
    room = width - sum(w + 2 for w in widths)
    row_w = max(len(corner), min(max(len(n) for n in names), room))
    lines = [
        f"{corner:<{row_w}}" + "".join(f"  {h:>{w}}" for h, w in zip(headers, widths))
    ]
    for name, row in zip(names, report.confusion):
        cells = "".join(f"  {v:>{w}}" for v, w in zip(row, widths))
        lines.append(f"{_shorten(name, row_w):<{row_w}}" + cells)
    return lines


def _shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters in the middle, keeping the end that often tells labels apart."""
    if len(text) <= width:
        return text
    if width < 4:
        return text[:width]
    tail = (width - 1) // 3
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


def draw_confusion_matrix(
    report: ClassificationReport, path: str | Path, title: str | None = None
) -> Path:
    """Draw the confusion matrix as a PNG at `path`: cells shaded by share of their true row."""
    from PIL import Image, ImageDraw

    columns = report.columns
    n_rows, n_cols = len(report.labels), len(columns)
    cell = max(56, min(96, 640 // n_cols))
    fonts = {size: _font(size) for size in (12, 14, 16, 20)}
    count_font = fonts[16] if cell >= 64 else fonts[14]
    label_font, axis_font, title_font, note_font = (
        fonts[14],
        fonts[16],
        fonts[20],
        fonts[12],
    )

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_names = [_shorten(n, 20) for n in report.labels]
    col_names = [_shorten(n, 20) for n in columns]
    row_name_w = max(_text_size(probe, n, label_font)[0] for n in row_names)
    col_name_w = max(_text_size(probe, n, label_font)[0] for n in col_names)
    # Column names stand upright when any is wider than its cell, so none run into a neighbour.
    upright = col_name_w > cell - 8
    col_band = (
        col_name_w + 10 if upright else _text_size(probe, "Ag", label_font)[1] + 10
    )

    pad = 16
    axis_h = _text_size(probe, "predicted", axis_font)[1]
    title_text = title or "Confusion matrix"
    title_h = _text_size(probe, title_text, title_font)[1]
    note = "shade = share of the true row" + ("" if report.closed else f"; {OTHER} = answer not one of the labels")
    note_w, note_h = _text_size(probe, note, note_font)

    grid_x = pad + axis_h + 10 + row_name_w + 10
    grid_y = pad + title_h + 14
    grid_w, grid_h = n_cols * cell, n_rows * cell
    width = max(
        grid_x + grid_w + pad,
        pad + note_w + pad,
        pad + _text_size(probe, title_text, title_font)[0] + pad,
    )
    height = grid_y + grid_h + 6 + col_band + 8 + axis_h + 12 + note_h + pad

    image = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(image)
    _draw_centered(
        draw, (width // 2, pad + title_h // 2), title_text, title_font, (20, 20, 20)
    )

    for i, row in enumerate(report.confusion):
        row_total = sum(row)
        for j, count in enumerate(row):
            share = count / row_total if row_total else 0.0
            x0, y0 = grid_x + j * cell, grid_y + i * cell
            draw.rectangle(
                (x0, y0, x0 + cell, y0 + cell),
                fill=_shade(share),
                outline=(200, 200, 200),
            )
            # Past 60% the blue is dark enough that white text reads better than black.
            ink = _WHITE if share > 0.6 else (20, 20, 20)
            center = (x0 + cell // 2, y0 + cell // 2)
            _draw_centered(
                draw, (center[0], center[1] - 7), str(count), count_font, ink
            )
            _draw_centered(
                draw, (center[0], center[1] + 12), f"{share:.0%}", note_font, ink
            )
    # A heavier line before OTHER: it is not a class, it is where unparsed answers land.
    if not report.closed:
        other_x = grid_x + (n_cols - 1) * cell
        draw.line((other_x, grid_y, other_x, grid_y + grid_h), fill=(90, 90, 90), width=3)
    # Outline the diagonal so the correct answers are found at a glance.
    for i in range(n_rows):
        x0, y0 = grid_x + i * cell, grid_y + i * cell
        draw.rectangle(
            (x0 + 1, y0 + 1, x0 + cell - 1, y0 + cell - 1),
            outline=(230, 120, 0),
            width=2,
        )

    for i, name in enumerate(row_names):
        w, h = _text_size(draw, name, label_font)
        _draw_text(
            draw,
            (grid_x - 10 - w, grid_y + i * cell + (cell - h) // 2),
            name,
            label_font,
        )
    labels_y = grid_y + grid_h + 6
    for j, name in enumerate(col_names):
        cx = grid_x + j * cell + cell // 2
        if upright:
            w, h = _text_size(draw, name, label_font)
            strip = Image.new("RGB", (w + 4, h + 6), _WHITE)
            _draw_text(ImageDraw.Draw(strip), (2, 2), name, label_font)
            strip = strip.rotate(90, expand=True)
            image.paste(strip, (cx - strip.width // 2, labels_y))
        else:
            _draw_centered(
                draw, (cx, labels_y + col_band // 2 - 4), name, label_font, (20, 20, 20)
            )

    axis_y = labels_y + col_band + 8
    _draw_centered(
        draw,
        (grid_x + grid_w // 2, axis_y + axis_h // 2),
        "predicted",
        axis_font,
        (20, 20, 20),
    )
    w, h = _text_size(draw, "true", axis_font)
    strip = Image.new("RGB", (w + 4, h + 6), _WHITE)
    _draw_text(ImageDraw.Draw(strip), (2, 2), "true", axis_font)
    strip = strip.rotate(90, expand=True)
    image.paste(strip, (pad, grid_y + grid_h // 2 - strip.height // 2))
    _draw_text(draw, (pad, height - pad - note_h), note, note_font, (110, 110, 110))

    path = Path(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _font(size: int):
    """Pillow's default font at `size` where this Pillow can scale it, else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    # Pillow < 10.1 takes no size; a Pillow built without FreeType cannot scale.
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    """Width and height of `text` drawn at the origin."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _draw_text(draw, xy: tuple[int, int], text: str, font, fill=(20, 20, 20)) -> None:
    """Draw `text` with its ink's top-left corner at `xy` (fonts add their own top offset)."""
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - left, xy[1] - top), text, font=font, fill=fill)


def _draw_centered(draw, center: tuple[int, int], text: str, font, fill) -> None:
    """Draw `text` with its ink centred on `center`; works for bitmap fonts, which take no anchor."""
    w, h = _text_size(draw, text, font)
    _draw_text(draw, (center[0] - w // 2, center[1] - h // 2), text, font, fill)


def _shade(share: float) -> tuple[int, int, int]:
    """White at 0, dark blue at 1, through a clear mid blue (a straight white-to-navy line looks grey halfway)."""
    share = min(max(share, 0.0), 1.0)
    start, end, t = (
        (_WHITE, _MID_BLUE, share * 2)
        if share <= 0.5
        else (_MID_BLUE, _DARK_BLUE, share * 2 - 1)
    )
    return tuple(round(a + (b - a) * t) for a, b in zip(start, end))
