"""Cheaper elementwise work for training on MLX's CPU backend, where elementwise kernels run on one core.

Measured on the 2-core x86_64 CI machine (MLX 0.32.4): `mx.exp` and `mx.sigmoid` cost ~30 ns an element, `mx.power`
about half that. SwiGLU's sigmoid over [positions, intermediate] is paid in every block, forward and backward; here it
is computed once, as a power of two, and kept for the backward pass. The math is silu's to float32 rounding
(tests/test_packing.py); parameters, their names and what is saved do not change.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

LOG2E = 1.4426950408889634

# MLP classes that compute exactly down(silu(gate(x)) * up(x)) (mlx-lm's `swiglu`), by module.
SWIGLU_MLPS = {"mlx_lm.models.llama", "mlx_lm.models.qwen2", "mlx_lm.models.qwen3", "mlx_lm.models.olmo2", "mlx_lm.models.granite"}


@mx.custom_function
def silu_kept(g: mx.array):
    """(silu(g), sigmoid(g)); the sigmoid is the backward pass's, so it is computed once."""
    s = 1.0 / (1.0 + mx.power(2.0, -LOG2E * g))
    return g * s, s


@silu_kept.vjp
def _silu_kept_vjp(primals, cotangents, outputs):
    g, s = primals, outputs[1]
    return cotangents[0] * (s + g * s * (1.0 - s))


class KeptSigmoidSwiGLU(nn.Module):
    """A block's SwiGLU MLP with the same projections (same names, same adapters), its sigmoid computed once."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(silu_kept(self.gate_proj(x))[0] * self.up_proj(x))


def use_cpu_kernels(model: nn.Module) -> int:
    """On the CPU, swap each block's SwiGLU MLP for KeptSigmoidSwiGLU; returns how many were swapped (0 elsewhere)."""
    if mx.default_device() != mx.cpu:
        return 0
    swapped = 0
    for block in getattr(model, "layers", []):
        mlp = getattr(block, "mlp", None)
        if mlp is not None and type(mlp).__name__ == "MLP" and type(mlp).__module__ in SWIGLU_MLPS and all(hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj")):
            block.mlp = KeptSigmoidSwiGLU(mlp)
            swapped += 1
    return swapped
