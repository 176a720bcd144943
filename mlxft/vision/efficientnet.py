"""EfficientNet-Lite0..4 in MLX (NHWC): TF "SAME" padding, ReLU6, BatchNorm eps 1e-3, no squeeze-excitation.

Reads lukemelas `efficientnet_pytorch` names (`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`, ...).
"""

from __future__ import annotations

import math
import re

import mlx.nn as nn

from mlxft.vision.backbones import Backbone, LoadedBackbone, Preprocess, head_classes, load_strict
from mlxft.vision.ops import DepthwiseConv2d, PointwiseConv2d, SameConv2d, conv_bn

BN_EPS = 1e-3
# (repeats, kernel, stride, expand, in, out): the EfficientNet-B0 block strings the Lite models share.
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
# variant -> (width, depth, input size)
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260),
            "lite3": (1.2, 1.4, 280), "lite4": (1.4, 1.8, 300)}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * scaled else new


def block_table(variant: str) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in, out) per block; Lite keeps the first and last stages' repeats unscaled."""
    width, depth, _ = VARIANTS[variant]
    rows = []
    for i, (r, k, s, e, cin, cout) in enumerate(STAGES):
        repeats = r if i in (0, len(STAGES) - 1) else int(math.ceil(r * depth))
        cin, cout = (32 if i == 0 else round_filters(cin, width)), round_filters(cout, width)
        for j in range(repeats):
            rows.append((k, s if j == 0 else 1, e, cin if j == 0 else cout, cout))
    return rows


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = PointwiseConv2d(cin, cout) if kernel == 1 and stride == 1 else SameConv2d(cin, cout, kernel, stride)
        self.bn = nn.BatchNorm(cout, eps=BN_EPS)

    def __call__(self, x):
        return nn.relu6(conv_bn(self.conv, self.bn, x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project (no activation), residual when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int, *, shifted: bool = True):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = PointwiseConv2d(cin, mid)
            self.bn0 = nn.BatchNorm(mid, eps=BN_EPS)
        self.depthwise_conv = DepthwiseConv2d(mid, kernel, stride, same=True, shifted=shifted)
        self.bn1 = nn.BatchNorm(mid, eps=BN_EPS)
        self.project_conv = PointwiseConv2d(mid, cout)
        self.bn2 = nn.BatchNorm(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x):
        y = nn.relu6(conv_bn(self.expand_conv, self.bn0, x)) if "expand_conv" in self else x
        y = nn.relu6(conv_bn(self.depthwise_conv, self.bn1, y))
        y = conv_bn(self.project_conv, self.bn2, y)
        return x + y if self.residual else y


class EfficientNetLite(Backbone):
    def __init__(self, variant: str = "lite0", num_classes: int | None = 1000, *, shifted: bool = True, table=None):
        super().__init__()
        self.variant = variant
        table = table or block_table(variant)
        self.stem = ConvBN(3, table[0][3], 3, 2)
        self.layers = [MBConv(*row, shifted=shifted) for row in table]
        self.top = ConvBN(table[-1][4], 1280, 1)
        self.num_features = 1280
        self.head = nn.Linear(1280, num_classes) if num_classes else None

    def features(self, x):
        x = self.stem(x)
        for block in self.layers:
            x = block(x)
        return self.top(x).mean(axis=(1, 2))

    def blocks(self):
        return [self.stem, *self.layers, self.top]


def recognises(weights: dict, config: dict) -> bool:
    return "_conv_stem.weight" in weights and any(k.startswith("_blocks.") for k in weights)


def rename(name: str) -> str | None:
    """lukemelas name -> ours; None for `num_batches_tracked` (a counter, unused in eval)."""
    if name.endswith("num_batches_tracked"):
        return None
    for old, new in (("_conv_stem.", "stem.conv."), ("_bn0.", "stem.bn."), ("_conv_head.", "top.conv."),
                     ("_bn1.", "top.bn."), ("_fc.", "head.")):
        if name.startswith(old):
            return new + name[len(old):]
    m = re.match(r"_blocks\.(\d+)\._(\w+)\.(\w+)$", name)
    return f"layers.{m[1]}.{m[2]}.{m[3]}" if m else name


def table_from_weights(weights: dict) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in, out) per block read from the tensor shapes; strides from the B0 stage starts."""
    n = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("_blocks."))
    rows, prev_out, stage = [], None, -1
    for i in range(n):
        dw = weights.get(f"_blocks.{i}._depthwise_conv.weight")
        proj = weights.get(f"_blocks.{i}._project_conv.weight")
        if dw is None or proj is None or dw.ndim != 4 or proj.ndim != 4:
            return []  # load_strict names what is missing
        ex = weights.get(f"_blocks.{i}._expand_conv.weight")
        mid, cout = dw.shape[0], proj.shape[0]
        cin = ex.shape[1] if ex is not None else mid
        first = cout != prev_out
        stage += first
        stride = STAGES[min(stage, len(STAGES) - 1)][2] if first else 1
        rows.append((dw.shape[-1], stride, mid // cin, cin, cout))
        prev_out = cout
    return rows


def from_checkpoint(weights: dict, config: dict, source: str) -> LoadedBackbone:
    renamed = {new: v for k, v in weights.items() if (new := rename(k)) is not None}
    table = table_from_weights(weights)
    variant = next((v for v in VARIANTS if block_table(v) == table), None)
    model = EfficientNetLite(variant or "lite0", head_classes(renamed), table=table or None)
    arch = f"efficientnet_{variant}" if variant else "efficientnet_lite (custom block table)"
    notes = load_strict(model, renamed, arch=arch, source=source)
    size = VARIANTS[variant or "lite0"][2]
    pre = Preprocess(size=size, resize=int(round(size / 0.875)), mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0),
                     interpolation="bicubic")
    notes.append("BatchNorm eps 1e-3 (TF); num_batches_tracked counters dropped")
    return LoadedBackbone(model.eval(), pre, arch, source, notes)
