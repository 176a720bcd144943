"""Padding-free batches for causal LMs: samples end to end in a row, attention kept inside each sample.

mlx-lm's models build their attention mask from the cache they are given (`create_attention_mask` asks a cache with
`make_mask` for it), so a stateless cache that answers with the block-diagonal causal mask of the batch's segments
makes any of them attend within samples only, with no change to the model code. Positions need no restart: every
architecture in PACKABLE_TYPES encodes position by a rotation (RoPE) or not at all, and a rotation's attention score
depends only on the distance between query and key, which packing keeps.
"""

from __future__ import annotations

import mlx.core as mx

# Attention-only architectures with rotary (or no) position encoding: packing is exact for these. Recurrent or
# state-space layers (mamba, qwen3-next, ...) would carry state across samples and absolute position embeddings
# (gpt2, ...) would not restart: those take `bucket` batching.
PACKABLE_TYPES = {
    "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "phi3", "smollm3", "olmo2", "granite",
    "gemma", "gemma2", "gemma3_text", "starcoder2", "cohere", "internlm2", "exaone", "mixtral", "stablelm", "phi",
}

# Relative cost of attention over one (query, key) pair, against one position's other work, per unit of
# hidden size ratio: see attention_cost. Measured on this engine's CPU step (benchmarks/train.py --batching pack).
ELEMENTWISE_WEIGHT = 40.0


def packable(model_type: str) -> bool:
    return model_type in PACKABLE_TYPES


def attention_cost(config: dict) -> float:
    """One (query, key) pair's attention cost in units of one position's projection and MLP work (see pack_layout).

    Per layer a position costs ~2 x the layer's weights in multiply-adds; a pair costs 4 x hidden (scores and the
    weighted sum) plus the mask and softmax, elementwise work that the CPU backend runs on one core.
    """
    d = int(config.get("hidden_size") or 0)
    inter = int(config.get("intermediate_size") or 4 * d)
    heads = int(config.get("num_attention_heads") or 1)
    kv = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or (d // max(heads, 1)))
    if d <= 0:
        return 0.0
    layer_weights = d * heads * head_dim * 2 + d * kv * head_dim * 2 + 3 * d * inter
    return (4.0 * heads * head_dim + ELEMENTWISE_WEIGHT * heads) / (2.0 * layer_weights)


class SegmentMask:
    """A stand-in for a layer's KV cache during one packed forward pass: no state, only the mask.

    `segments` [R, L] int32 numbers each position's sample; position i attends to j when both hold the same sample
    and j <= i (and, for sliding-window layers, i - j < window).
    """

    offset = 0

    def __init__(self, segments: mx.array):
        self.segments = segments

    def __bool__(self) -> bool:
        return True

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        seg = self.segments
        idx = mx.arange(N)
        mask = (seg[:, None, :, None] == seg[:, None, None, :]) & (idx[:, None] >= idx[None, :])
        if window_size is not None:
            mask = mask & (idx[:, None] < idx[None, :] + window_size)
        return mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values


def packed_caches(model, segments: mx.array) -> list[SegmentMask]:
    """The `cache` argument that makes `model` (or its body) attend within segments."""
    return [SegmentMask(segments)] * len(model.layers)
