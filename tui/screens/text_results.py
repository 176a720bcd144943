"""What `mlxft eval RUN --split S` wrote for a text classifier (an lm-classify run), read for the Evaluate screen:
summary.json (report, ROC AUC, calibration, the zero-shot base), predictions.jsonl and the PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui.screens.image_results import _read_json, read_json_lines

RESERVED = ("label", "predicted", "probabilities", "base_predicted")  # predictions.jsonl keys that are not the text's columns


def is_text_summary(summary) -> bool:
    """summary.json of a text classifier's evaluation (`mlxft eval RUN` of an lm-classify run)."""
    return isinstance(summary, dict) and "verdict" not in summary and "texts" in summary and "per_class" in summary


def text_of(row: dict) -> str:
    """The text a prediction row was made from: its prompt columns (one, or `name: value` lines for pairs)."""
    columns = {k: v for k, v in row.items() if k not in RESERVED}
    if len(columns) == 1:
        return str(next(iter(columns.values())))
    return "\n".join(f"{k}: {v}" for k, v in columns.items())


@dataclass
class TextResults:
    """One text classifier's evaluation folder."""

    folder: Path
    summary: dict
    predictions: list[dict]

    @property
    def regressions(self) -> list[dict]:
        """Texts the zero-shot base got right and the tuned classifier gets wrong (none when no base was scored)."""
        return self.base_changes()[0]

    @property
    def fixes(self) -> list[dict]:
        return self.base_changes()[1]

    def mistakes(self) -> list[dict]:
        """Misclassified texts, the most confident first."""
        wrong = [r for r in self.predictions if r.get("predicted") != r.get("label")]
        return sorted(wrong, key=lambda r: -max((r.get("probabilities") or {"": 0.0}).values()))

    def base_changes(self) -> tuple[list[dict], list[dict]]:
        """(regressions: the zero-shot base right, tuned wrong; fixes: base wrong, tuned right), when a base was scored."""
        rows = [r for r in self.predictions if "base_predicted" in r]
        worse = [r for r in rows if r["base_predicted"] == r["label"] and r["predicted"] != r["label"]]
        better = [r for r in rows if r["base_predicted"] != r["label"] and r["predicted"] == r["label"]]
        return worse, better

    def png(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


def read_text_folder(folder: Path, summary: dict | None = None) -> TextResults:
    folder = Path(folder)
    summary = summary if summary is not None else _read_json(folder / "summary.json", "summary")
    return TextResults(folder, summary, read_json_lines(folder / "predictions.jsonl", "evaluate the run again to write its predictions again"))
