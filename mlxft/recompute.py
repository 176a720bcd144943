"""Gradient checkpointing: recompute a block's activations in the backward pass instead of keeping them."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def enable_grad_checkpoint(block: nn.Module) -> None:
    """Checkpoint every block of `block`'s class (patches the class; training runs in its own process)."""
    cls = type(block)
    if getattr(cls, "_mlxft_checkpointed", False):
        return
    original = cls.__call__

    def checkpointed(self, *args, **kwargs):
        def inner(params, *args, **kwargs):
            self.update(params)
            return original(self, *args, **kwargs)

        return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

    cls.__call__ = checkpointed
    cls._mlxft_checkpointed = True
