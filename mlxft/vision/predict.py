"""A trained image classifier, loaded from its run (or model folder), as a function from images to labels and scores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxft.errors import ModelError
from mlxft.vision.images import centre_crop, decode, normalise

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def classifier_folder(path: str | Path) -> Path:
    """The folder holding config.json + model.safetensors: `path` itself, or a run's model/ (or best/)."""
    from mlxft.vision.classify import MODEL_CONFIG

    from mlxft.runs import RunDir

    path = Path(path)
    run = RunDir(path)
    for folder in (path, run.result_dir("model"), run.best_dir):
        cfg = folder / MODEL_CONFIG
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("task") == "image-classification":
                    return folder
            except (OSError, ValueError):
                continue
    raise ModelError(f"{path}: no image classifier here", hint="pass a run directory of `kind: image-classify` (or its model/ folder)")


@dataclass
class ImageClassifier:
    """`clf(path_or_image) -> [{"label", "score"}, ...]`, best first; `clf.probabilities(images)` for a batch."""

    model: object
    config: dict
    folder: Path

    @property
    def labels(self) -> list[str]:
        return [self.config["id2label"][str(i)] for i in range(self.config["num_classes"])]

    def pixels(self, image) -> np.ndarray:
        """One image (a path or a PIL image) as the model's uint8 input crop."""
        p = self.config["preprocess"]
        if isinstance(image, (str, Path)):
            arr = decode(str(image), p["resize"], p["interpolation"], p.get("keep_aspect", True))
        else:
            from PIL import Image

            tmp = image.convert("RGB")
            w, h = tmp.size
            s = p["resize"] / min(w, h)
            arr = np.asarray(tmp.resize((max(p["resize"], round(w * s)), max(p["resize"], round(h * s))), Image.Resampling.BICUBIC), dtype=np.uint8)
        return centre_crop(arr, p["size"])

    def probabilities(self, images: list, batch_size: int = 16) -> np.ndarray:
        p = self.config["preprocess"]
        out = []
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.pixels(im) for im in images[start: start + batch_size]])
            x = mx.array(normalise(batch, p["mean"], p["std"], p.get("channels", "RGB")))
            out.append(np.array(mx.softmax(self.model(x).astype(mx.float32), axis=-1)))
        return np.concatenate(out) if out else np.zeros((0, self.config["num_classes"]), np.float32)

    def __call__(self, image, top_k: int | None = None) -> list[dict]:
        probs = self.probabilities([image])[0]
        order = np.argsort(-probs)[: top_k or len(probs)]
        return [{"label": self.labels[i], "score": float(probs[i])} for i in order]


def load_classifier(path: str | Path) -> ImageClassifier:
    """Rebuild the trained classifier: its backbone architecture, the new head, every saved weight (strictly)."""
    from mlxft.llm.model_files import load_safetensors_checked, read_json_file
    from mlxft.vision.backbones import load_backbone
    from mlxft.vision.classify import MODEL_CONFIG, MODEL_WEIGHTS, ClassifierHead

    folder = classifier_folder(path)
    config = read_json_file(folder / MODEL_CONFIG, "the classifier's config")
    loaded = load_backbone(config["backbone"])
    model = loaded.model
    model.head = ClassifierHead(model.num_features, int(config["num_classes"]), float(config.get("dropout", 0.0)))
    weights = load_safetensors_checked(folder / MODEL_WEIGHTS, "the classifier's weights")
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as exc:
        raise ModelError(f"{folder / MODEL_WEIGHTS}: does not fit the {config.get('arch')} backbone it names ({exc})",
                         hint="was the run's model folder copied from another run?") from None
    model.eval()
    mx.eval(model.parameters())
    return ImageClassifier(model, config, folder)


def image_paths(path: str | Path) -> list[Path]:
    """One image, or every image under a folder (sorted), as paths."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    raise ModelError(f"{path}: no such image or folder")
