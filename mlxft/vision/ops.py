"""Convolution pieces the backbones share: TF "SAME" padding, a depthwise conv as k*k shifted multiply-adds, a 1x1
conv as one matmul, and eval-mode BatchNorm folded into the conv before it.

MLX's CPU `conv2d(groups=C)` is ~30x behind torch for depthwise kernels (see benchmarks/README.md, "vision ops");
the same sum written as k*k strided slices times a per-channel weight is a handful of elementwise ops that the
CPU backend runs at memory speed, forward and backward. A frozen (eval-mode) BatchNorm is an affine map per
channel, so `conv_bn` scales the kernel instead of the activations: exact in the maths, differentiable in every
weight, and one pass over the activations fewer each way (benchmarks/README.md, "vision.py").
"""

from __future__ import annotations

import math
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis: out = ceil(size/stride); the odd pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def pad_same(x: mx.array, kernel: int, stride: int) -> mx.array:
    """`x` (NHWC) zero-padded so that a `kernel`/`stride` conv with no padding gives TF "SAME" output sizes."""
    (t, b), (l, r) = same_padding(x.shape[1], kernel, stride), same_padding(x.shape[2], kernel, stride)
    if t == b == l == r == 0:
        return x
    return mx.pad(x, [(0, 0), (t, b), (l, r), (0, 0)])


def _shifted_sum(x: mx.array, weight: mx.array, stride: int) -> mx.array:
    _, h, w, _ = x.shape
    k = weight.shape[1]
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = None
    for i in range(k):
        for j in range(k):
            window = x[:, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride, :]
            term = window * weight[:, i, j, 0]
            out = term if out is None else out + term
    return out


def _input_grad(cot: mx.array, weight: mx.array, stride: int, h: int, w: int) -> mx.array:
    """d(loss)/dx of the depthwise conv, one stride phase at a time (no strided scatter, no zero-dilated copy).

    Input row s*Y+p gets cot[Y-t] * weight[p+s*t] for every tap t; each phase is a shifted multiply-add at the
    output's resolution, and the s*s phases interleave back by a reshape.
    """
    b, ho, wo, c = cot.shape
    k, s = weight.shape[1], stride
    hp, wp, top = -(-h // s), -(-w // s), (k - 1) // s
    padded = mx.pad(cot, [(0, 0), (top, max(hp - ho, 0)), (top, max(wp - wo, 0)), (0, 0)])
    rows = []
    for pi in range(s):
        row = []
        for pj in range(s):
            acc = mx.zeros((b, hp, wp, c), dtype=cot.dtype)
            for ti in range((k - 1 - pi) // s + 1):
                for tj in range((k - 1 - pj) // s + 1):
                    shifted = padded[:, top - ti: top - ti + hp, top - tj: top - tj + wp, :]
                    acc = acc + shifted * weight[:, pi + s * ti, pj + s * tj, 0]
            row.append(acc)
        rows.append(mx.stack(row, axis=3))  # [b, hp, wp, s, c]
    return mx.stack(rows, axis=2).reshape(b, hp * s, wp * s, c)[:, :h, :w]


@lru_cache(maxsize=None)
def _shifted_op(stride: int):
    """The shifted depthwise conv for one stride, with its own backward (MLX's strided-slice backward scatters slowly)."""

    @mx.custom_function
    def op(x, weight):
        return _shifted_sum(x, weight, stride)

    @op.vjp
    def op_vjp(primals, cot, _output):
        x, weight = primals
        k, (_, h, w, c), (_, ho, wo, _) = weight.shape[1], x.shape, cot.shape
        dx = _input_grad(cot, weight, stride, h, w)
        taps = [(x[:, i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride, :] * cot).sum(axis=(0, 1, 2))
                for i in range(k) for j in range(k)]
        return dx, mx.stack(taps, axis=1).reshape(c, k, k, 1)

    return op


def depthwise_conv2d_shifted(x: mx.array, weight: mx.array, stride: int = 1) -> mx.array:
    """Depthwise conv of an already padded NHWC `x` with `weight` [C, k, k, 1] (MLX layout), no padding.

    Equals `mx.conv2d(x, weight, stride, groups=C)`: the sum over taps (i, j) of the strided window slice times
    weight[:, i, j]; the backward is written out the same way (see `_input_grad`).
    """
    return _shifted_op(int(stride))(x, weight)


class DepthwiseConv2d(nn.Module):
    """A bias-free depthwise conv with TF "SAME" or symmetric padding; `weight` is [C, k, k, 1] like nn.Conv2d's."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, *, same: bool = True, shifted: bool = True):
        super().__init__()
        scale = math.sqrt(1.0 / (kernel * kernel))
        self.weight = mx.random.uniform(-scale, scale, (channels, kernel, kernel, 1))
        self.kernel, self.stride, self.same, self.shifted = kernel, stride, same, shifted

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(x, self.weight)

    def conv(self, x: mx.array, weight: mx.array) -> mx.array:
        """This conv with another kernel of the same shape (e.g. one with a BatchNorm folded in)."""
        if self.same:
            x = pad_same(x, self.kernel, self.stride)
        else:
            p = self.kernel // 2
            x = mx.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
        if self.shifted:
            return depthwise_conv2d_shifted(x, weight, self.stride)
        return mx.conv2d(x, weight, stride=self.stride, groups=x.shape[-1])


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TF "SAME" padding (asymmetric when the stride needs it)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.kernel_size_same = kernel

    def __call__(self, x: mx.array) -> mx.array:
        return super().__call__(pad_same(x, self.kernel_size_same, self.stride[0]))

    def conv(self, x: mx.array, weight: mx.array) -> mx.array:
        return mx.conv2d(pad_same(x, self.kernel_size_same, self.stride[0]), weight, stride=self.stride)


class PointwiseConv2d(nn.Conv2d):
    """A bias-free 1x1 conv as one matmul over the pixels; the weight is nn.Conv2d's [Cout, 1, 1, Cin].

    MLX's CPU conv2d runs some 1x1 shapes several times slower than the same matmul (EfficientNet's
    144 -> 24 projection at 56x56: 78 vs 13 ms of CPU for batch 16).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(x, self.weight)

    def conv(self, x: mx.array, weight: mx.array) -> mx.array:
        s = self.stride[0]
        if s != 1:
            x = x[:, ::s, ::s, :]
        b, h, w, c = x.shape
        return (x.reshape(-1, c) @ weight.reshape(weight.shape[0], c).T).reshape(b, h, w, weight.shape[0])


def folded_batchnorm(bn: nn.BatchNorm) -> tuple[mx.array, mx.array] | None:
    """(scale, shift) with bn(y) == y * scale + shift, for a BatchNorm in eval mode; None in training mode."""
    if bn.training:
        return None
    scale = mx.rsqrt(bn.running_var + bn.eps)
    if "weight" in bn:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    return scale, (shift + bn.bias if "bias" in bn else shift)


def conv_bn(conv: nn.Module, bn: nn.BatchNorm, x: mx.array) -> mx.array:
    """bn(conv(x)); in eval mode one conv whose kernel is scaled by the BatchNorm, plus its shift.

    `conv` is an nn.Conv2d or a conv module of this file (weight [Cout, kh, kw, Cin]). Gradients reach the kernel,
    its bias and the BatchNorm's weight and bias through the scaled kernel; running statistics stay constants.
    """
    folded = folded_batchnorm(bn)
    if folded is None:
        return bn(conv(x))
    scale, shift = folded
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    if "bias" in conv:
        shift = shift + conv.bias * scale
    if isinstance(conv, (DepthwiseConv2d, SameConv2d, PointwiseConv2d)):
        return conv.conv(x, weight) + shift
    return mx.conv2d(x, weight, conv.stride, conv.padding, conv.dilation, conv.groups) + shift
