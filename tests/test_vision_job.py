"""The image-classify job on a tiny real ResNet: two phases, the feature cache, class balance, held-out splits,
exact resume after SIGKILL mid phase 2, frozen BatchNorm statistics, and predict / eval of the trained model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from mlxft.api import train
from mlxft.errors import DataError, RecipeError
from mlxft.recipe import recipe_from_dict
from mlxft.vision.classify import FEATURES_FILE, ImageClassifyJob, class_weights
from tests.conftest import train_and_sigkill_at
from tests.test_vision_backbones import resnet_checkpoint, tiny_resnet

MLXFT = [sys.executable, "-m", "mlxft"]
COLOURS = {"red": (200, 50, 50), "blue": (50, 60, 200)}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A tiny ResNet checkpoint folder in torchvision naming, with a 10-class head the job replaces."""
    folder = tmp_path_factory.mktemp("tiny-resnet")
    mx.random.seed(0)
    model = tiny_resnet(kind="basic").eval()
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v) for k, v in resnet_checkpoint(model).items()})
    return folder


def write_images(root: Path, counts: dict[str, dict[str, int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, per_label in counts.items():
        for label, n in per_label.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.normal(COLOURS[label], 45, (36 + i % 5, 44, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{label}-{i}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"), {"train": {"red": 20, "blue": 20}, "val": {"red": 8, "blue": 8}, "test": {"red": 6, "blue": 6}})


def vision_recipe(model, data_path, out, **sections) -> dict:
    recipe = {"kind": "image-classify", "model": str(model), "output_dir": str(out), "seed": 0, "data": {"path": str(data_path)},
              "vision": {"image_size": 32, "head_epochs": 4, "head_learning_rate": 3e-2, "finetune_epochs": 2, "finetune_learning_rate": 1e-3},
              "train": {"batch_size": 8, "eval_every": 5, "save_every": 5, "log_every": 1, "compile": False}}
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def logs(run_dir: Path) -> list[str]:
    return [e["message"] for e in events(run_dir, "LogMessage")]


def test_two_phases_train_the_head_on_cached_features_then_the_last_blocks(backbone, images, tmp_path):
    run = train(vision_recipe(backbone, images, tmp_path))
    assert run.ok, run.error
    evals = events(run.path, "EvalReport")
    assert evals[0]["metrics"]["accuracy"] == pytest.approx(0.5)  # the new head guesses one class for all
    best = min(evals, key=lambda e: e["val_loss"])
    assert best["metrics"]["accuracy"] >= 0.9 and best["metrics"]["macro_f1"] >= 0.9 and best["val_loss"] < evals[0]["val_loss"] - 0.1
    assert {"recall/blue", "recall/red"} <= set(evals[-1]["metrics"])
    text = "\n".join(logs(run.path))
    assert "classifier head replaced: 64 features -> 2 classes (blue, red)" in text
    assert "computing the frozen backbone's features: 40 images x 1 view(s) + 16" in text
    assert "phase 2/2: finetune" in text and "training images per class: blue 20, red 20" in text
    assert (run.path / "cache" / FEATURES_FILE).is_file()
    config = json.loads((run.path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "red"} and config["preprocess"]["size"] == 32
    # BatchNorm statistics are the pretrained ones after both phases (through fit, evaluations and checkpoints)
    from mlx.utils import tree_flatten

    from mlxft.vision.backbones import load_backbone

    pretrained = {k: np.array(v) for k, v in tree_flatten(load_backbone(str(backbone)).model.parameters()) if "running" in k}
    saved = mx.load(str(run.path / "model" / "model.safetensors"))
    assert pretrained and all(np.array_equal(np.array(saved[k]), v) for k, v in pretrained.items())


def test_phase_one_never_runs_the_backbone_and_batchnorm_statistics_stay_frozen(backbone, images, tmp_path, monkeypatch):
    recipe = recipe_from_dict(vision_recipe(backbone, images, tmp_path))
    job = ImageClassifyJob(recipe)
    job.prepare(tmp_path)
    from mlx.utils import tree_flatten

    stats = {k: np.array(v) for k, v in tree_flatten(job.model.parameters()) if "running" in k}
    assert stats, "the tiny ResNet has BatchNorm statistics"
    calls = []
    original = type(job.backbone).features
    monkeypatch.setattr(type(job.backbone), "features", lambda self, x: calls.append(1) or original(self, x))
    from mlxft.train.loop import LoopHooks, Trainer

    trainer = Trainer(job, recipe.train, seed=0, run_dir=tmp_path, hooks=LoopHooks())
    head_steps = job.phases[0].steps
    for _ in range(head_steps):
        trainer.train_step()
    assert calls == [], "phase 1 trains on cached features"
    trainable = {k for k, _ in tree_flatten(job.model.trainable_parameters())}
    assert trainable == {"head.linear.weight", "head.linear.bias"}
    trainer._enter_phase(1)
    trainable = {k for k, _ in tree_flatten(job.model.trainable_parameters())}
    assert trainable and not any("running" in k for k in trainable) and any(k.startswith("layer4") for k in trainable)
    assert not any(k.startswith("layer1") for k in trainable)  # unfreeze: 2 -> the last two blocks only
    trainer.train_step()
    assert calls, "phase 2 runs images through the backbone"
    after = {k: np.array(v) for k, v in tree_flatten(job.model.parameters()) if "running" in k}
    assert all(np.array_equal(stats[k], after[k]) for k in stats)


def test_auto_class_weights_are_inverse_frequency_and_balanced_sampling_evens_classes(backbone, tmp_path):
    w = class_weights([30, 10], "auto")
    assert w.tolist() == pytest.approx([40 / 60, 40 / 20]) and (w * np.array([30, 10])).sum() == pytest.approx(40)
    data = write_images(tmp_path / "imbalanced", {"train": {"red": 30, "blue": 6}, "val": {"red": 4, "blue": 4}})
    job = ImageClassifyJob(recipe_from_dict(vision_recipe(backbone, data, tmp_path, vision={"sampler": "balanced"})))
    drawn = np.concatenate([job.train.labels[b] for e in range(20) for b in job.train_order(e, 8, 0)])
    shares = np.bincount(drawn) / len(drawn)
    assert shares == pytest.approx([0.5, 0.5], abs=0.05)  # blue is 1 in 6 of the images, half of what is drawn
    assert job.train_order(3, 8, 0) == job.train_order(3, 8, 0)  # a pure function of (epoch, seed): exact resume


def test_without_a_valid_split_a_stratified_share_is_held_out_and_said(backbone, tmp_path):
    data = write_images(tmp_path / "train-only", {"train": {"red": 20, "blue": 20}})
    messages = []
    job = ImageClassifyJob(recipe_from_dict(vision_recipe(backbone, data, tmp_path)), emit=lambda e: messages.append(getattr(e, "message", "")))
    assert len(job.valid) == 6 and sorted(np.bincount(job.valid.labels)) == [3, 3]
    assert any("6 of the training images are held out for validation (stratified by label, seed 0" in m for m in messages)


def test_a_label_seen_only_in_validation_is_an_error_naming_the_image(backbone, tmp_path):
    data = write_images(tmp_path / "odd", {"train": {"red": 6, "blue": 6}})
    (data / "val" / "green").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "val" / "green" / "g.png")
    write_images(data, {"val": {"red": 2}})
    with pytest.raises(DataError, match=r"label no training image has:\n  .*green/g.png: label 'green'"):
        ImageClassifyJob(recipe_from_dict(vision_recipe(backbone, data, tmp_path)))


def test_language_model_settings_in_an_image_recipe_are_refused_by_name(backbone, images, tmp_path):
    with pytest.raises(RecipeError, match=r"does not read data.max_seq_length, train.steps"):
        recipe_from_dict(vision_recipe(backbone, images, tmp_path, data={"max_seq_length": 512}, train={"steps": 10}))
    with pytest.raises(RecipeError, match="nothing to train"):
        recipe_from_dict(vision_recipe(backbone, images, tmp_path, vision={"head_epochs": 0, "finetune_epochs": 0}))


def test_a_run_killed_in_phase_two_resumes_to_the_same_metrics(backbone, images, tmp_path):
    sections = dict(vision={"head_epochs": 2, "finetune_epochs": 30}, train={"save_every": 4, "eval_every": None, "keep_checkpoints": 3})
    reference = train(vision_recipe(backbone, images, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    expected = {e["step"]: e for e in events(reference.path, "StepReport")}
    head_steps = 10  # 2 epochs x 5 batches of 8

    run_dir = train_and_sigkill_at(vision_recipe(backbone, images, tmp_path / "killed", **sections), tmp_path / "killed", 16, tmp_path)
    assert json.loads((run_dir / "checkpoints" / "step-000016" / "state.json").read_text())["phase"] == 1  # mid phase 2
    out = subprocess.run(MLXFT + ["train", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "read from features.safetensors" in "\n".join(logs(run_dir))
    got = {e["step"]: e for e in events(run_dir, "StepReport")}
    assert sorted(got) == sorted(expected) and max(got) > head_steps
    for step, e in expected.items():
        assert got[step]["loss"] == pytest.approx(e["loss"], rel=1e-5, abs=1e-6), f"step {step}"


def test_predict_and_eval_of_the_trained_classifier(backbone, images, tmp_path):
    run = train(vision_recipe(backbone, images, tmp_path))
    assert run.ok, run.error
    import mlxft

    clf = mlxft.image_classifier(run.path)
    top = clf(images / "test" / "red" / "red-0.png")
    assert [t["label"] for t in top] == ["red", "blue"] and sum(t["score"] for t in top) == pytest.approx(1.0, abs=1e-5)
    out = subprocess.run(MLXFT + ["predict", str(run.path), str(images / "test"), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 12 and all(set(r["scores"]) == {"red", "blue"} for r in rows)
    right = sum(Path(r["image"]).parent.name == r["label"] for r in rows)
    assert right >= 11
    out = subprocess.run(MLXFT + ["predict", str(run.path), "--file", "texts.csv"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--file is for text classifiers (lm-classify)" in out.stderr and "Traceback" not in out.stderr

    out = subprocess.run(MLXFT + ["eval", str(run.path), "--split", "test", "--threshold-for", "red=0.9"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads((run.path / "eval" / "test" / "summary.json").read_text())
    assert summary["images"] == 12 and summary["accuracy"] == pytest.approx(right / 12)
    assert 0.5 <= summary["auc"]["red"] <= 1.0 and summary["operating_point"]["valid_recall"] >= 0.9
    assert "ROC AUC: red" in out.stdout and (run.path / "eval" / "test" / "confusion.png").is_file()
    with Image.open(run.path / "eval" / "test" / "confusion.png") as im:
        assert im.width > 100 and im.height > 100
    assert len(summary["confusion"]["matrix"][0]) == 2 and "(other)" not in out.stdout  # an argmax is always a label
