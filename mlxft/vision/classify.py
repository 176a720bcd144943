"""The image-classification job (image-classify): a pretrained backbone, a new head, two phases, honest metrics.

Phase 1 ("head") trains only the new head on a frozen backbone. The backbone runs once per image (and per
augmented view, `vision.cache_views`) before training; the pooled features are cached in the run directory and
phase 1 trains on them, which is what makes CPU fine-tuning practical. Phase 2 ("finetune") unfreezes the last
`vision.unfreeze` blocks (or all) and trains on augmented images through the backbone, at its own learning rate.
BatchNorm statistics stay frozen throughout (the backbone is in eval mode): a few hundred images cannot estimate
them better than ImageNet did.

Validation reports loss, accuracy, macro-F1 and each class's recall; per-class counts travel as weighted
means and become F1 in `finish_metrics`.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlxft.data.sources import read_split
from mlxft.data.split import split_rows
from mlxft.errors import DataError, ModelError
from mlxft.events import LogMessage
from mlxft.job import Batch, Phase
from mlxft.labels import class_count_metrics, class_weights, finish_class_metrics, label_order
from mlxft.recipe import Recipe
from mlxft.atomic import atomic_save_safetensors, atomic_write_text, publish_dir, temp_dir_for
from mlxft.runs import RunDir
from mlxft.vision.images import Augment, ImageSet, normalise

FEATURES_FILE = "features.safetensors"  # in the run's cache/: the frozen backbone's features, read on resume
MODEL_WEIGHTS, MODEL_CONFIG = "model.safetensors", "config.json"
LORA_WEIGHTS = "lora.safetensors"  # next to model.safetensors when phase 2 trains LoRA: the updates, for resume


class ClassifierHead(nn.Module):
    """Dropout, then a linear layer from the backbone's pooled features to the classes."""

    def __init__(self, features: int, classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.linear = nn.Linear(features, classes)

    def __call__(self, x):
        return self.linear(self.dropout(x) if self.dropout is not None else x)


def steps_for_epochs(epochs: float, n: int, batch_size: int, accumulation: int) -> int:
    """Optimizer steps in `epochs` passes over n samples (as the Trainer cuts them into batches)."""
    per_epoch = max(1, math.ceil(math.ceil(n / batch_size) / accumulation))
    return max(1, math.ceil(epochs * per_epoch))


class ImageClassifyJob:
    """Fine-tune a pretrained image backbone with a new head on labelled images (see the module docstring)."""

    artifact = "model"
    unit = "img"
    higher_is_better = {"accuracy", "macro_f1"}
    charted = ("accuracy",)

    def __init__(self, recipe: Recipe, emit=lambda e: None, load_backbone=None):
        """`load_backbone(spec) -> LoadedBackbone` defaults to `mlxft.vision.backbones.load_backbone` (benchmarks
        pass one that builds random weights of the catalogue's architecture)."""
        if load_backbone is None:
            from mlxft.vision.backbones import load_backbone

        self.recipe, v = recipe, recipe.vision
        loaded = load_backbone(recipe.model)
        for note in loaded.notes:
            emit(LogMessage("info", note))
        self.loaded, self.backbone, self.pre = loaded, loaded.model, loaded.preprocess
        self.size = v.image_size or self.pre.size
        self.resize = round(self.size * self.pre.resize / self.pre.size)
        self._load_data(emit)
        k = len(self.classes)
        mx.random.seed(recipe.seed)
        self.backbone.head = ClassifierHead(self.backbone.num_features, k, v.dropout)
        emit(LogMessage("info", f"classifier head replaced: {self.backbone.num_features} features -> {k} classes ({', '.join(map(str, self.classes))})"))
        self.model = self.backbone
        mx.eval(self.model.parameters())
        self.uniform_loss = math.log(k) if k > 1 else None
        counts = np.bincount(self.train.labels, minlength=k).tolist()
        self.weights = class_weights(counts, v.class_weights)
        self._log_balance(counts, emit)
        self.augment = Augment() if v.augment else None
        self.mode = "features"
        self.features: dict[str, np.ndarray] = {}
        bs, acc = recipe.train.batch_size, recipe.train.grad_accumulation
        head = steps_for_epochs(v.head_epochs, len(self.train), bs, acc) if v.head_epochs else 0
        tune = steps_for_epochs(v.finetune_epochs, len(self.train), bs, acc) if v.finetune_epochs else 0
        prefix, blocks = self._block_prefixes(), self.backbone.blocks()
        self._block_depths = [(prefix[id(b)], len(blocks) - 1 - i) for i, b in enumerate(blocks)]  # (path prefix, blocks above it)
        decay = self._layer_scale if v.layer_decay < 1 else None
        self.phases = ([Phase("head", head, v.head_learning_rate, setup=self._phase_head)] if head else []) + (
            [Phase("finetune", tune, v.finetune_learning_rate, setup=self._phase_finetune, warmup_steps=v.finetune_warmup_steps, lr_scale=decay)]
            if tune else [])
        self.lora_paths: list[str] = []  # the linears phase 2 adapts with LoRA (paths in the model), once it has begun
        if tune and v.finetune_method == "lora":
            self._check_lora_targets()

    # -- data ----------------------------------------------------------------------------------
    def _load_data(self, emit) -> None:
        d, v = self.recipe.data, self.recipe.vision
        train_records = read_split(d.path, d.train_split)
        if not train_records:
            raise DataError(f"{d.path}: no '{d.train_split}' split found (or it is empty)", hint="image folders look like <split>/<label>/<image>, e.g. train/cat/1.jpg")
        valid_records = read_split(d.path, d.valid_split) or []
        for rec in train_records + valid_records:
            if "image" not in rec.data or "label" not in rec.data:
                raise DataError(f"{rec.where}: an image-classification row needs 'image' and 'label'", hint="use an image folder <split>/<label>/<image>, or a metadata.csv with file_name and label")
        if not valid_records:
            parts = split_rows(train_records, fractions=(1 - v.valid_fraction, v.valid_fraction), seed=self.recipe.seed, label_key=lambda r: r.data["label"])
            train_records, valid_records = parts["train"], parts["valid"]
            emit(LogMessage("info", f"no '{d.valid_split}' split: {len(valid_records)} of the training images are held out for validation "
                                    f"(stratified by label, seed {self.recipe.seed}, vision.valid_fraction {v.valid_fraction})"))
        self.classes = label_order([r.data["label"] for r in train_records])
        index = {c: i for i, c in enumerate(self.classes)}
        key = (lambda x: x) if all(isinstance(c, int) for c in self.classes) else str
        unseen = [f"{r.where}: label {r.data['label']!r}" for r in valid_records if key(r.data["label"]) not in index]
        if unseen:
            raise DataError(f"{len(unseen)} validation image(s) have a label no training image has:\n  " + "\n  ".join(unseen[:10]),
                            hint="every class needs training images; move these images or add training images of their class")
        if len(self.classes) < 2:
            raise DataError(f"{d.path}: the training images have one label ({self.classes[0]!r}); a classifier needs at least two")
        emit(LogMessage("info", f"decoding {len(train_records)} + {len(valid_records)} images at {self.resize} px (shorter side)"))
        keep = getattr(self.pre, "keep_aspect", True)
        self.train = ImageSet([r.data["image"] for r in train_records], [index[key(r.data["label"])] for r in train_records], self.resize, self.pre.interpolation, keep)
        self.valid = ImageSet([r.data["image"] for r in valid_records], [index[key(r.data["label"])] for r in valid_records], self.resize, self.pre.interpolation, keep)

    def _log_balance(self, counts: list[int], emit) -> None:
        v = self.recipe.vision
        shown = ", ".join(f"{c} {n}" for c, n in zip(self.classes, counts))
        how = {"auto": "class weights (inverse frequency): " + ", ".join(f"{c} {w:.2f}" for c, w in zip(self.classes, self.weights)),
               "none": "no class weights"}[v.class_weights]
        sampler = "balanced sampling (each class equally often per epoch)" if v.sampler == "balanced" else "shuffled sampling"
        emit(LogMessage("info", f"training images per class: {shown}; {how}; {sampler}"))

    # -- phases ----------------------------------------------------------------------------------
    def _phase_head(self) -> None:
        self.mode = "features"
        self.model.freeze()
        self.model.head.unfreeze()

    def training_mode(self) -> None:
        self.model.eval()  # BatchNorm statistics frozen: the backbone normalises with its pretrained running statistics
        self.model.head.train()  # the head's dropout is on

    def _chosen_blocks(self) -> list:
        v, blocks = self.recipe.vision, self.backbone.blocks()
        return blocks if v.unfreeze == "all" else blocks[len(blocks) - min(int(v.unfreeze), len(blocks)):]

    def _phase_finetune(self) -> None:
        self.mode = "images"
        v = self.recipe.vision
        self.model.freeze()
        if v.finetune_method == "lora":
            self._apply_lora()  # the LoRA layers' own a/b are what trains; every pretrained weight stays frozen
        else:
            for block in self._chosen_blocks():
                block.unfreeze()
            if v.unfreeze == "all":
                self.model.unfreeze()
        self.model.head.unfreeze()
        self._freeze_norm_statistics()

    # -- LoRA on a ViT's attention ---------------------------------------------------------------------
    def _lora_keys(self, block) -> list[str]:
        targets = set(self.recipe.vision.lora_targets)
        return sorted(k for k, m in block.named_modules() if isinstance(m, nn.Linear) and k.split(".")[-1] in targets)

    def _check_lora_targets(self) -> None:
        v = self.recipe.vision
        found = self._lora_keys(self._chosen_blocks()[-1])
        if not found:
            linears = sorted({k.split(".")[-1] for k, m in self._chosen_blocks()[-1].named_modules() if isinstance(m, nn.Linear)})
            what = (f"its blocks' linears are {', '.join(linears)}" if linears else "its blocks have no linear layers (LoRA here adapts a ViT's attention)")
            raise DataError(f"vision.finetune_method lora: no {'/'.join(v.lora_targets)} linear in the blocks of {self.recipe.model} ({self.loaded.arch}); {what}",
                            hint="use vision.finetune_method: unfreeze for convolutional backbones, or set vision.lora_targets to linears the blocks have")

    def _apply_lora(self) -> None:
        from mlxft.lora import LoRALinear, swap_in_adapters

        if any(isinstance(m, LoRALinear) for _, m in self.model.named_modules()):
            return  # already applied (a resumed run enters its phase again)
        v = self.recipe.vision
        mx.random.seed(self.recipe.seed + 1)  # the LoRA A matrices: the same on a fresh start and on resume
        prefix, paths = self._block_prefixes(), []
        for block in self._chosen_blocks():
            for k in swap_in_adapters(block, self._lora_keys(block), "lora", v.lora_rank, v.lora_alpha / v.lora_rank, v.lora_dropout):
                paths.append(prefix[id(block)] + k)
        mx.eval(self.model.parameters())
        self.lora_paths = sorted(paths)

    def _block_prefixes(self) -> dict[int, str]:
        """The parameter-path prefix ('layers.3.') of every module of the model, keyed by the module's identity."""
        return {id(m): name + "." for name, m in self.model.named_modules()}

    # -- layer-wise learning-rate decay ---------------------------------------------------------------
    def _layer_scale(self, path: str) -> float:
        """finetune_learning_rate * layer_decay^k for a parameter k blocks below the top block (the head: 1, the stem: deepest)."""
        if path.startswith("head."):
            return 1.0
        for prefix, depth in self._block_depths:
            if path.startswith(prefix):
                return self.recipe.vision.layer_decay ** depth
        # Not in a block: the stem (embeddings, first conv) sits below every block; final norms sit at the top.
        return 1.0 if path.startswith(("norm.", "fc_norm.")) else self.recipe.vision.layer_decay ** len(self._block_depths)

    def _freeze_norm_statistics(self) -> None:
        # Running statistics are not parameters to train: unfreezing a block must not hand them to the optimizer.
        for _, m in self.model.named_modules():
            stats = [k for k in ("running_mean", "running_var") if k in m]
            if stats:
                m.freeze(keys=stats, recurse=False)

    # -- the feature cache ---------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        v = self.recipe.vision
        h.update(json.dumps({"model": self.recipe.model, "size": self.size, "resize": self.resize, "views": v.cache_views,
                             "augment": v.augment, "seed": self.recipe.seed, "classes": [str(c) for c in self.classes]}).encode())
        for split in (self.train, self.valid):
            for p, img in zip(split.paths, split.images):
                h.update(p.encode())
                h.update(hashlib.blake2b(img.tobytes(), digest_size=8).digest())
            h.update(b"#")
        return h.hexdigest()

    def prepare(self, run_dir: Path, emit=lambda e: None) -> None:
        """The frozen backbone's features of every image (and view): read from the run's cache, or computed now."""
        if not self.phases or self.phases[0].name != "head":
            return
        run, fingerprint = RunDir(run_dir), self._fingerprint()
        cached, why = run.read_cache(FEATURES_FILE, fingerprint, "the cached image features")
        if cached is not None:
            self.features = cached
            emit(LogMessage("info", f"backbone features of {len(self.train)} + {len(self.valid)} images read from {FEATURES_FILE}"))
            return
        if why:
            emit(LogMessage("warning", why))
        views = self.recipe.vision.cache_views
        emit(LogMessage("info", f"computing the frozen backbone's features: {len(self.train)} images x {views} view(s) + {len(self.valid)} (once; cached in the run directory)"))
        self.model.eval()
        arrays = {}
        for view in range(views):
            arrays[f"train_{view}"] = self._features_of(self.train, view if (views > 1 and self.augment) else None)
        arrays["valid"] = self._features_of(self.valid, None)
        run.write_cache(FEATURES_FILE, arrays, fingerprint, "the image features")
        self.features = arrays

    def _features_of(self, split: ImageSet, view: int | None) -> np.ndarray:
        out = np.zeros((len(split), self.backbone.num_features), np.float32)
        bs = max(self.recipe.train.batch_size, 8)
        for start in range(0, len(split), bs):
            idx = list(range(start, min(start + bs, len(split))))
            x = self._pixels(split, idx, epoch=-1 - (view or 0), augment=view is not None)
            out[start: start + len(idx)] = np.array(self.backbone.features(mx.array(x)))
        return out

    def _pixels(self, split: ImageSet, idx: list[int], epoch: int, augment: bool) -> np.ndarray:
        batch = []
        for i in idx:
            rng = np.random.default_rng([self.recipe.seed, epoch + 1_000_000, i]) if augment else None
            batch.append(split.view(i, self.size, rng, self.augment if augment else None))
        return normalise(np.stack(batch), self.pre.mean, self.pre.std, self.pre.channels)

    # -- what the Trainer asks ------------------------------------------------------------------
    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def has_validation(self) -> bool:
        return len(self.valid) > 0

    def train_order(self, epoch: int, batch_size: int, seed: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        n = len(self.train)
        if self.recipe.vision.sampler == "balanced":
            # Each class equally often: draw n samples, a class uniformly, then one of its images uniformly.
            by_class = [np.flatnonzero(self.train.labels == c) for c in range(len(self.classes))]
            cls = rng.integers(0, len(by_class), n)
            order = np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in cls])
        else:
            order = rng.permutation(n)
        return [order[i: i + batch_size].tolist() for i in range(0, n, batch_size)]

    def _batch(self, split: ImageSet, name: str, idx: list[int], epoch: int, train: bool) -> Batch:
        labels = mx.array(split.labels[idx])
        if self.mode == "features":
            if name == "train":
                views = self.recipe.vision.cache_views
                x = self.features[f"train_{epoch % views}"][idx]
            else:
                x = self.features["valid"][idx]
        else:
            x = self._pixels(split, idx, epoch, augment=train and self.augment is not None)
        if train and self.recipe.vision.mixup > 0:
            return self._mixed(x, labels, idx, epoch)
        return Batch((mx.array(x), labels), weight=float(len(idx)), size=len(idx))

    def _mixed(self, x: np.ndarray, labels: mx.array, idx: list[int], epoch: int) -> Batch:
        """Mixup: each sample blended with another of the batch, lam ~ Beta(alpha, alpha); seeded by the batch (resume is exact)."""
        alpha = self.recipe.vision.mixup
        rng = np.random.default_rng([self.recipe.seed, epoch + 2_000_000, zlib.crc32(np.asarray(idx, np.int64).tobytes())])
        lam = float(rng.beta(alpha, alpha))
        perm = rng.permutation(len(idx))
        mixed = (lam * x + (1 - lam) * x[perm]).astype(np.float32)
        return Batch((mx.array(mixed), labels, labels[mx.array(perm)], mx.array(lam, dtype=mx.float32)), weight=float(len(idx)), size=len(idx))

    def train_batch(self, indices: list[int], epoch: int) -> Batch:
        return self._batch(self.train, "train", indices, epoch, True)

    def eval_batches(self, batch_size: int, max_batches: int | None):
        n = len(self.valid)
        starts = list(range(0, n, batch_size))
        for s in starts[:max_batches] if max_batches is not None else starts:
            yield self._batch(self.valid, "valid", list(range(s, min(s + batch_size, n))), 0, False)

    def _logits(self, model, x):
        return model.head(x) if self.mode == "features" else model(x)

    def loss(self, model, x, labels, mixed_with=None, lam=None):
        """Class-weighted cross-entropy; under mixup, each label's term at its share lam / 1 - lam (weights too)."""
        logits = self._logits(model, x).astype(mx.float32)
        weights, smoothing = mx.array(self.weights), self.recipe.vision.label_smoothing
        w = weights[labels]
        ce = nn.losses.cross_entropy(logits, labels, label_smoothing=smoothing)
        if mixed_with is None:
            loss = (ce * w).sum() / w.sum()
            accuracy = (logits.argmax(-1) == labels).astype(mx.float32).mean()
        else:
            w2 = weights[mixed_with]
            ce2 = nn.losses.cross_entropy(logits, mixed_with, label_smoothing=smoothing)
            loss = (lam * w * ce + (1 - lam) * w2 * ce2).sum() / (lam * w + (1 - lam) * w2).sum()
            major = mx.where(lam >= 0.5, labels, mixed_with)  # accuracy against the label with the larger share
            accuracy = (logits.argmax(-1) == major).astype(mx.float32).mean()
        return loss, mx.array(float(x.shape[0])), {"accuracy": accuracy}

    def eval_metrics(self, model, x, labels):
        logits = self._logits(model, x).astype(mx.float32)
        n = x.shape[0]
        ce = nn.losses.cross_entropy(logits, labels).mean()  # unweighted: the held-out loss as it is
        pred = logits.argmax(-1)
        metrics = {"loss": ce, "accuracy": (pred == labels).astype(mx.float32).mean(), **class_count_metrics(pred, labels, len(self.classes))}
        return metrics, mx.array(float(n))

    def finish_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return finish_class_metrics(metrics, self.classes)

    # -- what it saves -------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """model.safetensors (every weight, BatchNorm statistics included) and config.json, as one folder or none."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(folder)
        weights, lora = self._plain_weights()
        atomic_save_safetensors(tmp / MODEL_WEIGHTS, weights, metadata={"format": "mlx"})
        if lora:  # the updates themselves, so a resumed run continues training them (model.safetensors has them fused)
            atomic_save_safetensors(tmp / LORA_WEIGHTS, lora, metadata={"format": "mlx"})
        atomic_write_text(tmp / MODEL_CONFIG, json.dumps(self.config(), indent=2))
        publish_dir(tmp, folder)

    def _plain_weights(self) -> tuple[dict, dict]:
        """(every weight with LoRA updates fused into their linears, in the backbone's own names; the LoRA tensors)."""
        flat = dict(tree_flatten(self.model.parameters()))
        if not self.lora_paths:
            return flat, {}
        lora, modules = {}, dict(self.model.named_modules())
        for path in self.lora_paths:
            layer = modules[path]
            flat[f"{path}.weight"] = (layer.linear.weight.astype(mx.float32) + layer.delta_weight().astype(mx.float32)).astype(layer.linear.weight.dtype)
            if "bias" in layer.linear:
                flat[f"{path}.bias"] = flat.pop(f"{path}.linear.bias")
            del flat[f"{path}.linear.weight"]
            for leaf in ("lora_a", "lora_b"):
                lora[f"{path}.{leaf}"] = flat.pop(f"{path}.{leaf}")
        return flat, lora


    def config(self) -> dict:
        p = self.pre
        return {"task": "image-classification", "arch": self.loaded.arch, "backbone": self.recipe.model, "num_classes": len(self.classes),
                "id2label": {str(i): str(c) for i, c in enumerate(self.classes)}, "label2id": {str(c): i for i, c in enumerate(self.classes)},
                "image_size": self.size, "preprocess": {"size": self.size, "resize": self.resize, "mean": list(p.mean), "std": list(p.std),
                                                        "interpolation": p.interpolation, "channels": p.channels, "keep_aspect": p.keep_aspect},
                "dropout": self.recipe.vision.dropout,
                **({"lora": {"rank": self.recipe.vision.lora_rank, "alpha": self.recipe.vision.lora_alpha, "fused": True,
                             "modules": self.lora_paths}} if self.lora_paths else {})}

    def load(self, folder: Path) -> None:
        from mlxft.llm.model_files import load_safetensors_checked

        folder = Path(folder)
        weights = load_safetensors_checked(folder / MODEL_WEIGHTS, "the checkpoint's model weights")
        has_lora = (folder / LORA_WEIGHTS).is_file()
        if bool(self.lora_paths) != has_lora:
            raise ModelError(f"{folder}: the checkpoint {'has' if has_lora else 'has no'} LoRA updates ({LORA_WEIGHTS}) but this phase "
                             f"{'trains none' if has_lora else 'trains LoRA'}", hint="was it written by a run with another vision.finetune_method?")
        if has_lora:
            lora = load_safetensors_checked(folder / LORA_WEIGHTS, "the checkpoint's LoRA updates")
            weights = self._unfused(weights, lora, folder)
        self.model.load_weights(list(weights.items()), strict=True)

    def _unfused(self, weights: dict, lora: dict, folder: Path) -> dict:
        """The model's LoRA-layer names from a fused file: base weights as they are (frozen), a/b from the LoRA file.

        The fused weight must equal the base plus the update it names, or the checkpoint is of another backbone.
        """
        weights, modules = dict(weights), dict(self.model.named_modules())
        for path in self.lora_paths:
            layer = modules[path]
            try:
                a, b = lora[f"{path}.lora_a"], lora[f"{path}.lora_b"]
                fused = weights.pop(f"{path}.weight")
            except KeyError as exc:
                raise ModelError(f"{folder}: {exc.args[0]} is missing from the checkpoint", hint="the checkpoint is incomplete; resume from an earlier one") from None
            expected = layer.linear.weight.astype(mx.float32) + layer.scale * (b.T @ a.T).astype(mx.float32)
            if fused.shape != expected.shape or not mx.allclose(fused.astype(mx.float32), expected, atol=1e-4, rtol=1e-4).item():
                raise ModelError(f"{folder}: {path}.weight is not this backbone's weight plus its LoRA update",
                                 hint="the checkpoint was written by a run on another backbone; resume the run that wrote it")
            weights[f"{path}.linear.weight"] = layer.linear.weight
            if f"{path}.bias" in weights:
                weights[f"{path}.linear.bias"] = weights.pop(f"{path}.bias")
            weights[f"{path}.lora_a"], weights[f"{path}.lora_b"] = a, b
        return weights

    # -- what the run reports and leaves ----------------------------------------------------------
    def describe(self) -> dict:
        from mlxft.llm.loading import device_name

        params = sum(v.size for _, v in tree_flatten(self.model.parameters()))
        trainable = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        phases = " then ".join(f"{p.name} {p.steps} steps" for p in self.phases)
        return {"model": self.recipe.model, "method": f"image-classify ({phases})", "trainable_parameters": trainable, "total_parameters": params,
                "train_samples": len(self.train), "valid_samples": len(self.valid), "compute_dtype": "float32", "device": device_name()}

    def write_readme(self, run: RunDir) -> None:
        text = (f"# {run.path.name}\n\nimage-classify of `{self.recipe.model}`: {len(self.classes)} classes "
                f"({', '.join(map(str, self.classes))}), {self.size} px.\n\n"
                f"- The model: `{run.result_dir(self.artifact)}` ({MODEL_WEIGHTS} + {MODEL_CONFIG} with id2label and the preprocessing)\n"
                f"- Resume: `mlxft train --resume {run.path}`\n")
        atomic_write_text(run.readme_path, text)

