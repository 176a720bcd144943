"""ResNet-50-1by2 in the Caffe layout (Yahoo Open-NSFW) in PyTorch for benchmarks/vision.py, from the asset's safetensors.

Written for the benchmark from the asset README: half widths, the stride on each first block's 1x1 conv, a stem
max-pool padded bottom/right only, BatchNorm stored as a folded scale/shift (loaded exactly as weight=scale,
bias=shift, running mean 0, running var 1-eps). torch only; it never imports mlx.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5
LAYERS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        cout = 4 * mid
        self.conv1 = nn.Conv2d(cin, mid, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.projects = stride != 1 or cin != cout
        if self.projects:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.projects else x))


class CaffeResNet50(nn.Module):
    def __init__(self, width: int = 32, num_classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        cin = 64
        for i, n in enumerate(LAYERS):
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, width * 2 ** i, 2 if j == 0 and i > 0 else 1))
                cin = 4 * width * 2 ** i
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(cin, num_classes)

    @classmethod
    def from_safetensors(cls, path: str) -> "CaffeResNet50":
        from safetensors.torch import load_file

        state = {}
        for name, value in load_file(path).items():
            value = value.float()  # stored as float16
            if name.endswith(".scale"):
                base = name[: -len("scale")]
                state[base + "weight"] = value
                state[base + "running_mean"] = torch.zeros_like(value)
                state[base + "running_var"] = torch.full_like(value, 1 - BN_EPS)
                state[base + "num_batches_tracked"] = torch.tensor(0)
            elif name.endswith(".shift"):
                state[name[: -len("shift")] + "bias"] = value
            else:
                state[name] = value
        model = cls(width=state["layer1.0.conv1.weight"].shape[0], num_classes=state["fc.weight"].shape[0])
        model.load_state_dict(state, strict=True)
        return model

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, stride=2)  # Keras "same": bottom/right only
        for i in range(len(LAYERS)):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))

    def blocks(self) -> list[list[nn.Module]]:
        """mlxft's `ResNet.blocks()`: every bottleneck, input to output (the stem is not a block)."""
        return [[b] for i in range(len(LAYERS)) for b in getattr(self, f"layer{i + 1}")]
