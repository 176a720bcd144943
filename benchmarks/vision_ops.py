"""Depthwise conv on MLX: mx.conv2d(groups=C) against k*k shifted multiply-adds (mlxft.vision.ops), forward and backward.

Run:  .venv/bin/python benchmarks/vision_ops.py            (about 1 min on 2 cores)
Try:  .venv/bin/python benchmarks/vision_ops.py --repeats 3 --out /tmp/vision-ops.json
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx

import mlx.nn as nn

from mlxft.vision.efficientnet import EfficientNetLite
from mlxft.vision.ops import depthwise_conv2d_shifted

# (name, batch, size, channels, kernel, stride): the issue's two depthwise rows, plus EfficientNet-Lite0's stride-2 ones.
SHAPES = [
    ("3x3 depthwise 144 @56", 8, 56, 144, 3, 1),
    ("5x5 depthwise 240 @28", 8, 28, 240, 5, 1),
    ("3x3 depthwise s2 96 @112", 8, 112, 96, 3, 2),
    ("5x5 depthwise s2 144 @56", 8, 56, 144, 5, 2),
]


def grouped(x, w, stride):
    return mx.conv2d(x, w, stride=stride, groups=x.shape[-1])


def timed(fn, repeats: int) -> float:
    mx.eval(fn())  # warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(fn())
        best = min(best, time.perf_counter() - t)
    return best * 1000


def measure(op, x, w, stride, repeats):
    fwd = timed(lambda: op(x, w, stride), repeats)
    grad = mx.grad(lambda x, w: op(x, w, stride).sum(), argnums=(0, 1))
    bwd = timed(lambda: grad(x, w), repeats)
    return fwd, bwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    rows = []
    print(f"{'op':28s} {'conv2d fwd/fwd+bwd ms':>24s} {'shifted fwd/fwd+bwd ms':>24s}  max|diff|")
    for name, b, s, c, k, stride in SHAPES:
        pad = k - 1  # any padding works for timing; the shifted form takes an already padded input
        x = mx.random.normal((b, s + pad, s + pad, c))
        w = mx.random.normal((c, k, k, 1))
        diff = mx.abs(grouped(x, w, stride) - depthwise_conv2d_shifted(x, w, stride)).max().item()
        g = measure(grouped, x, w, stride, args.repeats)
        sh = measure(depthwise_conv2d_shifted, x, w, stride, args.repeats)
        rows.append({"op": name, "conv2d_ms": g, "shifted_ms": sh, "max_abs_diff": diff})
        print(f"{name:28s} {g[0]:10.1f} / {g[1]:10.1f}   {sh[0]:10.1f} / {sh[1]:10.1f}   {diff:.1e}")
    print(f"\nEfficientNet-Lite0, batch {args.batch} at {args.size} px (random weights), forward (eval) / forward+backward (train):")
    x = mx.random.normal((args.batch, args.size, args.size, 3))
    y = mx.zeros((args.batch,), dtype=mx.int32)
    for label, shifted, compiled in [("mx.conv2d(groups=C)", False, False), ("shifted", True, False),
                                     ("mx.conv2d(groups=C), compiled", False, True), ("shifted, compiled", True, True)]:
        mx.random.seed(0)
        model = EfficientNetLite("lite0", 1000, shifted=shifted)
        mx.eval(model.parameters())
        loss = lambda m, x, y: nn.losses.cross_entropy(m(x), y).mean()
        grad = nn.value_and_grad(model, loss)
        fwd = (lambda x: model(x)) if not compiled else mx.compile(lambda x: model(x), inputs=model.state, outputs=model.state)
        step = (lambda x, y: grad(model, x, y)) if not compiled else mx.compile(lambda x, y: grad(model, x, y), inputs=model.state, outputs=model.state)
        model.eval()
        f_ms = timed(lambda: fwd(x), max(1, args.repeats // 2))
        model.train()
        b_ms = timed(lambda: step(x, y), max(1, args.repeats // 2))
        rows.append({"op": f"efficientnet_lite0 b{args.batch}@{args.size} {label}", "ms": (f_ms, b_ms)})
        print(f"  {label:34s} {f_ms:8.0f} / {b_ms:8.0f} ms   ({args.batch / (b_ms / 1000):.1f} train images/s)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"mlx": mx.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
