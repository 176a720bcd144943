"""Tiny image-classify runs made on the fly for evaluation tests: a weak and a stronger classifier of the same
shaded images (so they differ on some test images), one trained on other images, one on three labels."""

from __future__ import annotations

from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before mlx.core)
import mlx.core as mx
import numpy as np
from PIL import Image

from tests.test_vision_backbones import resnet_checkpoint, tiny_resnet
from tests.test_vision_job import vision_recipe

# Each image's colour is its label's, shifted at random: some reds look blue, so a classifier makes mistakes.
SHADES = {"red": (170, 90, 90), "blue": (90, 90, 170), "green": (90, 170, 90)}
COUNTS = {"train": 20, "val": 6, "test": 8}


def write_shaded_images(root: Path, labels=("red", "blue"), seed: int = 0, shift: float = 60.0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in COUNTS.items():
        for label in labels:
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = np.array(SHADES[label]) + rng.normal(0, shift, 3)
                pixels = np.clip(rng.normal(colour, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{label}-{i}.png")
    return root


def tiny_backbone(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    model = tiny_resnet(kind="basic").eval()
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v) for k, v in resnet_checkpoint(model).items()})
    return folder


def train_image_runs(root: Path, which=("weak", "strong", "other-data", "three-labels")) -> dict[str, Path]:
    """Run directories under root/runs by name, and the image folders under "images" / "other-images" / "rgb-images"."""
    from mlxft.api import train

    backbone = tiny_backbone(root / "backbone")
    images = write_shaded_images(root / "images")
    plans = {
        "weak": (images, {"head_epochs": 1, "finetune_epochs": 0}),
        "strong": (images, {"head_epochs": 6, "finetune_epochs": 0}),
        "other-data": (lambda: write_shaded_images(root / "other-images", seed=1), {"head_epochs": 2, "finetune_epochs": 0}),
        "three-labels": (lambda: write_shaded_images(root / "rgb-images", ("red", "blue", "green")), {"head_epochs": 2, "finetune_epochs": 0}),
    }
    out = {"images": images, "root": root}
    for name in which:
        data, vision = plans[name]
        data = data() if callable(data) else data
        run = train(vision_recipe(backbone, data, root / "runs", vision=vision, name=name))
        assert run.ok, run.error
        out[name] = run.path
    return out
