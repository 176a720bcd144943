"""The `transformers` export of an image-classify run (`*ForImageClassification` layout; see vision_folder.py)."""

from __future__ import annotations

from pathlib import Path

from mlxft.export import vision_folder


def write(run, recipe, folder: Path, options) -> list[str]:
    return vision_folder.write(run, recipe, folder, options, target="transformers")
