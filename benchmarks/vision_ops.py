"""Depthwise conv on MLX: mx.conv2d(groups=C) against k*k shifted multiply-adds (mlxft.vision.ops), forward and backward.

Run:  .venv/bin/python benchmarks/vision_ops.py            (about 1 min on 2 cores)
Try:  .venv/bin/python benchmarks/vision_ops.py --repeats 3 --out /tmp/vision-ops.json
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx

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
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"mlx": mx.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
