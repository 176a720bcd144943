"""Peak memory of image-classify's phase 2 for every backbone in models/vision: the numbers `mlxft models` shows.

Each measurement is its own process: the catalogue entry's architecture with random weights (nothing downloaded),
the real ImageClassifyJob and Trainer (compiled step, AdamW, float32, frozen BatchNorm statistics) on a few
synthetic images, two optimizer steps of phase 2, then mx.get_peak_memory(). The process's max RSS is printed too:
the catalogue's verdict adds mlxft's runtime allowance (512 MiB) to the MLX peak, and RSS shows what that covers.

Run:  .venv/bin/python benchmarks/vision_memory.py                 (every entry, both unfreeze settings; ~15 min on 2 cores)
      .venv/bin/python benchmarks/vision_memory.py --write         (and write the peaks into models/vision/*.yaml)
Try:  .venv/bin/python benchmarks/vision_memory.py --key resnet18 --unfreeze 2
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNFREEZE = ("2", "all")
STEPS = 2  # the first compiles; the peak is the larger of the two


def write_images(folder: Path, per_class: int, side: int = 256) -> None:
    """Two classes of random-noise PNGs in <split>/<label>/ folders (the job decodes and crops them like photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("valid", 2)):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / label / f"{i}.png")


def measure(key: str, unfreeze: str, batch_size: int, image_size: int | None) -> dict:
    """One phase-2 measurement in this process: {peak_bytes, max_rss_bytes, seconds_per_step, ...}."""
    from mlxft.recipe import recipe_from_dict  # mlxft before mlx.core: it loads the fast BLAS

    import mlx.core as mx
    from mlxft.train.loop import LoopHooks, Trainer
    from mlxft.vision.backbones import LoadedBackbone
    from mlxft.vision.catalogue import build_architecture, find_backbone
    from mlxft.vision.classify import ImageClassifyJob

    entry = find_backbone(key)
    if entry is None:
        raise SystemExit(f"{key}: not in the vision catalogue")
    size = image_size or entry.finetune_memory.image_size

    def random_backbone(spec: str) -> LoadedBackbone:
        model = build_architecture(entry.architecture, entry.head_classes)
        mx.eval(model.parameters())
        return LoadedBackbone(model.eval(), entry.preprocess(), entry.architecture, "random weights of the catalogue's shape")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "images"
        write_images(data, per_class=(batch_size + 1) // 2)
        recipe = recipe_from_dict({
            "kind": "image-classify", "model": key, "data": {"path": str(data)}, "output_dir": tmp,
            "vision": {"head_epochs": 0, "finetune_epochs": STEPS, "unfreeze": unfreeze if unfreeze == "all" else int(unfreeze),
                       "image_size": size},
            "train": {"batch_size": batch_size, "eval_every": 1000, "save_every": 1000},
        }, source="benchmark")
        job = ImageClassifyJob(recipe, load_backbone=random_backbone)
        trainer = Trainer(job, recipe.train, seed=0, run_dir=Path(tmp) / "run", hooks=LoopHooks())
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        for _ in range(STEPS):
            trainer.train_step()
        seconds = (time.perf_counter() - t0) / STEPS
        peak = mx.get_peak_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"key": key, "architecture": entry.architecture, "unfreeze": unfreeze, "batch_size": batch_size, "image_size": size,
            "peak_bytes": int(peak), "max_rss_bytes": int(rss), "seconds_per_step": round(seconds, 2),
            "measured_on": measured_on()}


def measured_on() -> str:
    import mlx.core as mx

    device = "GPU" if mx.default_device() == mx.gpu else "CPU"
    return f"MLX {mx.__version__} {device} ({platform.system()} {platform.machine()})"


def measure_in_child(key: str, unfreeze: str, batch_size: int, image_size: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--key", key, "--unfreeze", unfreeze, "--batch", str(batch_size)]
    cmd += ["--size", str(image_size)] if image_size else []
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{key} (unfreeze {unfreeze}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_numbers(results: list[dict]) -> list[Path]:
    """Put each entry's measured peaks (MB, rounded up) and `measured_on` into its YAML block, comments kept."""
    from mlxft.vision.catalogue import MB, vision_folder

    by_key: dict[str, dict] = {}
    for r in results:
        by_key.setdefault(r["key"], {})[r["unfreeze"]] = r
    changed = []
    for path in sorted(vision_folder().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        new = text
        for key, runs in by_key.items():
            block = re.search(rf"^{re.escape(key)}:\n(?:(?:[ #].*)?\n)*", new, flags=re.M)
            if block is None:
                continue
            body = block.group(0)
            for unfreeze, r in runs.items():
                body = re.sub(rf"(unfreeze_{unfreeze}_mb: )\S+", rf"\g<1>{-(-r['peak_bytes'] // MB)}", body)
                body = re.sub(r"(    batch_size: )\S+", rf"\g<1>{r['batch_size']}", body)
                body = re.sub(r"(    image_size: )\S+", rf"\g<1>{r['image_size']}", body)
                body = re.sub(r"(measured_on: ).*", rf"\g<1>{r['measured_on']}", body)
            new = new[: block.start()] + body + new[block.end():]
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--key", action="append", help="catalogue key(s) to measure (default: every entry)")
    ap.add_argument("--unfreeze", choices=UNFREEZE, action="append", help="default: both")
    ap.add_argument("--batch", type=int, default=None, help="default: the entry's stated batch size")
    ap.add_argument("--size", type=int, default=None, help="default: the entry's stated image size")
    ap.add_argument("--write", action="store_true", help="write the measured peaks into models/vision/*.yaml")
    ap.add_argument("--out", help="also save the results as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.key[0], args.unfreeze[0], args.batch, args.size)))
        return

    from mlxft.vision.catalogue import MB, load_vision_catalogue

    entries = [e for e in load_vision_catalogue() if not args.key or e.key in args.key]
    results = []
    print(f"{'backbone':20s} {'arch':26s} {'unfreeze':>8s} {'batch x px':>11s} {'MLX peak':>10s} {'catalogue':>10s} {'max RSS':>9s} {'s/step':>7s}")
    for entry in entries:
        stated = entry.finetune_memory
        for unfreeze in args.unfreeze or UNFREEZE:
            r = measure_in_child(entry.key, unfreeze, args.batch or stated.batch_size, args.size)
            results.append(r)
            listed = getattr(stated, f"unfreeze_{unfreeze}_mb")
            print(f"{entry.key:20s} {entry.architecture:26s} {unfreeze:>8s} {r['batch_size']:>5d} x {r['image_size']:<3d} "
                  f"{r['peak_bytes'] / MB:>7.0f} MB {listed:>7d} MB {r['max_rss_bytes'] / MB:>6.0f} MB {r['seconds_per_step']:>7.1f}",
                  flush=True)
    print(f"measured on {results[0]['measured_on'] if results else '-'}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    if args.write:
        for path in write_numbers(results):
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
