"""Phase 2 options of image-classify: LoRA on a ViT's attention (fused on save, resumable), layer-wise learning-rate
decay, phase-2 warmup and mixup — each checked against what it promises, on tiny backbones built on the fly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxft.api import train
from mlxft.errors import DataError
from mlxft.lora import LoRALinear
from mlxft.recipe import recipe_from_dict
from mlxft.train.loop import LoopHooks, Trainer
from mlxft.vision.classify import LORA_WEIGHTS, MODEL_WEIGHTS, ImageClassifyJob
from tests.conftest import train_and_sigkill_at
from tests.test_vision_backbones import timm_vit_checkpoint, tiny_vit
from tests.test_vision_job import backbone, events, images, vision_recipe  # noqa: F401 (fixtures)

MLXFT = [sys.executable, "-m", "mlxft"]


@pytest.fixture(scope="module")
def vit_backbone(tmp_path_factory) -> Path:
    """A tiny ViT (2 blocks, 32 wide, patch 4 on a 4x4 grid: 16 px) in timm naming."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    mx.random.seed(0)
    model = tiny_vit().eval()
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v) for k, v in timm_vit_checkpoint(model).items()})
    return folder


def lora_recipe(model, data, out, **sections) -> dict:
    vision = {"image_size": 16, "finetune_method": "lora", "unfreeze": "all", "lora_rank": 4, "finetune_learning_rate": 1e-2, **sections.pop("vision", {})}
    return vision_recipe(model, data, out, vision=vision, **sections)


def flat(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_lora_phase_trains_only_the_updates_and_saves_a_fused_model_that_predicts_the_same(vit_backbone, images, tmp_path):
    recipe = recipe_from_dict(lora_recipe(vit_backbone, images, tmp_path))
    job = ImageClassifyJob(recipe)
    job.prepare(tmp_path)
    trainer = Trainer(job, recipe.train, seed=0, run_dir=tmp_path, hooks=LoopHooks())
    for _ in range(job.phases[0].steps):
        trainer.train_step()
    before = flat(job.model)
    trainer._enter_phase(1)
    trainable = {k for k, _ in tree_flatten(job.model.trainable_parameters())}
    expected = {f"layers.{i}.attn.{p}.lora_{ab}" for i in range(2) for p in ("query", "value") for ab in "ab"}
    assert trainable == expected | {"head.linear.weight", "head.linear.bias"}
    assert job.lora_paths == [f"layers.{i}.attn.{p}" for i in range(2) for p in ("query", "value")]
    for _ in range(3):
        trainer.train_step()
    after = flat(job.model)
    for k, v in before.items():  # every pretrained weight is where it was; the head and the updates moved
        if not k.startswith("head."):
            assert np.array_equal(after[k.replace("attn.query.", "attn.query.linear.").replace("attn.value.", "attn.value.linear.")], v), k
    assert any(np.abs(after[k]).max() > 0 for k in after if k.endswith("lora_b"))

    job.save(tmp_path / "saved")
    saved = mx.load(str(tmp_path / "saved" / MODEL_WEIGHTS))
    assert "layers.0.attn.query.weight" in saved and not any("lora" in k or ".linear." in k for k in saved if not k.startswith("head."))
    assert set(mx.load(str(tmp_path / "saved" / LORA_WEIGHTS))) == expected
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["lora"]["modules"] == job.lora_paths and config["lora"]["fused"] is True

    import mlxft

    clf = mlxft.image_classifier(tmp_path / "saved")  # a plain ViT: no LoRA layers after the fuse
    assert not any(isinstance(m, LoRALinear) for _, m in clf.model.named_modules())
    x = mx.random.uniform(shape=(3, 16, 16, 3))
    job.model.eval()
    assert np.allclose(np.array(clf.model(x)), np.array(job.model(x)), atol=1e-5)

    # The saved folder loads back into a LoRA job exactly (resume), and refuses a weight that is not base + update.
    other = ImageClassifyJob(recipe)
    other.phases[1].setup()
    other.load(tmp_path / "saved")
    assert all(np.array_equal(v, flat(other.model)[k]) for k, v in flat(job.model).items())
    tampered = dict(saved)
    tampered["layers.1.attn.value.weight"] = tampered["layers.1.attn.value.weight"] + 0.1
    mx.save_safetensors(str(tmp_path / "saved" / MODEL_WEIGHTS), tampered)
    with pytest.raises(Exception, match="layers.1.attn.value.weight is not this backbone's weight plus its LoRA update"):
        other.load(tmp_path / "saved")


def test_a_lora_run_killed_in_phase_two_resumes_to_the_same_losses(vit_backbone, images, tmp_path):
    sections = dict(vision={"head_epochs": 1, "finetune_epochs": 4}, train={"save_every": 3, "eval_every": None, "keep_checkpoints": 3})
    reference = train(lora_recipe(vit_backbone, images, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    expected = {e["step"]: e["loss"] for e in events(reference.path, "StepReport")}
    run_dir = train_and_sigkill_at(lora_recipe(vit_backbone, images, tmp_path / "killed", **sections), tmp_path / "killed", 9, tmp_path)
    assert json.loads((run_dir / "checkpoints" / "step-000009" / "state.json").read_text())["phase"] == 1
    out = subprocess.run(MLXFT + ["train", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = {e["step"]: e["loss"] for e in events(run_dir, "StepReport")}
    assert sorted(got) == sorted(expected) and max(got) == 25
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"step {step}"


def test_lora_on_a_convolutional_backbone_is_refused_with_what_to_do(backbone, images, tmp_path):  # noqa: F811
    with pytest.raises(DataError, match=r"finetune_method lora: no query/value linear .* use vision.finetune_method: unfreeze|have no linear layers"):
        ImageClassifyJob(recipe_from_dict(vision_recipe(backbone, images, tmp_path, vision={"finetune_method": "lora"})))


def phase_two_step(model, images, tmp_path, **vision) -> tuple[dict, dict]:
    """The parameters before and after one phase-2 SGD step (no clipping) from the same start."""
    recipe = recipe_from_dict(vision_recipe(model, images, tmp_path, vision={"head_epochs": 0, "unfreeze": "all", "augment": False, **vision},
                                            train={"optimizer": "sgd", "max_grad_norm": None, "schedule": "constant"}))
    job = ImageClassifyJob(recipe)
    trainer = Trainer(job, recipe.train, seed=0, run_dir=tmp_path, hooks=LoopHooks())
    before = flat(job.model)
    trainer.train_step()
    return before, flat(job.model)


def test_layer_decay_scales_each_blocks_step_by_decay_to_its_depth(backbone, images, tmp_path):  # noqa: F811
    b0, a0 = phase_two_step(backbone, images, tmp_path / "plain")
    b1, a1 = phase_two_step(backbone, images, tmp_path / "decay", layer_decay=0.5)
    assert all(np.array_equal(b0[k], b1[k]) for k in b0)
    # The tiny ResNet: 4 stages of 1 block (layer1.0 .. layer4.0), a stem (conv1, bn1) below them, the head above.
    depth = {"head.": 0, "layer4.": 0, "layer3.": 1, "layer2.": 2, "layer1.": 3, "conv1.": 4, "bn1.": 4}
    checked = 0
    for k in b0:
        if "running" in k or not np.any(a0[k] != b0[k]):
            continue
        scale = next(0.5 ** d for prefix, d in depth.items() if k.startswith(prefix))
        assert np.allclose(a1[k] - b1[k], scale * (a0[k] - b0[k]), rtol=1e-4, atol=1e-7), k
        checked += 1
    assert checked >= 8


def test_phase_two_warms_up_at_its_own_start(backbone, images, tmp_path):  # noqa: F811
    run = train(vision_recipe(backbone, images, tmp_path, vision={"head_epochs": 1, "finetune_epochs": 2, "finetune_warmup_steps": 4}))
    assert run.ok, run.error
    lrs = {e["step"]: e["learning_rate"] for e in events(run.path, "StepReport")}
    head_steps = 5
    assert lrs[1] == pytest.approx(3e-2, rel=0.05)  # phase 1: no warmup (train.warmup_steps 0)
    warm = [lrs[head_steps + i] for i in range(1, 5)]
    assert warm == sorted(warm) and warm[-1] < 1e-3 and lrs[head_steps + 6] == pytest.approx(1e-3, rel=0.2)


def test_mixup_blends_pairs_reproducibly_and_weights_both_labels(backbone, images, tmp_path):  # noqa: F811
    recipe = recipe_from_dict(vision_recipe(backbone, images, tmp_path, vision={"mixup": 0.4}))
    job = ImageClassifyJob(recipe)
    job.prepare(tmp_path)
    idx = job.train_order(0, 8, 0)[0]
    first, again = job.train_batch(idx, 0), job.train_batch(idx, 0)
    assert len(first.arrays) == 4 and all(np.array_equal(np.array(a), np.array(b)) for a, b in zip(first.arrays, again.arrays))
    x, y, y2, lam = first.arrays
    assert 0 <= lam.item() <= 1 and sorted(np.array(y).tolist()) == sorted(np.array(y2).tolist())  # y2: the same labels, paired anew
    plain = job.features["train_0"][idx]
    assert not np.allclose(np.array(x), plain)
    # lam = 1 is no mixing at all: the loss equals the unmixed one.
    one, _, _ = job.loss(job.model, mx.array(plain), y, y2, mx.array(1.0))
    unmixed, _, _ = job.loss(job.model, mx.array(plain), y)
    assert one.item() == pytest.approx(unmixed.item(), rel=1e-6)
    # Mixed loss = the class-weighted blend of both labels' cross-entropies.
    import mlx.nn as nn

    logits = job.model.head(x)
    w = mx.array(job.weights)
    ce1, ce2 = nn.losses.cross_entropy(logits, y), nn.losses.cross_entropy(logits, y2)
    want = ((lam * w[y] * ce1 + (1 - lam) * w[y2] * ce2).sum() / (lam * w[y] + (1 - lam) * w[y2]).sum()).item()
    assert job.loss(job.model, x, y, y2, lam)[0].item() == pytest.approx(want, rel=1e-5)
    run = train(vision_recipe(backbone, images, tmp_path / "run", vision={"mixup": 0.4}))
    assert run.ok, run.error
