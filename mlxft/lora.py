"""LoRA and DoRA layers: a frozen linear plus a trained low-rank update, shared by language and vision models.

Parameter names and layout match mlx-lm's (`lora_a` [in, r], `lora_b` [r, out], DoRA's magnitude `m`), so adapters
saved from a language model load in mlx-lm; `mlxft/llm/adapters.py` applies them to causal LMs,
`mlxft/vision/classify.py` to a ViT's attention.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten


def _dense_weight(linear: nn.Module) -> mx.array:
    if isinstance(linear, nn.QuantizedLinear):
        return mx.dequantize(linear.weight, linear.scales, linear.biases, group_size=linear.group_size, bits=linear.bits, mode=linear.mode)
    return linear.weight


def _dims(linear: nn.Module) -> tuple[int, int]:
    out_dims, in_dims = linear.weight.shape
    if isinstance(linear, nn.QuantizedLinear):
        in_dims = in_dims * 32 // linear.bits
    return in_dims, out_dims


class LoRALinear(nn.Module):
    """y = W x + (alpha/r) * B A x, with W frozen. Parameter names and layout match mlx-lm's."""

    @classmethod
    def from_base(cls, linear: nn.Module, rank: int, scale: float, dropout: float = 0.0):
        in_dims, out_dims = _dims(linear)
        layer = cls(in_dims, out_dims, rank, scale, dropout)
        layer.linear = linear
        return layer

    def __init__(self, in_dims: int, out_dims: int, rank: int, scale: float, dropout: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(in_dims, out_dims, bias=False)
        self.scale = scale
        self.enabled = True  # False: behave exactly like the base layer (base-vs-tuned in one model)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        bound = 1 / math.sqrt(in_dims)
        self.lora_a = mx.random.uniform(low=-bound, high=bound, shape=(in_dims, rank))
        self.lora_b = mx.zeros((rank, out_dims))  # zero: the adapted model starts equal to the base

    def _delta(self, x: mx.array) -> mx.array:
        if self.dropout is not None:
            x = self.dropout(x)
        return (self.scale * ((x @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype))).astype(x.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        if not self.enabled:
            return self.linear(x)
        return self.linear(x) + self._delta(x)

    def delta_weight(self) -> mx.array:
        return self.scale * (self.lora_b.T @ self.lora_a.T)

    def _fused_weight(self, weight: mx.array) -> mx.array:
        """W + update, in float32 (`weight` is the dense base weight in float32)."""
        return weight + self.delta_weight().astype(mx.float32)

    def fuse(self, dequantize: bool = False) -> nn.Module:
        """A plain (or, for a quantized base, re-quantized) linear holding the adapted weight."""
        base = self.linear
        dense = _dense_weight(base)
        fused = nn.Linear(dense.shape[1], dense.shape[0], bias="bias" in base)
        fused.weight = self._fused_weight(dense.astype(mx.float32)).astype(dense.dtype)
        if "bias" in base:
            fused.bias = base.bias
        if isinstance(base, nn.QuantizedLinear) and not dequantize:
            return nn.QuantizedLinear.from_linear(fused, base.group_size, base.bits, mode=base.mode)
        return fused


class DoRALinear(LoRALinear):
    """Weight-decomposed LoRA: a learned per-row magnitude `m` times the direction of W + BA."""

    @classmethod
    def from_base(cls, linear: nn.Module, rank: int, scale: float, dropout: float = 0.0):
        layer = super().from_base(linear, rank, scale, dropout)
        layer.m = mx.linalg.norm(_dense_weight(linear).astype(mx.float32), axis=1)
        return layer

    def __init__(self, in_dims: int, out_dims: int, rank: int, scale: float, dropout: float = 0.0):
        super().__init__(in_dims, out_dims, rank, scale, dropout)
        self.m = mx.ones((out_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        if not self.enabled:
            return self.linear(x)
        y = self.linear(x)
        if "bias" in self.linear:
            y = y - self.linear.bias
        w = _dense_weight(self.linear)
        # The norm is treated as a constant in the backward pass (the DoRA paper's memory-saving choice).
        norm = mx.stop_gradient(mx.linalg.norm((w + self.delta_weight().astype(w.dtype)).astype(mx.float32), axis=1))
        out = (self.m / norm).astype(x.dtype) * (y + self._delta(x))
        if "bias" in self.linear:
            out = out + self.linear.bias
        return out

    def _fused_weight(self, weight: mx.array) -> mx.array:
        weight = super()._fused_weight(weight)
        return (self.m / mx.linalg.norm(weight, axis=1))[:, None] * weight


def swap_in_adapters(module: nn.Module, keys, method: str, rank: int, scale: float, dropout: float = 0.0) -> list[str]:
    """Replace the linears of `module` named by `keys` (paths inside it) with LoRA/DoRA layers; returns the paths swapped."""
    cls = DoRALinear if method == "dora" else LoRALinear
    swaps = [(k, cls.from_base(m, rank, scale, dropout)) for k, m in module.named_modules() if k in keys]
    if swaps:
        module.update_modules(tree_unflatten(swaps))
    return [k for k, _ in swaps]


def fuse_adapters(model: nn.Module, dequantize: bool = False) -> nn.Module:
    """Replace every LoRA/DoRA layer by a plain linear holding W + update."""
    swaps = [(name, m.fuse(dequantize=dequantize)) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    return model


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch adapters off (base behaviour) or on, without a second copy of the weights."""
    for _, m in model.named_modules():
        if isinstance(m, LoRALinear):
            m.enabled = enabled
