"""Shared fixtures: tiny models in Hugging Face layout, chat data sets, and the optional real assets."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# `mlxft train` without --ranks runs 2 data-parallel processes on a CPU (auto_ranks). The suite pins one process for the
# runs it starts (every subprocess inherits this); tests/test_distributed.py unsets it to test the default itself.
os.environ["MLXFT_RANKS"] = "1"

import mlxft  # noqa: E402,F401  (BLAS preload before mlx.core)
from tiny import build_model  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_model(request, tiny_llama, tiny_qwen) -> Path:
    return {"llama": tiny_llama, "qwen2": tiny_qwen}[request.param]


COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
ANIMALS = ["cat", "dog", "bird", "fish"]


def chat_row(i: int, rng: random.Random) -> dict:
    a, c = rng.choice(ANIMALS), rng.choice(COLORS)
    return {"messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"What color is the {a}?"},
        {"role": "assistant", "content": f"The {a} is {c}."},
        {"role": "user", "content": "Count?"},
        {"role": "assistant", "content": " ".join(["one", "two", "three", "four"][: 1 + i % 4])},
    ]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chat")
    rng = random.Random(0)
    write_jsonl(folder / "train.jsonl", [chat_row(i, rng) for i in range(64)])
    write_jsonl(folder / "valid.jsonl", [chat_row(i, rng) for i in range(16)])
    write_jsonl(folder / "test.jsonl", [chat_row(i, rng) for i in range(16)])
    return folder


def lm_recipe(model: Path, data_path: Path, out: Path, **sections) -> dict:
    """A small lm-lora recipe dict; `sections` update its parts (e.g. train={"steps": 5})."""
    recipe = {
        "kind": "lm-lora", "model": str(model), "output_dir": str(out), "seed": 0,
        "data": {"path": str(data_path), "format": "chat", "max_seq_length": 128},
        "lora": {"rank": 4, "alpha": 8, "targets": "all-linear"},
        "train": {"steps": 12, "batch_size": 4, "learning_rate": 1e-2, "eval_every": 6, "save_every": 6, "log_every": 1, "compile": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def wait_for_checkpoint(out: Path, at_least: int, timeout: float = 180.0) -> int | None:
    """Wait until a run under `out` has a complete checkpoint at step `at_least` or later, and return its step (None on
    timeout). Any later step counts: with `keep_checkpoints` the step-`at_least` one may be pruned between two looks."""
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [int(p.parent.name.split("-")[1]) for p in Path(out).glob("*/checkpoints/step-*/state.json")]
        if steps and max(steps) >= at_least:
            return max(steps)
        time.sleep(0.01)
    return None


def train_and_sigkill_at(recipe: dict, out: Path, step: int, cwd: Path, timeout: float = 180.0) -> Path:
    """Start `mlxft train` on `recipe` (its output_dir is `out`), SIGKILL the CLI and its training child as soon as a
    checkpoint at step `step` or later is complete, and return the run directory (the run must not have finished)."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    path = Path(cwd) / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.Popen([sys.executable, "-m", "mlxft", "train", str(path)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    seen = wait_for_checkpoint(out, step, timeout)
    os.killpg(proc.pid, signal.SIGKILL)
    _out, err = proc.communicate()
    assert seen is not None, f"no checkpoint at step {step} or later within {timeout:.0f} s: {err.decode(errors='replace')[-2000:]}"
    run_dir = next(Path(out).iterdir())
    assert '"RunFinished"' not in (run_dir / "metrics.jsonl").read_text(), "the run must have been killed before it finished"
    return run_dir


def assert_resumes_like(run_dir: Path, reference_dir: Path, steps: int, metrics: bool = True) -> None:
    """Resume a killed run with `mlxft train --resume` and check that every step's loss (and training metrics) equals the
    uninterrupted run's."""
    import subprocess
    import sys

    def step_reports(folder: Path) -> dict[int, dict]:
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        return {e["step"]: e for e in map(json.loads, lines) if e["event"] == "StepReport"}

    out = subprocess.run([sys.executable, "-m", "mlxft", "train", "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    expected, got = step_reports(reference_dir), step_reports(run_dir)
    assert sorted(got) == list(range(1, steps + 1))
    for step, e in expected.items():
        assert got[step]["loss"] == pytest.approx(e["loss"], rel=1e-6, abs=1e-7), f"step {step}"
        for k, v in (e["metrics"].items() if metrics else ()):
            assert got[step]["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), f"step {step} {k}"
