"""Vision Transformers in MLX (NHWC in): timm `vit_*`, Hugging Face `ViTModel` and `Dinov2Model` names, layer scale.

The position embedding is resampled to the input's patch grid with the bicubic kernel torch's
`F.interpolate(mode="bicubic", align_corners=False, antialias=False)` uses (A=-0.75, half-pixel, clamped border),
written as two matrices so it stays differentiable; at the native grid it is the identity.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxft.vision.backbones import IMAGENET, Backbone, LoadedBackbone, Preprocess, head_classes, load_strict, timm_preprocess

CUBIC_A = -0.75


def _cubic(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    near = ((CUBIC_A + 2) * t - (CUBIC_A + 3)) * t * t + 1
    far = ((CUBIC_A * t - 5 * CUBIC_A) * t + 8 * CUBIC_A) * t - 4 * CUBIC_A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@lru_cache(maxsize=64)
def bicubic_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights of torch's 1-D bicubic resize (align_corners=False, no antialias): out = M @ in."""
    m = np.zeros((out_size, in_size))
    scale = in_size / out_size
    for o in range(out_size):
        src = (o + 0.5) * scale - 0.5  # torch does not clamp the cubic source index
        base = math.floor(src)
        for tap in range(-1, 3):
            m[o, min(max(base + tap, 0), in_size - 1)] += _cubic(np.array(src - (base + tap)))
    return m.astype(np.float32)


def resize_pos_grid(grid: mx.array, size: tuple[int, int]) -> mx.array:
    """A [gh, gw, D] position grid resized bicubically to `size`."""
    gh, gw, _ = grid.shape
    if (gh, gw) == tuple(size):
        return grid
    mh, mw = mx.array(bicubic_matrix(size[0], gh)), mx.array(bicubic_matrix(size[1], gw))
    return mx.einsum("hi,ijd,wj->hwd", mh, grid, mw)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool = True):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x):
        b, n, d = x.shape
        split = lambda t: t.reshape(b, n, self.heads, d // self.heads).transpose(0, 2, 1, 3)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // self.heads) ** -0.5)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def __call__(self, x):
        return self.fc2(nn.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float, layer_scale: bool, qkv_bias: bool = True):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn, self.mlp = Attention(dim, heads, qkv_bias), Mlp(dim, hidden)
        if layer_scale:
            self.ls1, self.ls2 = mx.ones((dim,)), mx.ones((dim,))

    def __call__(self, x):
        scale = "ls1" in self
        a = self.attn(self.norm1(x))
        x = x + (self.ls1 * a if scale else a)
        m = self.mlp(self.norm2(x))
        return x + (self.ls2 * m if scale else m)


class VisionTransformer(Backbone):
    """`pool`: "token" (CLS after the final norm), "avg" (mean patch token, through fc_norm) or "token+avg" (both, concatenated)."""

    def __init__(self, *, dim: int = 384, depth: int = 12, heads: int = 6, patch: int = 16, grid: int = 14,
                 hidden: int | None = None, eps: float = 1e-6, layer_scale: bool = False, pool: str = "token",
                 num_classes: int | None = 1000, qkv_bias: bool = True):
        super().__init__()
        self.patch, self.grid, self.pool = patch, grid, pool
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = mx.zeros((1, 1, dim))
        self.pos_embed = mx.random.normal((1, grid * grid + 1, dim)) * 0.02
        self.layers = [Block(dim, heads, hidden or 4 * dim, eps, layer_scale, qkv_bias) for _ in range(depth)]
        if pool == "avg":  # timm's avg-pooled ViTs norm after pooling (fc_norm) and have no final norm
            self.fc_norm = nn.LayerNorm(dim, eps=eps)
        else:
            self.norm = nn.LayerNorm(dim, eps=eps)
        self.num_features = 2 * dim if pool == "token+avg" else dim
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else None

    def position_embedding(self, gh: int, gw: int) -> mx.array:
        """[1, 1 + gh*gw, D]: the CLS position, then the patch grid resized to gh x gw."""
        d = self.pos_embed.shape[-1]
        grid = resize_pos_grid(self.pos_embed[0, 1:].reshape(self.grid, self.grid, d), (gh, gw))
        return mx.concatenate([self.pos_embed[:, :1], grid.reshape(1, gh * gw, d)], axis=1)

    def tokens(self, x: mx.array) -> mx.array:
        """The final-norm hidden states [B, 1 + patches, D] (HF's last_hidden_state)."""
        x = self.patch_embed(x)
        b, gh, gw, d = x.shape
        x = mx.concatenate([mx.broadcast_to(self.cls_token, (b, 1, d)), x.reshape(b, gh * gw, d)], axis=1)
        x = x + self.position_embedding(gh, gw)
        for block in self.layers:
            x = block(x)
        return x

    def features(self, x):
        h = self.tokens(x)
        if self.pool == "avg":
            return self.fc_norm(h[:, 1:].mean(axis=1))
        h = self.norm(h)
        if self.pool == "token+avg":
            return mx.concatenate([h[:, 0], h[:, 1:].mean(axis=1)], axis=-1)
        return h[:, 0]

    def hidden_states(self, x):
        """last_hidden_state as HF returns it (after the final layernorm)."""
        h = self.tokens(x)
        return self.norm(h) if "norm" in self else h

    def blocks(self):
        return list(self.layers)


HF_RENAMES = [
    ("embeddings.cls_token", "cls_token"), ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed."), ("encoder.layer.", "layers."),
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."), ("attention.attention.", "attn."),
    ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("layer_scale1.lambda1", "ls1"), ("layer_scale2.lambda1", "ls2"),
]
DROPPED = {"embeddings.mask_token": "embeddings.mask_token dropped (used only for masked pre-training)"}


def recognises(weights: dict, config: dict) -> bool:
    return any(re.match(r"^((vit|dinov2)\.)?embeddings\.patch_embeddings\.projection\.weight$", k) for k in weights) or (
        "patch_embed.proj.weight" in weights and "cls_token" in weights)


def rename(weights: dict) -> tuple[dict, list[str], str]:
    """Our names for a timm or HF checkpoint; also the notes on dropped tensors and the layout name."""
    out, notes = {}, []
    if "patch_embed.proj.weight" in weights:
        for k, v in weights.items():
            k = k.replace("patch_embed.proj.", "patch_embed.").replace(".ls1.gamma", ".ls1").replace(".ls2.gamma", ".ls2")
            k = re.sub(r"^blocks\.", "layers.", k)
            m = re.match(r"(layers\.\d+\.attn\.)qkv\.(weight|bias)$", k)
            if m:
                for part, piece in zip(("query", "key", "value"), mx.split(v, 3, axis=0)):
                    out[f"{m[1]}{part}.{m[2]}"] = piece
                continue
            out[k] = v
        return out, notes, "timm"
    layout = "Dinov2Model" if any(k.startswith(("dinov2.", "encoder.layer.0.layer_scale1")) for k in weights) else "ViTModel"
    for k, v in weights.items():
        k = re.sub(r"^(vit|dinov2)\.", "", k)
        if k in DROPPED:
            notes.append(DROPPED[k])
            continue
        if k.startswith("pooler."):
            notes.append(f"{k} dropped (the pooler is not part of the features)")
            continue
        for old, new in HF_RENAMES:
            k = k.replace(old, new)
        k = re.sub(r"^layernorm\.", "norm.", k)
        k = re.sub(r"^classifier\.", "head.", k)
        out[k] = v
    return out, notes, layout


def from_checkpoint(weights: dict, config: dict, source: str) -> LoadedBackbone:
    renamed, notes, layout = rename(weights)
    dim = int(renamed["cls_token"].shape[-1]) if "cls_token" in renamed else int(config.get("hidden_size", 384))
    depth = 1 + max((int(m[1]) for k in renamed if (m := re.match(r"layers\.(\d+)\.", k))), default=-1)
    patch_w = renamed.get("patch_embed.weight")
    patch = int(patch_w.shape[-1]) if patch_w is not None else int(config.get("patch_size", 16))
    tokens = int(renamed["pos_embed"].shape[1]) - 1 if "pos_embed" in renamed else 196
    grid = int(round(math.sqrt(tokens)))
    fc1 = renamed.get("layers.0.mlp.fc1.weight")
    hidden = int(fc1.shape[0]) if fc1 is not None else 4 * dim
    args = config.get("model_args") or {}  # timm configs written with model_args (timm's save_for_hf, mlxft's timm export)
    heads = int(config.get("num_attention_heads") or config.get("num_heads") or args.get("num_heads") or max(dim // 64, 1))
    default_eps = 1e-12 if layout == "ViTModel" else 1e-6
    eps = float(config.get("layer_norm_eps", default_eps))
    layer_scale = "layers.0.ls1" in renamed
    head_w = renamed.get("head.weight")
    if layout == "Dinov2Model":
        pool = "token+avg" if head_w is None or head_w.shape[-1] == 2 * dim else "token"
    else:
        pool = "avg" if "fc_norm.weight" in renamed else "token"
    model = VisionTransformer(dim=dim, depth=depth, heads=heads, patch=patch, grid=grid, hidden=hidden, eps=eps,
                              layer_scale=layer_scale, pool=pool, num_classes=head_classes(renamed),
                              qkv_bias="layers.0.attn.query.bias" in renamed)
    family = "dinov2" if layout == "Dinov2Model" or (layer_scale and patch == 14) else "vit"
    size_name = {384: "small", 768: "base", 1024: "large", 192: "tiny", 1536: "giant"}.get(dim, f"d{dim}")
    arch = f"vit_{size_name}_patch{patch}" + ("_dinov2" if family == "dinov2" else "")
    notes = load_strict(model, renamed, arch=arch, source=f"{source} ({layout} names)") + notes
    notes.append(f"features: {pool} pooling ({model.num_features}); position embedding {grid}x{grid}, bicubically resized for other inputs")
    pre = _preprocess(config, family, layout, patch)
    return LoadedBackbone(model.eval(), pre, arch, source, notes)


def _preprocess(config: dict, family: str, layout: str, patch: int) -> Preprocess:
    timm = timm_preprocess(config)
    if timm is not None:
        return timm
    if family == "dinov2":
        return Preprocess(size=224, resize=256, interpolation="bicubic", **IMAGENET)
    if layout == "ViTModel":  # google/vit-*: the whole image to 224x224, (x/255 - 0.5)/0.5
        size = int(config.get("image_size", 224))
        return Preprocess(size=size, resize=size, mean=(127.5,) * 3, std=(127.5,) * 3, interpolation="bilinear", keep_aspect=False)
    return Preprocess(size=224, resize=248, mean=(127.5,) * 3, std=(127.5,) * 3, interpolation="bicubic")
