"""The small Python API: `mlxft.train(recipe) -> Run` and `mlxft.load(model, adapter=...)`."""

from __future__ import annotations

from pathlib import Path

from mlxft.recipe import Recipe, load_recipe, recipe_from_dict


def train(recipe: Recipe | dict | str | Path, on_event=None, overrides: list[str] | None = None, ranks: int = 1):
    """Train in a supervised child process (or `ranks` data-parallel ones). `recipe` is a Recipe, a dict, or a path to a YAML file."""
    from mlxft.train.process import start_run

    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe, overrides)
    elif isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe, overrides=overrides)
    return start_run(recipe, on_event=on_event or (lambda e: None), ranks=ranks)


def load(model: str, adapter: str | Path | None = None, dtype: str = "auto", trust_remote_code: bool = False):
    """(model, tokenizer) ready for generation, with the adapter applied when given."""
    from mlxft.llm.adapters import check_adapter, load_adapter
    from mlxft.llm.loading import load_model

    if adapter is not None:
        check_adapter(adapter)  # a broken adapter is named before the model's weights are read
    loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if adapter is not None:
        load_adapter(loaded.model, adapter)
    loaded.model.eval()
    return loaded.model, loaded.tokenizer
