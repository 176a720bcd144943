"""Where the model catalogue lives, and the strict reader both kinds of entry (language models, vision backbones) share.

`models/*.yaml` hold language models (`mlxft.llm.catalogue.ModelEntry`), `models/vision/*.yaml` image backbones
(`mlxft.vision.catalogue.VisionEntry`). Each file maps keys to entries; an entry's key is its name in the file.
Every problem in every file is collected, then one MlxftError names each file, entry and field.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mlxft.errors import MlxftError

MODELS_DIR_ENV = "MLXFT_MODELS_DIR"

Entry = TypeVar("Entry", bound=BaseModel)


def catalogue_folder() -> Path | None:
    """Where the catalogue lives: $MLXFT_MODELS_DIR, else `<repo>/models` (source checkouts), else the copy a
    wheel installs under `<prefix>/share/mlxft/models`."""
    if os.environ.get(MODELS_DIR_ENV):
        return Path(os.environ[MODELS_DIR_ENV]).expanduser()
    for folder in (Path(__file__).resolve().parents[1] / "models", Path(sys.prefix) / "share" / "mlxft" / "models"):
        if folder.is_dir():
            return folder
    return None


def read_entries(folder: Path, entry_type: type[Entry], what: str) -> list[Entry]:
    """Every entry of every `*.yaml` in `folder`, validated as `entry_type`; one MlxftError lists every bad one.

    `what` names the catalogue in the error ("model catalogue", "vision backbone catalogue").
    """
    entries: list[Entry] = []
    seen: dict[str, Path] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}: expected a mapping of model keys to entries, got {type(data).__name__}")
            continue
        for key, fields in data.items():
            where = f"{path}: entry '{key}'"
            if not isinstance(fields, dict):
                problems.append(f"{where}: expected a mapping of fields, got {type(fields).__name__}")
                continue
            if "key" in fields:
                problems.append(f"{where}: field 'key': the entry's name is its key; remove the field")
                continue
            try:
                entry = entry_type.model_validate({"key": str(key), **fields})
            except ValidationError as err:
                problems.extend(f"{where}: field '{loc}': {msg}" for loc, msg in field_problems(err))
                continue
            if entry.key in seen:
                problems.append(f"{where}: key already defined in {seen[entry.key]}")
                continue
            seen[entry.key] = path
            entries.append(entry)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise MlxftError(f"{len(problems)} problem(s) in the {what}\n{lines}", hint=f"fix these entries in {folder}")
    return entries


def field_problems(err: ValidationError) -> list[tuple[str, str]]:
    """(dotted field, message) per field of a validation error; a union's alternatives make one line."""
    merged: dict[str, list[str]] = {}
    for e in err.errors():
        # A union field (a list or 'all-linear') fails once per alternative: one line per field.
        parts = [str(p) for p in e["loc"] if not str(p).startswith(("list[", "literal[", "constrained-", "function-"))]
        msg = "unknown field: check the spelling" if e["type"] == "extra_forbidden" else e["msg"]
        if msg not in merged.setdefault(".".join(parts) or "(entry)", []):
            merged[".".join(parts) or "(entry)"].append(msg)
    return [(loc, "; or ".join(msgs)) for loc, msgs in merged.items()]


def format_parameter_count(n: int) -> str:
    """135M, 1.7B, 4.7M: how every catalogue table prints a parameter count."""
    if n >= 9.95e8:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M" if n >= 1e8 else f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}K"
