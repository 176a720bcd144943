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


LOG2E = 1.4426950408889634


@mx.custom_function
def _one_pass_cross_entropy(logits: mx.array, targets: mx.array):
    """(per-row cross-entropy, softmax): the softmax is kept for the backward pass, so exp runs over the logits once."""
    m = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    e = mx.power(2.0, (logits - m) * LOG2E)  # exp(logits - m); MLX's CPU exp is ~2x slower than its power (measured)
    s = e.sum(axis=-1, keepdims=True)
    picked = mx.take_along_axis(logits, targets[:, None], axis=-1).squeeze(-1)
    return (mx.log(s) + m).squeeze(-1) - picked, e * (1.0 / s)


@_one_pass_cross_entropy.vjp
def _one_pass_cross_entropy_vjp(primals, cotangents, outputs):
    logits, targets = primals
    dloss = cotangents[0] if isinstance(cotangents, (list, tuple)) else cotangents
    grad = outputs[1] * dloss[:, None]
    grad = grad.at[mx.arange(grad.shape[0]), targets].add(-dloss)  # d/dlogits = (softmax - onehot) * dloss
    return grad, mx.zeros_like(targets)


def token_cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Cross-entropy per row of [T, V] float32 logits.

    On the CPU the vocabulary-wide exponentials are the costliest elementwise work of an SFT step (single-threaded in
    MLX's CPU backend): the forward pass keeps its softmax for the backward pass (one exp pass, not two). Elsewhere
    (Metal, CUDA) it is MLX's own cross_entropy.
    """
    if mx.default_device() == mx.cpu:
        return _one_pass_cross_entropy(logits, targets.astype(mx.int32))[0]
    return nn.losses.cross_entropy(logits, targets)


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
        ce = token_cross_entropy(logits.astype(mx.float32), t) * weights
        ntok = weights.sum()
        return ce.sum() / mx.maximum(ntok, 1.0), ntok

    return loss
