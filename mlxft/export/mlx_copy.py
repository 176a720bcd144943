"""The `mlx` export: the run's result folder as it is (mlx-lm reads an adapter folder with --adapter-path), plus the
run's README and recipe, so the folder stands on its own once copied or pushed."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlxft.errors import RunError


def result_folder(run, recipe) -> Path:
    """The folder a finished run's result is in (RUN/adapter or RUN/model), checked to exist."""
    from mlxft.train.run import JOBS

    folder = run.result_dir(JOBS[recipe.kind].artifact)
    if not folder.is_dir():
        raise RunError(f"{run.path}: no {folder.name}/ yet (the run has not saved its result)",
                       hint=f"let the training finish, or `mlxft train --resume {run.path}`")
    return folder


def write(run, recipe, folder: Path, options) -> list[str]:
    source = result_folder(run, recipe)
    for item in source.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
    for extra in (run.readme_path, run.recipe_path):
        if extra.is_file() and not (folder / extra.name).exists():
            shutil.copy2(extra, folder / extra.name)
    return []
