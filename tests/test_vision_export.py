"""timm and transformers exports of image-classify runs: read back by mlxft's own loaders, by timm and by transformers
(same logits as the run's classifier on the same preprocessed input), unfolded BatchNorm, and every refusal with its reason."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from PIL import Image

from mlxft.errors import ModelError
from mlxft.export import ExportOptions, export_run
from mlxft.export import vision_folder as vf
from mlxft.vision import efficientnet, vit
from mlxft.vision.backbones import load_backbone
from mlxft.vision.classify import ClassifierHead
from mlxft.vision.images import normalise
from mlxft.vision.predict import load_classifier
from tests.test_vision_backbones import lukemelas_checkpoint, timm_vit_checkpoint, tiny_resnet
from tests.test_vision_job import backbone, images, vision_recipe  # noqa: F401 (fixtures)

MLXFT = [sys.executable, "-m", "mlxft"]
ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
TOL = 1e-4  # max |logit difference| relative to the logits' scale (float32 both sides)


# ---------------------------------------------------------------- sources and runs

def randomize_statistics(model, seed: int = 5) -> None:
    """BatchNorm running statistics away from 0/1, so a mix-up of mean, var, weight or bias changes the logits."""
    rng = np.random.default_rng(seed)
    stats = [(k, mx.array(rng.uniform(0.5, 2.0, v.shape).astype(np.float32) if k.endswith("running_var") else
                         rng.normal(0, 0.2, v.shape).astype(np.float32)))
             for k, v in tree_flatten(model.parameters()) if k.endswith(("running_mean", "running_var"))]
    model.load_weights(stats, strict=False)


def save_source(folder: Path, tensors: dict, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v) for k, v in tensors.items()})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def tiny_vit_model(**kw):
    return vit.VisionTransformer(dim=32, depth=2, heads=2, patch=4, grid=4, num_classes=None, **kw).eval()


@pytest.fixture(scope="module")
def sources(tmp_path_factory, backbone):
    """Tiny pretrained-backbone folders in the layouts users bring: torchvision, timm, HF Dinov2Model, lukemelas."""
    root = tmp_path_factory.mktemp("sources")
    mx.random.seed(0)
    vit_ls = tiny_vit_model(layer_scale=True)
    vit_plain = tiny_vit_model()
    dino = tiny_vit_model(layer_scale=True, pool="token+avg")
    lite = efficientnet.EfficientNetLite("lite0", num_classes=10).eval()
    randomize_statistics(lite)
    dino_names = {vf.hf_vit_name(k, "dinov2"): v for k, v in vf.torch_tensors(dino).items()}
    return {
        "resnet": backbone,  # tests/test_vision_job.py: a tiny basic ResNet (width 8) in torchvision names
        "vit": save_source(root / "vit", timm_vit_checkpoint(vit_ls), {"num_heads": 2}),
        "vit-plain": save_source(root / "vit-plain", timm_vit_checkpoint(vit_plain), {"num_heads": 2}),
        "dinov2": save_source(root / "dinov2", dino_names, {"model_type": "dinov2", "num_attention_heads": 2, "layer_norm_eps": 1e-6}),
        "lite0": save_source(root / "lite0", lukemelas_checkpoint(lite)),
    }


# A short run per source: the head on cached features, then the last blocks on images (a ViT: LoRA on attention, fused
# into the saved model), so the backbone's weights in the export are trained ones, not the source's.
RUN_SETTINGS = {
    "resnet": {}, "vit-plain": {}, "dinov2": {}, "lite0": {},
    "vit": {"finetune_method": "lora", "unfreeze": "all", "lora_rank": 4, "finetune_learning_rate": 1e-2},
}


@pytest.fixture(scope="module")
def runs(sources, images, tmp_path_factory):
    """name -> a finished image-classify run (trained on demand, once per module)."""
    from mlxft.api import train

    done = {}

    def get(name: str, source: Path | None = None) -> Path:
        if name not in done:
            vision = {"head_epochs": 1, "finetune_epochs": 1, "finetune_learning_rate": 3e-3, **RUN_SETTINGS.get(name, {})}
            recipe = vision_recipe(source or sources[name], images, tmp_path_factory.mktemp(f"run-{name}"), vision=vision,
                                   train={"eval_every": None})
            run = train(recipe)
            assert run.ok, run.error
            done[name] = run.path
        return done[name]

    return get


def run_inputs(run: Path, images_root: Path) -> tuple[object, np.ndarray]:
    """The run's classifier and a batch of test images preprocessed exactly as mlxft predicts them (NHWC float32)."""
    clf = load_classifier(run)
    p = clf.config["preprocess"]
    paths = sorted((images_root / "test").rglob("*.png"))[:6]
    x = normalise(np.stack([clf.pixels(path) for path in paths]), p["mean"], p["std"], p["channels"]).astype(np.float32)
    return clf, x


def assert_same_logits(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    print(f"max |logit diff| {diff:.2e} at logit scale {scale:.3g}")  # the numbers the export notes quote (pytest -s)
    assert diff <= TOL * scale, f"max |diff| {diff:.3g} at scale {scale:.3g}"


def backbone_changed(run: Path, source: Path) -> bool:
    """Whether training moved any non-head weight of the backbone (else an export of the source would pass too)."""
    trained = mx.load(str(run / "model" / "model.safetensors"))
    original = dict(tree_flatten(load_backbone(str(source)).model.parameters()))
    return any(k in trained and not k.startswith("head") and not np.array_equal(np.array(trained[k]), np.array(v))
               for k, v in original.items())


# ---------------------------------------------------------------- read back by mlxft (no torch needed)

@pytest.mark.parametrize("name, fmt", [("resnet", "timm"), ("resnet", "transformers"), ("vit", "timm"), ("vit-plain", "transformers"),
                                       ("dinov2", "transformers")])
def test_an_export_read_back_by_mlxft_gives_the_run_s_logits(runs, sources, images, name, fmt):
    run = runs(name)
    assert backbone_changed(run, sources[name]), "the run must have trained the backbone for this test to mean anything"
    result = export_run(run, fmt)
    assert result.folder == run / "exports" / fmt and {"config.json", "model.safetensors"} <= set(result.files)
    clf, x = run_inputs(run, images)
    loaded = load_backbone(str(result.folder))
    assert loaded.model.head.weight.shape[0] == 2  # the run's two classes, not the source's ten
    assert_same_logits(np.array(loaded.model(mx.array(x))), np.array(clf.model(mx.array(x))))
    config = json.loads((result.folder / "config.json").read_text())
    if fmt == "timm":
        assert config["label_names"] == ["blue", "red"] and config["num_classes"] == 2
        p = clf.config["preprocess"]  # timm's pretrained_cfg states the run's preprocessing, and mlxft reads it back the same
        assert (loaded.preprocess.size, loaded.preprocess.resize, loaded.preprocess.interpolation) == (p["size"], p["resize"], p["interpolation"])
        assert np.allclose(loaded.preprocess.mean, p["mean"]) and np.allclose(loaded.preprocess.std, p["std"])
    else:
        assert config["id2label"] == {"0": "blue", "1": "red"} and config["label2id"] == {"blue": 0, "red": 1}
        assert (result.folder / "preprocessor_config.json").is_file()


def test_a_vit_trained_at_another_size_is_exported_with_its_position_grid_at_the_run_s_size(runs):
    run = runs("vit")  # the source's grid is 4x4 (16 px); the run trains at 32 px: 8x8
    folder = export_run(run, "timm", options=ExportOptions()).folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["img_size"] == 32 and config["pretrained_cfg"]["fixed_input_size"] is True
    assert mx.load(str(folder / "model.safetensors"))["pos_embed"].shape == (1, 1 + 8 * 8, 32)


def test_efficientnet_lite_goes_to_timm_names_with_batchnorm_unfolded(runs, sources):
    run = runs("lite0")
    folder = export_run(run, "timm").folder
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and "model_args" not in config
    exported = mx.load(str(folder / "model.safetensors"))
    trained = mx.load(str(run / "model" / "model.safetensors"))
    assert exported["conv_stem.weight"].shape == (32, 3, 3, 3) and exported["blocks.0.0.conv_dw.weight"].shape == (32, 1, 3, 3)
    assert exported["blocks.1.0.conv_pw.weight"].shape == (96, 16, 1, 1) and exported["classifier.weight"].shape == (2, 1280)
    # 16 blocks: the first depthwise-separable (2 convs, 2 BatchNorms: 12 tensors), 15 inverted residuals (3 + 3: 18 each)
    assert len([k for k in exported if k.startswith("blocks.")]) == 12 + 15 * 18  # and a num_batches_tracked per BatchNorm
    # BatchNorm as trained: scale, shift and running statistics are their own tensors, equal to the run's, not folded in
    for ours, timm in [("layers.5.bn1", "blocks.3.0.bn2"), ("layers.0.bn2", "blocks.0.0.bn2"), ("top.bn", "bn2"), ("stem.bn", "bn1")]:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            assert np.array_equal(np.array(exported[f"{timm}.{leaf}"]), np.array(trained[f"{ours}.{leaf}"])), f"{timm}.{leaf}"
    assert np.array_equal(np.array(exported["blocks.6.0.conv_dw.weight"]), np.array(trained["layers.15.depthwise_conv.weight"]).transpose(0, 3, 1, 2))


def test_float16_is_written_on_request_and_other_options_are_refused(runs):
    run = runs("resnet")
    folder = export_run(run, "transformers", out=run / "exports" / "half", options=ExportOptions(dtype="float16")).folder
    weights = mx.load(str(folder / "model.safetensors"))
    assert {v.dtype for v in weights.values() if mx.issubdtype(v.dtype, mx.floating)} == {mx.float16}
    for options, message in [(ExportOptions(quantize=4), "--quantize does not apply"), (ExportOptions(base="x"), "--base does not apply"),
                             (ExportOptions(dtype="q8_0"), "--dtype q8_0")]:
        with pytest.raises(ModelError, match=message):
            export_run(run, "timm", out=run / "exports" / "refused", options=options)
        assert not (run / "exports" / "refused").exists()  # a refused export leaves nothing behind


def test_the_cli_exports_and_says_how_to_load_it(runs):
    run = runs("resnet")
    out = subprocess.run(MLXFT + ["export", str(run), "--format", "timm", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["files"] == ["config.json", "model.safetensors"] and any("local-dir:" in n for n in result["notes"])
    assert any("resnet18" in n and '"channels": [8, 16, 32, 64]' in n for n in result["notes"])
    out = subprocess.run(MLXFT + ["export", str(run), "--format", "gguf"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "transformers" in out.stderr


# ---------------------------------------------------------------- what cannot be expressed is refused, with the reason

def classifier(model, preprocess: dict | None = None):
    model.head = ClassifierHead(model.num_features, 2, 0.0)
    mx.eval(model.parameters())
    config = {"num_classes": 2, "id2label": {"0": "a", "1": "b"},
              "preprocess": preprocess or {"size": 32, "resize": 36, "mean": [127.0] * 3, "std": [128.0] * 3, "interpolation": "bicubic",
                                           "channels": "RGB", "keep_aspect": True}}
    return model.eval(), config


@pytest.mark.parametrize("make, target, message, hint", [
    (lambda: tiny_resnet(caffe=True), "timm", "Caffe-style", "--format mlx"),
    (lambda: tiny_resnet(caffe=True), "transformers", "Caffe-style", "--format mlx"),
    (lambda: efficientnet.EfficientNetLite("lite0", num_classes=None), "transformers", "no EfficientNet-Lite", "--format timm"),
    (lambda: efficientnet.EfficientNetLite(num_classes=None, table=[(3, 1, 1, 32, 16), (3, 2, 6, 16, 24)]), "timm", "block table", "mlx"),
    (lambda: tiny_vit_model(layer_scale=True, pool="token+avg"), "timm", "does not pool", "--format transformers"),
    (lambda: tiny_vit_model(pool="avg"), "transformers", "mean-pooled", "--format timm"),
    (lambda: tiny_vit_model(layer_scale=True), "transformers", "layer scale", "--format timm"),
])
def test_a_layout_that_cannot_express_the_model_is_refused_with_what_to_use(make, target, message, hint):
    model, config = classifier(make())
    with pytest.raises(ModelError, match=message) as info:
        (vf.to_timm if target == "timm" else vf.to_transformers)(model, config)
    assert hint in (info.value.hint or "")


def test_bgr_preprocessing_is_refused_because_neither_library_states_it():
    model, config = classifier(tiny_resnet(kind="basic"))
    config["preprocess"]["channels"] = "BGR"
    with pytest.raises(ModelError, match="BGR input"):
        vf.to_timm(model, config)


def test_timm_crop_pct_reads_back_to_the_same_resize():
    import math

    for size, resize in [(32, 36), (224, 256), (224, 235), (56, 64), (518, 592), (299, 341)]:
        assert math.floor(size / vf.timm_crop_pct(size, resize)) == resize


# ---------------------------------------------------------------- the real libraries (torch, timm, transformers)

def import_or_skip(module: str, *names: str):
    """The module (or its attributes `names`), or a skip when it is absent or broken: a torchvision wheel built for another
    torch raises RuntimeError when timm imports it, and transformers' vision classes then fail on first access."""
    try:
        found = importlib.import_module(module)
        return found if not names else (getattr(found, names[0]) if len(names) == 1 else tuple(getattr(found, n) for n in names))
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"{module} is not importable here ({type(exc).__name__}: {str(exc)[:120]})")


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    torch = import_or_skip("torch")
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    return (out.logits if hasattr(out, "logits") else out).numpy()


def square_image(path: Path, side: int) -> Path:
    """A square test image at the resize side: every library resizes it to itself, so the crops must agree exactly."""
    pixels = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def library_source(tmp_path_factory):
    """name -> a backbone folder written by the library itself: timm's save_for_hf ResNet, transformers' ResNetModel and
    Dinov2Model (BatchNorm statistics perturbed); None for the sources this file writes. Each imports only its library."""
    root = tmp_path_factory.mktemp("library-sources")

    def perturb(model):
        torch = import_or_skip("torch")
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        return model

    def get(name: str) -> Path | None:
        folder = root / name
        if folder.exists() or name not in ("timm-resnet", "hf-resnet", "hf-dinov2"):
            return folder if folder.exists() else None
        import_or_skip("torch").manual_seed(0)
        if name == "timm-resnet":
            timm = import_or_skip("timm")
            model = perturb(timm.create_model("resnet50", pretrained=False, layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], num_classes=10))
            timm.models.save_for_hf(model, str(folder), safe_serialization=True)
        elif name == "hf-resnet":
            model, config = import_or_skip("transformers", "ResNetModel", "ResNetConfig")
            perturb(model(config(embedding_size=64, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic"))).save_pretrained(folder)
        else:
            model, config = import_or_skip("transformers", "Dinov2Model", "Dinov2Config")
            model(config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, image_size=16, patch_size=4,
                         layerscale_value=0.5)).save_pretrained(folder)
        return folder

    return get


@pytest.mark.interop
@pytest.mark.parametrize("name", ["timm-resnet", "vit", "lite0"])
def test_timm_loads_the_export_and_gives_the_run_s_logits(runs, sources, library_source, images, tmp_path, name):
    timm = import_or_skip("timm")
    run = runs(name, library_source(name) or sources[name])
    folder = export_run(run, "timm").folder
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # strict: every tensor by name and shape
    clf, x = run_inputs(run, images)
    assert_same_logits(torch_logits(model, x), np.array(clf.model(mx.array(x))))
    # timm's own preprocessing from the config reproduces mlxft's pixels
    p = clf.config["preprocess"]
    data = timm.data.resolve_data_config({}, model=model)
    assert tuple(data["input_size"]) == (3, p["size"], p["size"]) and data["interpolation"] == p["interpolation"]
    image = square_image(tmp_path / "square.png", p["resize"])
    theirs = timm.data.create_transform(**data)(Image.open(image).convert("RGB")).numpy().transpose(1, 2, 0)
    top = round((p["resize"] - p["size"]) / 2)  # torchvision's CenterCrop offset; mlxft floors it (a note says so when they differ)
    if top != (p["resize"] - p["size"]) // 2:
        assert any("1 px further right/down" in n for n in json.loads((folder / ".mlxft-export.json").read_text())["notes"])
    crop = np.asarray(Image.open(image).convert("RGB"))[top: top + p["size"], top: top + p["size"]]
    ours = normalise(crop[None], p["mean"], p["std"], "RGB")[0]
    assert np.abs(theirs - ours).max() < 1e-5


@pytest.mark.interop
@pytest.mark.parametrize("name, architecture", [("hf-resnet", "ResNetForImageClassification"), ("vit-plain", "ViTForImageClassification"),
                                                ("hf-dinov2", "Dinov2ForImageClassification")])
def test_transformers_loads_the_export_and_gives_the_run_s_logits(runs, sources, library_source, images, tmp_path, name, architecture):
    auto_model, auto_processor = import_or_skip("transformers", "AutoModelForImageClassification", "AutoImageProcessor")
    run = runs(name, library_source(name) or sources[name])
    folder = export_run(run, "transformers").folder
    model, info = auto_model.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == architecture
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.id2label == {0: "blue", 1: "red"}
    clf, x = run_inputs(run, images)
    assert_same_logits(torch_logits(model.eval(), x), np.array(clf.model(mx.array(x))))
    p = clf.config["preprocess"]
    processor = auto_processor.from_pretrained(folder)
    image = square_image(tmp_path / "square.png", p["resize"])
    theirs = processor(images=Image.open(image).convert("RGB"), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    ours = normalise(clf.pixels(image)[None], p["mean"], p["std"], "RGB")[0]
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-5


SQUASH = {"size": 32, "resize": 36, "mean": [120.0, 110.0, 100.0], "std": [60.0, 61.0, 62.0], "interpolation": "bilinear",
          "channels": "RGB", "keep_aspect": False}  # google/vit-style: the whole image to resize x resize, then the crop


def mlxft_pixels(image: Path, pre: dict) -> np.ndarray:
    from mlxft.vision.images import centre_crop, decode

    crop = centre_crop(decode(str(image), pre["resize"], pre["interpolation"], pre["keep_aspect"]), pre["size"])
    return normalise(crop[None], pre["mean"], pre["std"], "RGB")[0]


def wide_image(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.interop
def test_transformers_preprocessing_of_a_squashing_model_matches_mlxft(tmp_path):
    auto_processor = import_or_skip("transformers", "AutoImageProcessor")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(vf.hf_preprocessor(SQUASH)))
    image = wide_image(tmp_path / "wide.png")
    theirs = auto_processor.from_pretrained(tmp_path)(images=Image.open(image), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    # PIL (the slow processor) resizes exactly as mlxft does; torchvision (the fast one, when installed) may round a pixel
    # one grey level the other way
    level = 1.01 / min(SQUASH["std"])
    assert np.abs(theirs - mlxft_pixels(image, SQUASH)).max() < level


@pytest.mark.interop
def test_timm_preprocessing_of_a_squashing_model_matches_mlxft(tmp_path):
    timm = import_or_skip("timm")
    model, config = classifier(tiny_resnet(kind="basic"), dict(SQUASH))
    exported = vf.to_timm(model, config)
    data = timm.data.resolve_data_config(pretrained_cfg=exported.config["pretrained_cfg"])
    image = wide_image(tmp_path / "wide.png")
    theirs = timm.data.create_transform(**data)(Image.open(image).convert("RGB")).numpy().transpose(1, 2, 0)
    assert np.abs(theirs - mlxft_pixels(image, SQUASH)).max() < 1e-5


# ---------------------------------------------------------------- real pretrained weights (../shared/assets)

def real_images(root: Path, per_class: dict[str, int]) -> Path:
    """A few of the real cats-vs-dogs photos as a small image folder (train/val), copied so the assets stay untouched."""
    import shutil

    source = ASSETS / "data" / "cats_vs_dogs"
    for split, n in per_class.items():
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for path in sorted((source / split / label).glob("*.jpg"))[:n]:
                shutil.copy(path, root / split / label / path.name)
    return root


def needs_assets(*parts: str) -> Path:
    path = ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real assets are not on this machine)")
    return path


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize("asset, fmt, size, library", [("dinov2-vits14", "transformers", 56, "transformers"),
                                                       ("efficientnet-lite0", "timm", 64, "timm")])
def test_a_real_backbone_fine_tuned_and_exported_loads_with_the_same_logits(tmp_path, asset, fmt, size, library):
    from mlxft.api import train

    model_path = needs_assets("models", asset)
    if asset == "efficientnet-lite0":
        model_path = next(model_path.glob("*.pth"))
    data = real_images(tmp_path / "photos", {"train": 6, "val": 3})
    vision = {"image_size": size, "head_epochs": 1, "head_learning_rate": 1e-3, "finetune_epochs": 1, "unfreeze": 1, "finetune_learning_rate": 1e-4}
    recipe = vision_recipe(model_path, data, tmp_path / "run", vision=vision, train={"batch_size": 4, "eval_every": None})
    run = train(recipe)
    assert run.ok, run.error
    folder = export_run(run.path, fmt).folder
    clf = load_classifier(run.path)
    p = clf.config["preprocess"]
    paths = sorted((data / "val").rglob("*.jpg"))
    x = normalise(np.stack([clf.pixels(path) for path in paths]), p["mean"], p["std"], p["channels"]).astype(np.float32)
    want = np.array(clf.model(mx.array(x)))
    if library == "timm":
        model = import_or_skip("timm").create_model(f"local-dir:{folder}", pretrained=True).eval()
    else:
        model = import_or_skip("transformers", "AutoModelForImageClassification").from_pretrained(folder).eval()
    assert_same_logits(torch_logits(model, x), want)
    other = "timm" if fmt == "transformers" else "transformers"
    with pytest.raises(ModelError, match="does not pool|no EfficientNet-Lite"):
        export_run(run.path, other)


@pytest.mark.slow
def test_the_caffe_resnet_is_refused_in_both_layouts_with_a_reason():
    folder = needs_assets("models", "yahoo-open-nsfw-resnet50-1by2")
    loaded = load_backbone(str(folder))
    assert loaded.model.caffe
    model, config = classifier(loaded.model)
    for convert in (vf.to_timm, vf.to_transformers):
        with pytest.raises(ModelError, match="Caffe-style .* neither timm nor transformers builds"):
            convert(model, config)
