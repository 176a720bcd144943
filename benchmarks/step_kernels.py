"""The pieces of one SFT training step, MLX against PyTorch on the same shapes (forward + backward, float32, CPU).

Run:   .venv/bin/python benchmarks/step_kernels.py --out /tmp/step-kernels.json
Tiny:  .venv/bin/python benchmarks/step_kernels.py --tokens 64 --reps 3 --out /tmp/k.json

The shapes are SmolLM2-135M-Instruct's (hidden 576, 9 query / 3 key-value heads of 64, MLP 1536, vocabulary 49,152)
at the benchmark's batch (4 sequences of --tokens positions, --trained of them trained). Each kernel is timed as a
gradient of its output's sum with respect to its activations (weights are frozen, as under LoRA), MLX compiled (as mlxft's step is) and eager PyTorch with
--threads threads, median of --reps after a warm-up. The last column says how many times a step runs the kernel, so the
table shows where a step's time goes and which kernels MLX's CPU backend runs slower than PyTorch's.

A second table times single elementwise operations per element on one [--trained, vocabulary] float32 array (the
cross-entropy's shape), each library on one thread (MLX's CPU backend runs them on one anyway): what one core does
per element, apart from how many cores each library uses.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def shapes(args) -> dict:
    B, L = 4, args.tokens
    return dict(B=B, L=L, N=B * L, d=576, h=9, kv=3, hd=64, inter=1536, vocab=49152, T=args.trained, layers=30)


def mlx_kernels(s: dict) -> dict:
    import mlxft  # noqa: F401  (OpenBLAS before mlx.core)
    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(0)
    r = lambda *shape: mx.random.normal(shape) * 0.05  # noqa: E731
    B, L, N, d, h, kv, hd, inter = s["B"], s["L"], s["N"], s["d"], s["h"], s["kv"], s["hd"], s["inter"]
    x, w_sq, w_up, w_down = r(N, d), r(d, d), r(d, inter), r(inter, d)
    g, u = r(N, inter), r(N, inter)
    norm_w = mx.ones((d,))
    q, k, v = r(B, h, L, hd), r(B, kv, L, hd), r(B, kv, L, hd)
    scores = r(B, h, L, L)
    hT, head, targets = r(s["T"], d), r(s["vocab"], d), mx.random.randint(0, s["vocab"], (s["T"],))
    rope = nn.RoPE(hd, base=100000.0)

    def attention(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=hd**-0.5, mask="causal")

    cases = {
        "projection 576x576 (q, o)": (lambda x, w: x @ w, (x, w_sq)),
        "MLP up/gate 576x1536": (lambda x, w: x @ w, (x, w_up)),
        "MLP down 1536x576": (lambda g, w: g @ w, (g, w_down)),
        "SwiGLU silu(g)*u": (lambda g, u: nn.silu(g) * u, (g, u)),
        "RMSNorm": (lambda x, w: mx.fast.rms_norm(x, w, 1e-5), (x, norm_w)),
        "RoPE on queries": (lambda q: rope(q), (q,)),
        "attention (SDPA, causal)": (attention, (q, k, v)),
        "softmax over scores": (lambda a: mx.softmax(a, axis=-1), (scores,)),
        "LM head + cross-entropy (trained rows)": (lambda hT, w: nn.losses.cross_entropy(hT @ w.T, targets), (hT, head)),
    }
    out = {}
    for name, (fn, inputs) in cases.items():
        argnums = [i for i, a in enumerate(inputs) if not any(a is w for w in (w_sq, w_up, w_down, norm_w, head))]
        step = mx.compile(mx.grad(lambda *a, fn=fn: fn(*a).sum(), argnums=argnums))
        out[name] = _time(lambda: mx.eval(step(*inputs)), s["reps"])
    return out


def torch_kernels(s: dict, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    B, L, N, d, h, kv, hd, inter = s["B"], s["L"], s["N"], s["d"], s["h"], s["kv"], s["hd"], s["inter"]
    r = lambda *shape: (torch.randn(*shape) * 0.05).requires_grad_()  # noqa: E731
    x, g, u = r(N, d), r(N, inter), r(N, inter)
    w_sq, w_up, w_down = (t.detach() for t in (r(d, d), r(d, inter), r(inter, d)))  # frozen, as under LoRA
    norm_w = torch.ones(d)
    q, k, v = r(B, h, L, hd), r(B, kv, L, hd), r(B, kv, L, hd)
    scores = r(B, h, L, L)
    hT, head = r(s["T"], d), r(s["vocab"], d).detach()
    targets = torch.randint(0, s["vocab"], (s["T"],))
    inv = 1.0 / (100000.0 ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(L).float()[:, None] * inv[None]
    cos, sin = ang.cos(), ang.sin()

    def rope(q):  # the rotate-half form transformers uses for Llama
        a, b = q[..., : hd // 2], q[..., hd // 2 :]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    def attention(q, k, v):
        return F.scaled_dot_product_attention(q, k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1), is_causal=True)

    cases = {
        "projection 576x576 (q, o)": (lambda x, w: x @ w, (x, w_sq)),
        "MLP up/gate 576x1536": (lambda x, w: x @ w, (x, w_up)),
        "MLP down 1536x576": (lambda g, w: g @ w, (g, w_down)),
        "SwiGLU silu(g)*u": (lambda g, u: F.silu(g) * u, (g, u)),
        "RMSNorm": (lambda x, w: F.rms_norm(x, (d,), w, 1e-5), (x, norm_w)),
        "RoPE on queries": (rope, (q,)),
        "attention (SDPA, causal)": (attention, (q, k, v)),
        "softmax over scores": (lambda a: torch.softmax(a, dim=-1), (scores,)),
        "LM head + cross-entropy (trained rows)": (lambda hT, w: F.cross_entropy(hT @ w.T, targets, reduction="none"), (hT, head)),
    }
    out = {}
    for name, (fn, inputs) in cases.items():
        def step(fn=fn, inputs=inputs):
            for t in inputs:
                if t.requires_grad:
                    t.grad = None
            fn(*inputs).sum().backward()
        out[name] = _time(step, s["reps"])
    return out


# How many times one training step of the 30-block model runs each kernel (forward + backward counted once each).
PER_STEP = {
    "projection 576x576 (q, o)": "2 x 30", "MLP up/gate 576x1536": "2 x 30", "MLP down 1536x576": "1 x 30",
    "SwiGLU silu(g)*u": "1 x 30", "RMSNorm": "2 x 30 + 1", "RoPE on queries": "2 x 30 (q, k)",
    "attention (SDPA, causal)": "1 x 30", "softmax over scores": "inside attention", "LM head + cross-entropy (trained rows)": "1",
}


def _time(fn, reps: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


ELEMENTWISE = ("x * 3", "exp(x)", "2 ** (x * log2 e)", "sigmoid(x)", "softmax(x)")


def elementwise(s: dict, reps: int) -> list[dict]:
    """ns per element of each operation in ELEMENTWISE: MLX (compiled, as mlxft's step runs them), numpy, torch (1 thread)."""
    import mlxft  # noqa: F401  (OpenBLAS before mlx.core)
    import mlx.core as mx
    import numpy as np

    x = mx.random.normal((s["T"], s["vocab"]))
    mx.eval(x)
    xn = np.array(x)
    log2e = 1.4426950408889634
    ops = {"x * 3": lambda z: z * 3.0, "exp(x)": mx.exp, "2 ** (x * log2 e)": lambda z: mx.power(2.0, z * log2e),
           "sigmoid(x)": mx.sigmoid, "softmax(x)": lambda z: mx.softmax(z, axis=-1)}
    np_ops = {"x * 3": lambda: xn * 3.0, "exp(x)": lambda: np.exp(xn), "2 ** (x * log2 e)": lambda: np.exp2(xn * log2e),
              "sigmoid(x)": lambda: 1.0 / (1.0 + np.exp(-xn)), "softmax(x)": None}
    try:
        import torch

        torch.set_num_threads(1)
        xt = torch.from_numpy(xn.copy())
        torch_ops = {"x * 3": lambda: xt * 3.0, "exp(x)": lambda: torch.exp(xt), "2 ** (x * log2 e)": lambda: torch.exp2(xt * log2e),
                     "sigmoid(x)": lambda: torch.sigmoid(xt), "softmax(x)": lambda: torch.softmax(xt, -1)}
    except ImportError:
        torch_ops = {}
    n = xn.size
    rows = []
    for name in ELEMENTWISE:
        fn = mx.compile(ops[name])
        ns = {"mlx": _time(lambda fn=fn: mx.eval(fn(x)), reps) * 1e6 / n}
        if np_ops[name]:
            ns["numpy"] = _time(np_ops[name], reps) * 1e6 / n
        if name in torch_ops:
            ns["torch_1_thread"] = _time(torch_ops[name], reps) * 1e6 / n
        rows.append({"op": name, **{k: round(v, 2) for k, v in ns.items()}})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", type=int, default=200, help="positions per sequence (the benchmark's data averages ~200)")
    p.add_argument("--trained", type=int, default=592, help="trained positions in the batch (the LM head's rows)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)
    s = {**shapes(args), "reps": args.reps}
    mlx_ms = mlx_kernels(s)
    try:
        torch_ms = torch_kernels(s, args.threads)
    except ImportError:
        torch_ms = {}
    print(f"{'kernel (forward + backward)':<40} {'MLX ms':>8} {'torch ms':>9} {'MLX/torch':>10}  per step")
    rows = []
    for name, ms in mlx_ms.items():
        t = torch_ms.get(name)
        ratio = ms / t if t else None
        rows.append({"kernel": name, "mlx_ms": round(ms, 3), "torch_ms": round(t, 3) if t else None, "mlx_over_torch": round(ratio, 2) if ratio else None, "per_step": PER_STEP[name]})
        print(f"{name:<40} {ms:>8.2f} {t if t else float('nan'):>9.2f} {ratio if ratio else float('nan'):>10.2f}  {PER_STEP[name]}")
    elem = elementwise(s, args.reps)
    print(f"\nelementwise on one [{s['T']}, {s['vocab']}] float32 array, ns per element, one thread each:")
    print(f"{'op':<20} {'MLX':>7} {'numpy':>7} {'torch':>7} {'MLX/torch':>10}")
    for r in elem:
        ratio = r["mlx"] / r["torch_1_thread"] if r.get("torch_1_thread") else float("nan")
        print(f"{r['op']:<20} {r['mlx']:>7.2f} {r.get('numpy', float('nan')):>7.2f} {r.get('torch_1_thread', float('nan')):>7.2f} {ratio:>10.2f}")
    from importlib.metadata import version

    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": platform.platform(), "shapes": s, "torch_threads": args.threads,
              "versions": {d: version(d) for d in ("mlx", "torch") if _installed(d)}, "kernels": rows, "elementwise_ns_per_element": elem}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"results: {args.out}")
    return 0


def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
