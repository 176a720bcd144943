"""LoRA and DoRA layers, applying them to a model, and saving/loading adapters in mlx-lm's format."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from mlxft.errors import ModelError
from mlxft.runs import atomic_write_text, publish_dir

ADAPTER_WEIGHTS = "adapters.safetensors"  # the names mlx_lm.generate --adapter-path reads
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_LEAVES = ("lora_a", "lora_b", "m")


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


def resolve_target_keys(model: nn.Module, targets, num_layers: int) -> list[str]:
    """Module paths inside one block (e.g. 'self_attn.q_proj') that the targets name."""
    blocks = model.layers[-num_layers:] if num_layers else []
    linears = set()
    for block in blocks:
        for name, module in block.named_modules():
            if isinstance(module, (nn.Linear, nn.QuantizedLinear)):
                linears.add(name)
    if targets == "all-linear":
        return sorted(linears)
    keys, missing = [], []
    for t in targets:
        matched = sorted(k for k in linears if k == t or k.endswith("." + t))
        (keys.extend(matched) if matched else missing.append(t))
    if missing:
        raise ModelError(
            f"LoRA targets {missing} match no linear layer of this model",
            hint=f"choose from: {', '.join(sorted({k.split('.')[-1] for k in linears}))} (or 'all-linear')",
        )
    return sorted(set(keys))


def apply_adapters(model: nn.Module, method: str, rank: int, scale: float, dropout: float, keys: list[str], num_layers: int) -> None:
    """Freeze the model and swap LoRA/DoRA layers in for `keys` of the last `num_layers` blocks."""
    model.freeze()
    cls = DoRALinear if method == "dora" else LoRALinear
    for block in model.layers[-num_layers:]:
        swaps = [(k, cls.from_base(m, rank, scale, dropout)) for k, m in block.named_modules() if k in keys]
        block.update_modules(tree_unflatten(swaps))


def adapter_layer_count(model: nn.Module, layers) -> int:
    n = len(model.layers)
    return n if layers == "all" else min(int(layers), n)


def adapter_config(method: str, num_layers: int, rank: int, scale: float, dropout: float, keys: list[str], alpha: float | None = None, base_model: str | None = None) -> dict:
    """The adapter_config.json mlx-lm reads (`lora_parameters.scale` is alpha/rank), plus our own provenance keys."""
    cfg = {"fine_tune_type": method, "num_layers": num_layers}
    if method != "full":
        cfg["lora_parameters"] = {"rank": rank, "scale": scale, "dropout": dropout, "keys": keys}
    cfg["mlxft"] = {"alpha": alpha, "base_model": base_model}
    return cfg


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def save_adapter(model: nn.Module, folder: str | Path, config: dict) -> Path:
    """Write adapters.safetensors + adapter_config.json into `folder` atomically (a complete folder or the old one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    weights = trainable_weights(model)
    mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), weights, metadata={"format": "mlx"})
    atomic_write_text(tmp / ADAPTER_CONFIG, json.dumps(config, indent=2))
    publish_dir(tmp, folder)
    return folder


def read_adapter_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        # A run directory holds its adapter in adapter/.
        if (folder / "adapter" / ADAPTER_CONFIG).is_file():
            return read_adapter_config(folder / "adapter")
        raise ModelError(f"{folder}: no {ADAPTER_CONFIG} here", hint="pass an adapter folder or a run directory from `mlxft train`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None


def resolve_adapter_dir(path: str | Path) -> Path:
    path = Path(path)
    if (path / ADAPTER_CONFIG).is_file():
        return path
    if (path / "adapter" / ADAPTER_CONFIG).is_file():
        return path / "adapter"
    raise ModelError(f"{path}: no adapter found", hint="pass an adapter folder (adapter_config.json + adapters.safetensors) or a run directory")


def load_adapter(model: nn.Module, path: str | Path) -> dict:
    """Apply the adapter at `path` (an adapter folder or a run directory) to `model`; returns its config."""
    folder = resolve_adapter_dir(path)
    cfg = read_adapter_config(folder)
    method = cfg.get("fine_tune_type", "lora")
    weights = mx.load(str(folder / ADAPTER_WEIGHTS))
    if method != "full":
        lp = cfg["lora_parameters"]
        keys = lp.get("keys") or resolve_target_keys(model, ["q_proj", "v_proj"], cfg["num_layers"])
        apply_adapters(model, method, lp["rank"], lp["scale"], lp.get("dropout", 0.0), keys, cfg["num_layers"])
    params = dict(tree_flatten(model.parameters()))
    problems = [k for k, v in weights.items() if k not in params or params[k].shape != v.shape]
    if problems:
        raise ModelError(f"{folder}: {len(problems)} adapter tensors do not fit this model (e.g. {problems[0]})", hint="was the adapter trained on a different base model?")
    model.load_weights(list(weights.items()), strict=False)
    mx.eval(model.parameters())
    return cfg


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
