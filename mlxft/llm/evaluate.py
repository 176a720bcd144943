"""Held-out loss and perplexity of a model (with or without an adapter) on a data split."""

from __future__ import annotations

import math
from functools import partial

from mlxft.data.encode import SampleEncoder, encode_records
from mlxft.data.sources import read_split
from mlxft.errors import DataError
from mlxft.recipe import DataSection


def encode_split(loaded, data: str, split: str, *, data_format: str = "auto", max_seq_length: int = 2048):
    """(samples, stats) of one split, encoded exactly as training would, truncating over-long samples."""
    records = read_split(data, split)
    if not records:
        raise DataError(f"{data}: no '{split}' split", hint="pass --split train|valid|test, or a .jsonl file with --split train")
    cfg = DataSection(path=data, format=data_format, max_seq_length=max_seq_length)
    return encode_records(records, SampleEncoder(loaded.tokenizer, cfg), data_format, max_seq_length, "truncate")


def evaluate_loss(model, loss, samples, batch_size: int, pad_id: int = 0) -> tuple[float, int]:
    """Token-weighted mean loss of `loss(inputs, targets, positions, weights)` over samples; (nan, 0) if none."""
    import mlx.core as mx

    from mlxft.data.batches import collate, eval_order

    if not samples:
        return float("nan"), 0
    model.eval()
    total, ntoks = 0.0, 0
    for idx in eval_order([len(s) for s in samples], batch_size):
        b = collate([samples[i] for i in idx], pad_id)
        value, _ = loss(mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights))
        total += value.item() * b.trained_tokens
        ntoks += b.trained_tokens
    return total / max(ntoks, 1), ntoks


def split_loss(loaded, samples, batch_size: int = 4) -> dict:
    """Token-weighted loss and perplexity of the model as it is now (adapters on or off) over encoded samples."""
    from mlxft.llm.objective import make_loss

    loss_fn = partial(make_loss(loaded.model, loaded.model_type), loaded.model)
    loss, tokens = evaluate_loss(loaded.model, loss_fn, samples, batch_size, loaded.tokenizer.pad_token_id or 0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}


def eval_loss(model: str, data: str, *, split: str = "test", adapter: str | None = None, batch_size: int = 4, max_seq_length: int = 2048, data_format: str = "auto") -> dict:
    from mlxft.llm.adapters import load_adapter
    from mlxft.llm.loading import load_model

    loaded = load_model(model)
    if adapter:
        load_adapter(loaded.model, adapter)
    samples, stats = encode_split(loaded, data, split, data_format=data_format, max_seq_length=max_seq_length)
    return {"split": split, **split_loss(loaded, samples, batch_size), "samples": len(samples), "truncated": stats.truncated}
