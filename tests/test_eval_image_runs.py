"""`mlxft eval RUN_B --against RUN_A` on tiny trained image runs: the comparison agrees with each run's own evaluation,
is written into RUN_B/eval/<split>/ and printed; other data, other labels and misuse are clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.image_runs import train_image_runs

MLXFT = [sys.executable, "-m", "mlxft"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return train_image_runs(tmp_path_factory.mktemp("image-runs"))


def mlxft(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(MLXFT + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd)


def predictions(folder: Path) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())}


def test_the_comparison_agrees_with_each_runs_own_evaluation(runs, tmp_path):
    alone = mlxft("eval", runs["weak"], "--out", tmp_path / "weak-alone")
    assert alone.returncode == 0, alone.stderr
    out = mlxft("eval", runs["strong"], "--against", runs["weak"])
    assert out.returncode == 0, out.stderr
    folder = runs["strong"] / "eval" / "test"
    c = json.loads((folder / "compare-weak.json").read_text())
    a, b = predictions(tmp_path / "weak-alone"), predictions(folder)
    assert set(a) == set(b) and len(b) == c["images"] == 16
    right_a = {p for p, r in a.items() if r["predicted"] == r["label"]}
    right_b = {p for p, r in b.items() if r["predicted"] == r["label"]}
    assert {r["image"] for r in c["regressions"]} == right_a - right_b
    assert {r["image"] for r in c["fixes"]} == right_b - right_a
    assert c["regressions"] or c["fixes"], "the weak and the strong run differ on some images"
    weak_summary = json.loads((tmp_path / "weak-alone" / "summary.json").read_text())
    strong_summary = json.loads((folder / "summary.json").read_text())
    assert c["before"]["accuracy"] == pytest.approx(weak_summary["accuracy"]) and c["after"]["accuracy"] == pytest.approx(strong_summary["accuracy"])
    assert c["change"]["macro_f1"] == pytest.approx(strong_summary["macro_f1"] - weak_summary["macro_f1"])
    assert c["before"]["path"] == str(runs["weak"].resolve()) and c["verdict"] in ("ship", "investigate", "look at the training data", "stop")

    # Printed: both names, the scores, every regression by path, the verdict; where the files are.
    assert "A = weak, B = strong: the same 16 images of the 'test' split" in out.stdout
    assert f"accuracy: {100 * weak_summary['accuracy']:.1f}% -> {100 * strong_summary['accuracy']:.1f}%" in out.stdout
    for r in c["regressions"] + c["fixes"]:
        assert r["image"] in out.stdout
    assert f"verdict: {c['verdict']} - {c['verdict_text']}" in out.stdout
    assert f"comparison report: {folder / 'compare-weak.md'}" in out.stdout
    md = (folder / "compare-weak.md").read_text()
    assert f"## Verdict: {c['verdict']}" in md and f"## Regressions ({len(c['regressions'])})" in md
    assert (folder / "confusion.png").is_file()  # B's own evaluation is written as without --against


def test_progress_json_names_each_run_and_ends_with_the_paths(runs):
    out = mlxft("eval", runs["strong"], "--against", runs["weak"], "--progress-json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    progress = [(d["phase"], d["done"], d["model"]) for d in lines if "phase" in d]
    assert progress[0] == ("strong", 0, 1) and ("strong", 16, 1) in progress and progress[-1] == ("weak", 16, 2)
    assert all(d["models"] == 2 and d["total"] == 16 for d in lines if "phase" in d)
    done = lines[-1]
    assert done["finished"] and done["paths"]["comparison"].endswith("compare-weak.json") and done["verdict"]


def test_runs_trained_on_other_images_are_refused_unless_data_is_given(runs):
    out = mlxft("eval", runs["strong"], "--against", runs["other-data"])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "other-data was trained on" in out.stderr and "their 'test' splits are not the same images" in out.stderr
    assert "hint: pass --data IMAGE_FOLDER" in out.stderr
    out = mlxft("eval", runs["strong"], "--against", runs["other-data"], "--data", runs["images"], "--out", runs["root"] / "cross")
    assert out.returncode == 0, out.stderr
    assert json.loads((runs["root"] / "cross" / "compare-other-data.json").read_text())["images"] == 16


def test_runs_with_other_labels_are_refused_naming_them(runs):
    out = mlxft("eval", runs["strong"], "--against", runs["three-labels"], "--data", runs["images"])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "error: three-labels and strong classify into different labels (only three-labels has 'green')" in out.stderr


def test_misuse_of_against_is_a_clear_error(runs):
    out = mlxft("eval", runs["strong"], "--against", runs["strong"])
    assert out.returncode == 1 and "that is" in out.stderr and "itself" in out.stderr
    out = mlxft("eval", "--against", runs["weak"])
    assert out.returncode == 1 and "--against compares two image-classify runs" in out.stderr
    out = mlxft("eval", runs["strong"], "--bench", "bench.jsonl")
    assert out.returncode == 1 and "--bench are for language models" in out.stderr
    out = mlxft("eval", runs["strong"], "--against", runs["root"] / "nowhere")
    assert out.returncode == 1 and "no image classifier here" in out.stderr and "Traceback" not in out.stderr
