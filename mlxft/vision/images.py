"""Images for training and evaluation: decode once (EXIF-rotated, any mode -> RGB), resize, crop, augment, normalise.

Decoded images are kept in memory at the preprocessing's `resize` side (uint8), so every epoch's crops and flips
come from memory. Augmentation draws from a generator seeded by (seed, epoch, index, view): a resumed run sees
the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlxft.errors import DataError

_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL's Image.Resampling values


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; all off gives the evaluation view (centre crop)."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: share of the image's area
    flip: bool = True
    jitter: float = 0.1  # brightness and contrast, +- this share

    @property
    def off(self) -> bool:
        return self.crop_scale == (1.0, 1.0) and not self.flip and self.jitter == 0


def decode(path: str, resize: int, interpolation: str = "bicubic", keep_aspect: bool = True) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3], EXIF-rotated, its shorter side resized to `resize` (or, without
    `keep_aspect`, the whole image to resize x resize, as some weights were trained)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))  # transparent pixels become white
                im = Image.alpha_composite(background, im)
            im = im.convert("RGB")  # L, CMYK, I;16, P ... all become RGB
            w, h = im.size
            scale = resize / min(w, h)
            size = (max(resize, round(w * scale)), max(resize, round(h * scale))) if keep_aspect else (resize, resize)
            im = im.resize(size, _RESAMPLE.get(interpolation, 3))
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc})", hint="`mlxft data validate` lists every unreadable image") from None


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top: top + size, left: left + size]


def _resize(image: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), _RESAMPLE.get(interpolation, 3)), dtype=np.uint8)


def augmented(image: np.ndarray, size: int, rng: np.random.Generator, aug: Augment, interpolation: str = "bicubic") -> np.ndarray:
    """A random resized crop (area share in `aug.crop_scale`, aspect 3/4..4/3), maybe flipped and jittered."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*aug.crop_scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = int(round(np.sqrt(area / aspect))), int(round(np.sqrt(area * aspect)))
        if 0 < ch <= h and 0 < cw <= w:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = image[top: top + ch, left: left + cw]
            break
    else:
        side = min(h, w)
        crop = centre_crop(image, side)
    out = _resize(crop, size, interpolation) if crop.shape[:2] != (size, size) else crop
    if aug.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if aug.jitter:
        b, c = 1 + rng.uniform(-aug.jitter, aug.jitter), 1 + rng.uniform(-aug.jitter, aug.jitter)
        f = out.astype(np.float32)
        mean = f.mean()
        out = np.clip((f - mean) * c + mean * b, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def normalise(batch: np.ndarray, mean, std, channels: str = "RGB") -> np.ndarray:
    """uint8 [B, H, W, 3] RGB -> float32 (x - mean) / std, in the channel order the weights expect."""
    x = batch.astype(np.float32)
    if channels == "BGR":
        x = x[..., ::-1]
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


class ImageSet:
    """A split's images, decoded once at `resize` (shorter side), with their label ids."""

    def __init__(self, paths: list[str], labels: list[int], resize: int, interpolation: str, keep_aspect: bool = True):
        self.paths, self.labels = paths, np.asarray(labels, dtype=np.int32)
        self.interpolation = interpolation
        self.images = [decode(p, resize, interpolation, keep_aspect) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def view(self, i: int, size: int, rng: np.random.Generator | None, aug: Augment | None) -> np.ndarray:
        """Image i at size x size: the centre crop, or an augmented view when `rng` and `aug` are given."""
        img = self.images[i]
        if rng is None or aug is None or aug.off:
            return centre_crop(img, size) if min(img.shape[:2]) >= size else _resize(img, size, self.interpolation)
        return augmented(img, size, rng, aug, self.interpolation)
