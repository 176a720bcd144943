"""The app's last picks per project (model, backbone, data, run, model folders, recipe), so it opens where it was left.

They live in RUNS/.mlxft-tui.json: the runs folder is the project's (`mlxft tui --runs-dir`, default ./runs), and
`mlxft runs` lists folders only. Written whole and atomically on each pick; a missing file is a first start, and a
file that cannot be read (corrupt, not JSON, wrong types) is ignored with a notice that says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlxft.atomic import atomic_write_text

PICKS_FILE = ".mlxft-tui.json"
TEXT_KEYS = ("model", "backbone", "train_kind", "data", "data_format", "run", "run_model", "recipe")
LIST_KEYS = ("model_folders",)


def picks_path(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / PICKS_FILE


def read_picks(runs_dir: str | Path) -> tuple[dict, str | None]:
    """(the picks that read well, a notice about what was ignored or None); never raises for a bad file."""
    path = picks_path(runs_dir)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"{path}: cannot be read ({type(exc).__name__}); starting without the last picks"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"{path}: not JSON (line {exc.lineno}); starting without the last picks (the next pick rewrites it)"
    if not isinstance(data, dict):
        return {}, f"{path}: not a JSON object; starting without the last picks (the next pick rewrites it)"
    picks = {k: data[k] for k in TEXT_KEYS if isinstance(data.get(k), str) and data[k]}
    picks.update({k: [v for v in data[k] if isinstance(v, str) and v] for k in LIST_KEYS if isinstance(data.get(k), list)})
    wrong = sorted(k for k in data if k in TEXT_KEYS + LIST_KEYS and k not in picks)
    return picks, (f"{path}: ignored {', '.join(wrong)} (not the kind of value the app writes)" if wrong else None)


def write_picks(runs_dir: str | Path, picks: dict) -> str | None:
    """Write the picks atomically; a notice when the folder is not writable (the app goes on without remembering)."""
    path = picks_path(runs_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({k: v for k, v in picks.items() if v not in (None, "", [])}, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        return f"{path}: cannot write the last picks ({exc.strerror or exc})"
    return None
