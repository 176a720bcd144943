"""ResNet-18/34/50/101 in MLX (NHWC), torchvision/timm names, plus the Caffe-style ResNet-50-1by2 (Yahoo Open-NSFW).

The Caffe variant puts the stride on each first block's 1x1 conv and pads the stem max-pool only bottom/right
(Keras "same"); its BatchNorm arrives folded into `scale`/`shift`, loaded exactly as weight=scale, bias=shift,
running mean 0 and running var 1-eps. Hugging Face `ResNetModel` names are renamed to torchvision's.
"""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn

from mlxft.vision.backbones import IMAGENET, Backbone, LoadedBackbone, Preprocess, head_classes, load_strict, timm_preprocess
from mlxft.vision.ops import PointwiseConv2d, conv_bn

BN_EPS = 1e-5
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, mid: int, stride: int, caffe: bool = False):
        super().__init__()
        cout = mid
        self.conv1 = nn.Conv2d(cin, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm(mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(cout, eps=BN_EPS)
        if stride != 1 or cin != cout:
            self.downsample = [PointwiseConv2d(cin, cout, stride=stride), nn.BatchNorm(cout, eps=BN_EPS)]

    def __call__(self, x):
        y = nn.relu(conv_bn(self.conv1, self.bn1, x))
        y = conv_bn(self.conv2, self.bn2, y)
        return nn.relu(y + _shortcut(self, x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, mid: int, stride: int, caffe: bool = False):
        super().__init__()
        cout = mid * 4
        s1, s2 = (stride, 1) if caffe else (1, stride)  # Caffe ResNet v1 strides the 1x1, torchvision the 3x3
        self.conv1 = PointwiseConv2d(cin, mid, stride=s1)
        self.bn1 = nn.BatchNorm(mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=s2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(mid, eps=BN_EPS)
        self.conv3 = PointwiseConv2d(mid, cout)
        self.bn3 = nn.BatchNorm(cout, eps=BN_EPS)
        if stride != 1 or cin != cout:
            self.downsample = [PointwiseConv2d(cin, cout, stride=stride), nn.BatchNorm(cout, eps=BN_EPS)]

    def __call__(self, x):
        y = nn.relu(conv_bn(self.conv1, self.bn1, x))
        y = nn.relu(conv_bn(self.conv2, self.bn2, y))
        y = conv_bn(self.conv3, self.bn3, y)
        return nn.relu(y + _shortcut(self, x))


def _shortcut(block, x):
    if "downsample" in block:
        conv, bn = block.downsample
        return conv_bn(conv, bn, x)
    return x


class ResNet(Backbone):
    def __init__(self, depth: int = 50, num_classes: int | None = 1000, *, width: int = 64, caffe: bool = False,
                 layers: tuple[int, ...] | None = None, kind: str | None = None):
        super().__init__()
        kind_d, layers_d = DEPTHS.get(depth, ("bottleneck", (3, 4, 6, 3)))
        kind, layers = kind or kind_d, layers or layers_d
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.caffe = caffe
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm(64, eps=BN_EPS)
        cin = 64
        for i, n in enumerate(layers):
            mid = width * 2 ** i
            stage = []
            for j in range(n):
                stage.append(block(cin, mid, 2 if (j == 0 and i > 0) else 1, caffe))
                cin = mid * block.expansion
            setattr(self, f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes) if num_classes else None

    def stem(self, x):
        x = nn.relu(conv_bn(self.conv1, self.bn1, x))
        if self.caffe:  # Keras "same" max-pool: pad bottom/right only, with -inf
            x = mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)], constant_values=-float("inf"))
        else:
            x = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-float("inf"))
        return nn.MaxPool2d(3, stride=2)(x)

    def features(self, x):
        x = self.stem(x)
        for i in range(self.num_stages):
            for block in getattr(self, f"layer{i + 1}"):
                x = block(x)
        return x.mean(axis=(1, 2))

    def blocks(self):
        return [b for i in range(self.num_stages) for b in getattr(self, f"layer{i + 1}")]


def recognises(weights: dict, config: dict) -> bool:
    return ("conv1.weight" in weights and any(k.startswith("layer1.") for k in weights)) or any(
        re.match(r"(resnet\.)?embedder\.embedder\.convolution\.weight$", k) for k in weights)


def rename_hf(name: str) -> str:
    """Hugging Face ResNetModel / ResNetForImageClassification name -> torchvision's."""
    name = re.sub(r"^resnet\.", "", name)
    name = name.replace("embedder.embedder.convolution.", "conv1.").replace("embedder.embedder.normalization.", "bn1.")
    name = re.sub(r"^classifier\.1\.", "head.", name)
    m = re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)$", name)
    if m:
        stage, block, rest = int(m[1]) + 1, m[2], m[3]
        rest = rest.replace("shortcut.convolution.", "downsample.0.").replace("shortcut.normalization.", "downsample.1.")
        rest = re.sub(r"^layer\.(\d+)\.convolution\.", lambda g: f"conv{int(g[1]) + 1}.", rest)
        rest = re.sub(r"^layer\.(\d+)\.normalization\.", lambda g: f"bn{int(g[1]) + 1}.", rest)
        name = f"layer{stage}.{block}.{rest}"
    return name


def from_checkpoint(weights: dict, config: dict, source: str) -> LoadedBackbone:
    notes = []
    hf = any(k.endswith("embedder.embedder.convolution.weight") for k in weights)
    renamed = {}
    folded = any(k.endswith(".scale") for k in weights)
    for k, v in weights.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = rename_hf(k) if hf else k
        k = re.sub(r"^fc\.", "head.", k)
        if folded and k.endswith(".scale"):
            base = k[: -len("scale")]
            renamed[base + "weight"] = v
            renamed[base + "running_mean"] = mx.zeros_like(v)
            renamed[base + "running_var"] = mx.full(v.shape, 1 - BN_EPS)
        elif folded and k.endswith(".shift"):
            renamed[k[: -len("shift")] + "bias"] = v
        else:
            renamed[k] = v
    layers = tuple(1 + max((int(m[1]) for k in renamed if (m := re.match(rf"layer{i}\.(\d+)\.", k))), default=-1)
                   for i in range(1, 5))
    kind = "bottleneck" if "layer1.0.conv3.weight" in renamed else "basic"
    w1 = renamed.get("layer1.0.conv1.weight")
    width = int(w1.shape[0]) if w1 is not None and w1.ndim == 4 else 64
    depth = next((d for d, (kd, ls) in DEPTHS.items() if kd == kind and ls == layers), None)
    # Folded scale/shift BN is how the Caffe-converted checkpoints (Yahoo Open-NSFW) arrive; torchvision never stores it.
    caffe = folded
    arch = f"resnet{depth}" if depth else f"resnet ({kind}, blocks {layers})"
    if width != 64:
        arch += f"_1by{64 // width}" if 64 % width == 0 else f"_width{width}"
    model = ResNet(depth or 50, head_classes(renamed), width=width, caffe=caffe, layers=layers, kind=kind)
    notes += load_strict(model, renamed, arch=arch, source=source)
    if caffe:
        notes.append("BatchNorm arrived folded as scale/shift: loaded as weight=scale, bias=shift, mean 0, var 1-eps; "
                     "Caffe layout assumed (stride on the 1x1 conv, max-pool padded bottom/right)")
        pre = Preprocess(size=224, resize=256, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
                         channels="BGR", keep_aspect=False)
    else:
        # Hugging Face ResNets (microsoft/resnet-*) state bicubic (resample 3) in preprocessor_config.json; torchvision's are bilinear.
        pre = timm_preprocess(config) or Preprocess(size=224, resize=256, interpolation="bicubic" if hf else "bilinear", **IMAGENET)
    return LoadedBackbone(model.eval(), pre, arch, source, notes)
