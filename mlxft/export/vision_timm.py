"""The `timm` export of an image-classify run (timm's Hub layout; see vision_folder.py)."""

from __future__ import annotations

from pathlib import Path

from mlxft.export import vision_folder


def write(run, recipe, folder: Path, options) -> list[str]:
    return vision_folder.write(run, recipe, folder, options, target="timm")
