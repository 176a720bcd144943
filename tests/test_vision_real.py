"""Slow: image-classify on real cats_vs_dogs (600 train / 200 val) with real EfficientNet-Lite0 and DINOv2 ViT-S/14 weights.

Phase 1 only (a new head on cached frozen features): validation accuracy must reach 98.5%, what a logistic
regression on frozen Lite0 features reaches (issue 11). The data set has no test split, so `mlxft eval` runs on val.
Run:  .venv/bin/python -m pytest -q -m slow tests/test_vision_real.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlxft.api import train
from tests.conftest import ASSETS

DATA = ASSETS / "data" / "cats_vs_dogs"
LITE0 = ASSETS / "models" / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"
DINOV2 = ASSETS / "models" / "dinov2-vits14"

pytestmark = pytest.mark.slow

# image_size: the backbone pass over 800 images dominates on 2 CPU cores (the head trains on the cache in seconds).
# Lite0 keeps its own 224 (~9 img/s here); DINOv2 at 224 runs ~3 img/s, so 168 (a 12x12 patch grid) keeps it short.
# DINOv2 ViT-S/14 (this asset: tuned inside a saliency model, not facebook/dinov2-small) at 168 px reached 92% on
# frozen features, and a logistic regression on the same cached features 0.91-0.92: the features, not the head,
# stop short of 98.5%. Not run until 224 px / CLS-only pooling are tried (issue 11's note says so).
CASES = [pytest.param(LITE0, 224, id="efficientnet-lite0")]


def head_only_recipe(model, size, out) -> dict:
    return {"kind": "image-classify", "model": str(model), "output_dir": str(out), "name": "run", "seed": 0,
            "data": {"path": str(DATA), "valid_split": "val"},
            "vision": {"image_size": size, "head_epochs": 20, "head_learning_rate": 3e-3, "finetune_epochs": 0},
            "train": {"batch_size": 32, "eval_every": 100, "save_every": 1000, "log_every": 50, "best_metric": "accuracy"}}


@pytest.mark.parametrize("model,size", CASES)
def test_a_head_on_frozen_real_features_tells_cats_from_dogs(model, size, tmp_path):
    if not model.exists() or not DATA.is_dir():
        pytest.skip(f"{model} or {DATA} is absent")
    run = train(head_only_recipe(model, size, tmp_path))
    assert run.ok, run.error
    evals = [e for e in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if e["event"] == "EvalReport"]
    best = max(e["metrics"]["accuracy"] for e in evals)
    assert best >= 0.985, [e["metrics"]["accuracy"] for e in evals]

    # The saved model (keep_best on accuracy), evaluated again from its folder on the val split (there is no test split).
    out = subprocess.run([sys.executable, "-m", "mlxft", "eval", str(run.path), "--split", "val"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads((run.path / "eval" / "val" / "summary.json").read_text())
    print(f"\n{model.name} @{size}: best eval accuracy {best:.4f}; mlxft eval --split val:\n{out.stdout}")
    assert summary["images"] == 200 and summary["accuracy"] >= 0.985
    assert (run.path / "eval" / "val" / "confusion.png").is_file()
