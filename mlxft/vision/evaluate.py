"""Evaluate an image classifier on a labelled split: per-class report, ROC AUC, a confusion matrix and the mistakes, as PNGs.

`--threshold-for LABEL=RECALL` picks the decision threshold on P(LABEL) that reaches that recall on the
validation split, then reports the test split's operating point at it: what a screening model needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlxft.atomic import atomic_write_bytes, atomic_write_text
from mlxft.data.sources import read_split
from mlxft.errors import DataError, MlxftError
from mlxft.eval.classification import ClassificationReport, classification_report, draw_confusion_matrix, format_report, roc_auc
from mlxft.vision.predict import ImageClassifier

MAX_SHOWN_MISTAKES = 24


@dataclass
class OperatingPoint:
    label: str
    target_recall: float
    threshold: float  # on P(label), chosen on the validation split
    valid_recall: float
    recall: float  # on the evaluated split, at that threshold
    precision: float
    specificity: float
    flagged: int  # images at or above the threshold


@dataclass
class ImageEvaluation:
    split: str
    labels: list[str]
    paths: list[str]
    truth: np.ndarray  # label ids
    probs: np.ndarray  # [N, classes]
    report: ClassificationReport
    auc: dict[str, float]  # binary: {label of class 1: AUC}; more classes: each class one-vs-rest, and "macro"
    operating_point: OperatingPoint | None = None
    paths_written: dict[str, Path] = field(default_factory=dict)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    def mistakes(self) -> list[int]:
        wrong = np.flatnonzero(self.predicted != self.truth)
        return sorted(wrong.tolist(), key=lambda i: -float(self.probs[i].max()))  # the most confident mistakes first

    def summary(self) -> dict:
        r = self.report
        out = {"split": self.split, "images": len(self.paths), "accuracy": r.accuracy, "macro_f1": r.macro.f1, "auc": self.auc,
               "per_class": {k: vars(v) for k, v in r.per_class.items()}, "macro": vars(r.macro), "weighted": vars(r.weighted),
               "confusion": {"labels": list(r.labels), "matrix": r.confusion},
               "mistakes": len(self.mistakes())}
        if self.operating_point:
            out["operating_point"] = vars(self.operating_point)
        return out


def _split_images(clf: ImageClassifier, data_path: str, split: str) -> tuple[list[str], np.ndarray]:
    records = read_split(data_path, split)
    if not records:
        raise DataError(f"{data_path}: no '{split}' split of images", hint="evaluate on a labelled split, e.g. --split test (image folders: <split>/<label>/<image>)")
    index = {name: i for i, name in enumerate(clf.labels)}
    unknown = [f"{r.where}: label {r.data.get('label')!r}" for r in records if str(r.data.get("label")) not in index]
    if unknown:
        raise DataError(f"{len(unknown)} image(s) have a label the classifier was not trained on:\n  " + "\n  ".join(unknown[:10]),
                        hint=f"its labels: {', '.join(clf.labels)}")
    return [r.data["image"] for r in records], np.array([index[str(r.data["label"])] for r in records])


def threshold_for_recall(truth: np.ndarray, scores: np.ndarray, positive: int, recall: float) -> float:
    """The highest threshold on `scores` whose recall of `positive` is at least `recall` (on these images)."""
    pos = np.sort(scores[truth == positive])[::-1]
    if len(pos) == 0:
        raise DataError("the validation split has no image of that label, so no threshold can be chosen for it")
    k = max(1, int(np.ceil(recall * len(pos))))  # at least k of the positives must score at or above it
    return float(pos[k - 1])


def operating_point(label: str, target: float, threshold: float, valid_recall: float, truth: np.ndarray, scores: np.ndarray, positive: int) -> OperatingPoint:
    flag = scores >= threshold
    pos = truth == positive
    tp, fp, fn, tn = int((flag & pos).sum()), int((flag & ~pos).sum()), int((~flag & pos).sum()), int((~flag & ~pos).sum())
    return OperatingPoint(label, target, threshold, valid_recall, tp / max(tp + fn, 1), tp / max(tp + fp, 1), tn / max(tn + fp, 1), int(flag.sum()))


def split_probabilities(clf: ImageClassifier, paths: list, on_progress=lambda done, total: None, chunk: int = 64) -> np.ndarray:
    """`clf.probabilities` over many images, `on_progress(done, total)` after each chunk of them."""
    out = []
    on_progress(0, len(paths))
    for start in range(0, len(paths), chunk):
        out.append(clf.probabilities(paths[start: start + chunk]))
        on_progress(min(start + chunk, len(paths)), len(paths))
    return np.concatenate(out) if out else clf.probabilities([])


def evaluate_images(clf: ImageClassifier, data_path: str, split: str = "test", *, threshold_for: str | None = None, valid_split: str = "valid",
                    on_progress=lambda done, total: None) -> ImageEvaluation:
    paths, truth = _split_images(clf, data_path, split)
    probs = split_probabilities(clf, paths, on_progress)
    labels = clf.labels
    report = classification_report([labels[t] for t in truth], [labels[p] for p in probs.argmax(1)], labels=labels, closed=True)
    result = ImageEvaluation(split, labels, [str(p) for p in paths], truth, probs, report, roc_auc(truth, probs, labels))
    if threshold_for:
        label, _, value = threshold_for.partition("=")
        try:
            target = float(value)
        except ValueError:
            target = -1.0
        if label not in labels or not 0 < target <= 1:
            raise MlxftError(f"--threshold-for {threshold_for!r}: expected LABEL=RECALL with a label of the classifier and a recall in (0, 1]",
                             hint=f"e.g. --threshold-for {labels[-1]}=0.95 (labels: {', '.join(labels)})")
        positive = labels.index(label)
        vpaths, vtruth = _split_images(clf, data_path, valid_split)
        vscores = clf.probabilities(vpaths)[:, positive]
        threshold = threshold_for_recall(vtruth, vscores, positive, target)
        valid_recall = float((vscores[vtruth == positive] >= threshold).mean())
        result.operating_point = operating_point(label, target, threshold, valid_recall, truth, probs[:, positive], positive)
    return result


def draw_mistakes(result: ImageEvaluation, path: Path, thumb: int = 128) -> Path | None:
    """A grid of the misclassified images (most confident first) with true label, prediction and its probability."""
    from PIL import Image, ImageDraw

    from mlxft.eval.classification import _font

    wrong = result.mistakes()[:MAX_SHOWN_MISTAKES]
    if not wrong:
        return None
    cols = min(6, len(wrong))
    rows = -(-len(wrong) // cols)
    caption = 34
    sheet = Image.new("RGB", (cols * (thumb + 8) + 8, rows * (thumb + caption + 8) + 40), "white")
    draw = ImageDraw.Draw(sheet)
    title, small = _font(16), _font(12)
    total = len(result.mistakes())
    draw.text((8, 10), f"{total} misclassified of {len(result.paths)} ({result.split})" + (f", {len(wrong)} most confident shown" if total > len(wrong) else ""), fill=(20, 20, 20), font=title)
    for k, i in enumerate(wrong):
        r, c = divmod(k, cols)
        x, y = 8 + c * (thumb + 8), 40 + r * (thumb + caption + 8)
        try:
            with Image.open(result.paths[i]) as im:
                im = im.convert("RGB")
                scale = thumb / max(im.size)  # small images are enlarged too (nearest: their pixels stay visible)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
                sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        except OSError:
            draw.rectangle([x, y, x + thumb, y + thumb], outline=(200, 0, 0))
        pred = int(result.probs[i].argmax())
        draw.text((x, y + thumb + 2), f"true {result.labels[result.truth[i]]}"[:22], fill=(20, 20, 20), font=small)
        draw.text((x, y + thumb + 17), f"pred {result.labels[pred]} {result.probs[i, pred]:.2f}"[:22], fill=(170, 20, 20), font=small)
    import io

    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def format_evaluation(result: ImageEvaluation) -> str:
    lines = [f"{result.split}: {len(result.paths)} images", format_report(result.report)]
    auc = ", ".join(f"{k} {v:.4f}" for k, v in result.auc.items())
    lines.append(f"ROC AUC: {auc}")
    op = result.operating_point
    if op:
        lines.append(f"threshold for {op.label} recall >= {op.target_recall:.2f} (chosen on validation, recall there {op.valid_recall:.3f}): "
                     f"P({op.label}) >= {op.threshold:.4f}")
        lines.append(f"  on {result.split}: recall {op.recall:.3f}, precision {op.precision:.3f}, specificity {op.specificity:.3f}, {op.flagged} flagged")
    return "\n".join(lines)


def write_evaluation(result: ImageEvaluation, out: Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.md", "predictions": out / "predictions.jsonl",
             "confusion": out / "confusion.png"}
    atomic_write_text(paths["summary"], json.dumps(result.summary(), indent=2, default=float))
    atomic_write_text(paths["report"], "```\n" + format_evaluation(result) + "\n```\n")
    rows = [{"image": p, "label": result.labels[t], "predicted": result.labels[int(pr.argmax())],
             "probabilities": {name: float(v) for name, v in zip(result.labels, pr)}} for p, t, pr in zip(result.paths, result.truth, result.probs)]
    atomic_write_text(paths["predictions"], "".join(json.dumps(r) + "\n" for r in rows))
    draw_confusion_matrix(result.report, paths["confusion"], title=f"{result.split}: accuracy {result.report.accuracy:.1%}")
    mistakes = draw_mistakes(result, out / "misclassified.png")
    if mistakes:
        paths["misclassified"] = mistakes
    result.paths_written = paths
    return paths
