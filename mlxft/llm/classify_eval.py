"""Evaluate a text classifier (an lm-classify run) on a labelled split: report, confusion matrix, ROC AUC, calibration, base.

The base is the zero-shot verbalizer: the untrained model (the adapter switched off) scoring the label words after
the same prompt. It applies to verbalizer runs, and to score runs whose recipe gave label words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlxft.atomic import atomic_write_text
from mlxft.data.sources import read_split
from mlxft.errors import DataError
from mlxft.eval.calibration import Calibration, calibration, draw_reliability_diagram
from mlxft.eval.classification import ClassificationReport, classification_report, draw_confusion_matrix, format_report, roc_auc
from mlxft.llm.classify import MAX_LISTED, read_rows
from mlxft.llm.classify_predict import TextClassifier


@dataclass
class BaseScores:
    """The zero-shot base on the same split."""

    words: dict[str, str]  # label -> word
    probs: np.ndarray
    report: ClassificationReport


@dataclass
class TextEvaluation:
    split: str
    labels: list[str]
    rows: list[dict[str, str]]
    truth: np.ndarray  # label ids
    probs: np.ndarray  # [N, labels]
    report: ClassificationReport
    auc: dict[str, float]
    calibration: Calibration
    truncated: int
    base: BaseScores | None = None
    paths_written: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict:
        r = self.report
        out = {"split": self.split, "texts": len(self.rows), "truncated": self.truncated, "accuracy": r.accuracy, "macro_f1": r.macro.f1,
               "auc": self.auc, "ece": self.calibration.ece, "calibration": self.calibration.to_dict(),
               "per_class": {k: vars(v) for k, v in r.per_class.items()}, "confusion": {"labels": list(r.labels), "matrix": r.confusion}}
        if self.base is not None:
            b = self.base.report
            out["base"] = {"what": "zero-shot verbalizer on the untrained model", "words": self.base.words, "accuracy": b.accuracy, "macro_f1": b.macro.f1,
                           "confusion": b.confusion}
        return out


def labelled_rows(clf: TextClassifier, data_path: str, split: str) -> tuple[list[dict[str, str]], np.ndarray]:
    """The split's rows as the classifier's prompt columns, and their label ids; a row with an unknown label is named."""
    records = read_split(data_path, split)
    if not records:
        raise DataError(f"{data_path}: no '{split}' split", hint="evaluate on a labelled split, e.g. --split test, or pass --data")
    rows, labels = read_rows(records, clf.encoder.fields, clf.config.get("label_key", "label"))
    index = {name: i for i, name in enumerate(clf.labels)}
    unknown = [f"{r.where}: label {v!r}" for r, v in zip(records, labels) if str(v) not in index]
    if unknown:
        raise DataError(f"{len(unknown)} row(s) of the {split} split have a label the classifier was not trained on:\n  " + "\n  ".join(unknown[:MAX_LISTED]),
                        hint=f"its labels: {', '.join(clf.labels)}")
    return rows, np.array([index[str(v)] for v in labels])


def evaluate_texts(clf: TextClassifier, data_path: str, split: str = "test", *, base: bool = True, batch_size: int = 16) -> TextEvaluation:
    rows, truth = labelled_rows(clf, data_path, split)
    probs = clf.probabilities(rows, batch_size)
    truncated = clf.truncated
    labels = clf.labels

    def report_of(p: np.ndarray) -> ClassificationReport:
        return classification_report([labels[t] for t in truth], [labels[i] for i in p.argmax(1)], labels=labels, closed=True)

    result = TextEvaluation(split, labels, rows, truth, probs, report_of(probs), roc_auc(truth, probs, labels), calibration(truth, probs), truncated)
    if base and clf.has_base and clf.config.get("method") != "full":
        bp = clf.base_probabilities(rows, batch_size)
        words = {name: clf.config["verbalizer"][name]["word"] for name in labels}
        result.base = BaseScores(words, bp, report_of(bp))
    return result


def format_text_evaluation(result: TextEvaluation) -> str:
    cut = f" ({result.truncated} cut to fit the prompt's length)" if result.truncated else ""
    lines = [f"{result.split}: {len(result.rows)} texts{cut}", format_report(result.report)]
    lines.append("ROC AUC: " + ", ".join(f"{k} {v:.4f}" for k, v in result.auc.items()))
    lines.append(f"expected calibration error: {result.calibration.ece:.4f} ({len(result.calibration.bins)} bins)")
    if result.base is not None:
        b, t = result.base.report, result.report
        words = ", ".join(f"{k} {v!r}" for k, v in result.base.words.items())
        lines.append(f"zero-shot base (the untrained model scoring the label words {words}): accuracy {b.accuracy:.4f}, macro-F1 {b.macro.f1:.4f}; "
                     f"tuned: accuracy {t.accuracy:.4f} ({t.accuracy - b.accuracy:+.4f}), macro-F1 {t.macro.f1:.4f} ({t.macro.f1 - b.macro.f1:+.4f})")
    return "\n".join(lines)


def write_text_evaluation(result: TextEvaluation, out: Path) -> dict[str, Path]:
    """summary.json, report.md, predictions.jsonl, confusion.png and reliability.png in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "report": out / "report.md", "predictions": out / "predictions.jsonl",
             "confusion": out / "confusion.png", "reliability": out / "reliability.png"}
    atomic_write_text(paths["summary"], json.dumps(result.summary(), indent=2, default=float))
    atomic_write_text(paths["report"], "```\n" + format_text_evaluation(result) + "\n```\n")
    lines = []
    for i, (row, t, p) in enumerate(zip(result.rows, result.truth, result.probs)):
        rec = {**row, "label": result.labels[t], "predicted": result.labels[int(p.argmax())],
               "probabilities": {name: float(v) for name, v in zip(result.labels, p)}}
        if result.base is not None:
            rec["base_predicted"] = result.labels[int(result.base.probs[i].argmax())]
        lines.append(json.dumps(rec) + "\n")
    atomic_write_text(paths["predictions"], "".join(lines))
    draw_confusion_matrix(result.report, paths["confusion"], title=f"{result.split}: accuracy {result.report.accuracy:.1%}")
    draw_reliability_diagram(result.calibration, paths["reliability"], title=f"{result.split}: reliability (ECE {result.calibration.ece:.3f})")
    result.paths_written = paths
    return paths
