"""The SFT objective: cross-entropy on trained positions only, with the LM head applied to those rows alone."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlxft.llm.packing import packed_caches

# Architectures whose Model.__call__ is exactly `head(self.model(inputs))`: for these the vocabulary
# projection runs only on trained positions (prompt and padding rows skip the largest matmul and the
# softmax). Others take the full forward pass and then select rows; both give the same loss.
SPLIT_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo2", "granite"}


def split_forward(model: nn.Module, model_type: str):
    """(body, head) for architectures in SPLIT_HEAD_TYPES, else None."""
    if model_type not in SPLIT_HEAD_TYPES or not hasattr(model, "model"):
        return None
    args = getattr(model, "args", None)
    if getattr(args, "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        return model.model, lambda h: model.model.embed_tokens.as_linear(h)
    return model.model, lambda h: model.lm_head(h)


def make_loss(model: nn.Module, model_type: str, split: bool = True):
    """loss(model, inputs, targets, positions, weights[, segments]) -> (mean loss, trained token count).

    With `segments` (a packed batch, see mlxft/llm/packing.py) attention stays inside each sample.
    """
    parts = split_forward(model, model_type) if split else None

    def loss(model, inputs, targets, positions, weights, segments=None):
        cache = packed_caches(model, segments) if segments is not None else None
        if parts is not None:
            body, head = parts
            h = body(inputs, cache=cache)
            h = mx.take(h.reshape(-1, h.shape[-1]), positions, axis=0)
            logits = head(h)
        else:
            logits = model(inputs, cache=cache)
            logits = mx.take(logits.reshape(-1, logits.shape[-1]), positions, axis=0)
        t = mx.take(targets.reshape(-1), positions)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), t) * weights
        ntok = weights.sum()
        return ce.sum() / mx.maximum(ntok, 1.0), ntok

    return loss
