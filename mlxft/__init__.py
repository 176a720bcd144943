"""mlxft: local-first fine-tuning of language and vision models on MLX."""

from __future__ import annotations

from mlxft._blas import ensure_fast_blas

ensure_fast_blas()  # before anything imports mlx.core

__version__ = "0.1.0"

__all__ = ["__version__", "classifier", "image_classifier", "load", "train"]


def train(recipe, **kwargs):
    """Train from a Recipe (or a path to a recipe YAML) in a supervised child process; returns a Run."""
    from mlxft.api import train as _train

    return _train(recipe, **kwargs)


def load(model, adapter=None, **kwargs):
    """Load a model (catalogue key, Hub id, folder or .gguf) and optionally an adapter; returns (model, tokenizer)."""
    from mlxft.api import load as _load

    return _load(model, adapter=adapter, **kwargs)


def image_classifier(run):
    """A trained image classifier (an image-classify run or its model folder): clf(path or PIL image) -> [{"label", "score"}]."""
    from mlxft.vision.predict import load_classifier

    return load_classifier(run)


def classifier(run):
    """A trained text classifier (an lm-classify run or its adapter folder): clf(texts, top_k=1) -> [{"label", "score"}],
    the shape of transformers' pipeline("text-classification")."""
    from mlxft.llm.classify_predict import load_text_classifier

    return load_text_classifier(run)
