"""What `mlxft eval RUN [--against RUN_A]` wrote for an image classifier, read for the Evaluate screen: the run's own
evaluation (summary.json, predictions.jsonl, the PNGs) and, when there is one, its comparison with an earlier run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlxft.errors import MlxftError
from mlxft.vision.compare import KIND as COMPARISON_KIND, comparison_stem


def is_image_summary(summary) -> bool:
    """summary.json of one image classifier's evaluation (not an LM comparison, which has a verdict)."""
    return isinstance(summary, dict) and "verdict" not in summary and "images" in summary and "per_class" in summary


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MlxftError(f"{path}: cannot read it ({exc})", hint=f"evaluate again to write the {what} again") from None


def read_json_lines(path: Path, hint: str) -> list[dict]:
    """The rows of a JSONL file mlxft wrote ([] when it is absent); a broken line is an error naming it."""
    rows = []
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MlxftError(f"{path}: line {number} is not JSON ({exc.msg})", hint=hint) from None
    return rows


@dataclass
class ImageResults:
    """One image evaluation folder: the run's scores and per-image predictions, and one comparison (or none)."""

    folder: Path
    summary: dict
    predictions: list[dict]
    comparison: dict | None = None
    comparison_path: Path | None = None

    @property
    def regressions(self) -> list[dict]:
        return list(self.comparison["regressions"]) if self.comparison else []

    @property
    def fixes(self) -> list[dict]:
        return list(self.comparison["fixes"]) if self.comparison else []

    def mistakes(self) -> list[dict]:
        """Misclassified images, the most confident first (the grid PNG's order)."""
        wrong = [r for r in self.predictions if r.get("predicted") != r.get("label")]
        return sorted(wrong, key=lambda r: -max((r.get("probabilities") or {"": 0.0}).values()))

    def png(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


def comparisons_in(folder: Path) -> list[Path]:
    """The compare-<A>.json files in an evaluation folder, newest first."""
    found = [p for p in Path(folder).glob("compare-*.json") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def comparison_file(folder: Path, against: str | Path) -> Path:
    """Where `mlxft eval RUN --against AGAINST` writes the comparison in `folder`."""
    return Path(folder) / f"{comparison_stem(Path(against).name)}.json"


def read_image_folder(folder: Path, summary: dict | None = None, comparison: Path | None = None) -> ImageResults:
    """The evaluation in `folder` and the comparison file asked for (else the newest one there, if any)."""
    folder = Path(folder)
    summary = summary if summary is not None else _read_json(folder / "summary.json", "summary")
    rows = read_json_lines(folder / "predictions.jsonl", "evaluate the run again to write its predictions again")
    path = comparison if comparison is not None else next(iter(comparisons_in(folder)), None)
    data = None
    if path is not None:
        data = _read_json(Path(path), "comparison")
        if not isinstance(data, dict) or data.get("kind") != COMPARISON_KIND:
            raise MlxftError(f"{path}: not a comparison of two image runs", hint="open the compare-<run>.json that `mlxft eval RUN --against RUN_A` wrote")
    return ImageResults(folder, summary, rows, data, Path(path) if path is not None else None)


def viewer_command(path: Path) -> list[str] | None:
    """The command that shows a file in the system's viewer, or None when this system has none we know."""
    if sys.platform == "darwin":
        return ["open", str(path)]
    opener = shutil.which("xdg-open")
    return [opener, str(path)] if opener else None


def open_in_viewer(path: Path) -> str | None:
    """Show a PNG in the system viewer, detached from the UI; the reason it could not, else None."""
    command = viewer_command(path)
    if command is None:
        return f"no image viewer found (no xdg-open); the file is {path}"
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return f"cannot start {command[0]} ({exc.strerror}); the file is {path}"
    return None


def short_path(image: str, parts: int = 2) -> str:
    """`label/name.png`: the tail of an image path that tells images apart in a narrow column."""
    return "/".join(Path(image).parts[-parts:])
