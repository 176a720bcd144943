"""Slow checks on the real SmolLM2-135M-Instruct and real instruction data in ../shared/assets (skipped when absent)."""

import json

import pytest

from conftest import ASSETS
from mlxft.api import train

MODEL = ASSETS / "models" / "smollm2-135m-instruct-4bit"
SQL = ASSETS / "data" / "instructions" / "mlx_wikisql"  # {"text"} rows: table, question, SQL answer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MODEL.is_dir() or not SQL.is_dir(), reason="../shared/assets is not here")]


def test_lora_on_the_real_model_lowers_held_out_loss(tmp_path):
    run = train({
        "kind": "lm-lora", "model": str(MODEL), "output_dir": str(tmp_path), "seed": 0,
        "data": {"path": str(SQL), "format": "text", "max_seq_length": 160},
        "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": "all"},
        "train": {"steps": 20, "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 2, "eval_every": 20, "eval_batches": 10, "save_every": None, "log_every": 4},
    })
    assert run.ok, run.error
    evals = [json.loads(l) for l in (run.path / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "EvalReport"]
    started = next(json.loads(l) for l in (run.path / "metrics.jsonl").read_text().splitlines() if '"RunStarted"' in l)
    assert started["compute_dtype"] == "float32"  # the 4-bit checkpoint is dequantized for the CPU
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3, evals


def test_a_diverging_lora_on_the_real_model_fails_and_keeps_no_collapsed_adapter(tmp_path):
    """learning_rate=1e3 used to end `completed`, rc 0, loss at ln(vocab) and the collapsed weights shipped."""
    run = train({
        "kind": "lm-lora", "model": str(MODEL), "output_dir": str(tmp_path), "seed": 0,
        "data": {"path": str(SQL), "format": "text", "max_seq_length": 128},
        "lora": {"rank": 8, "alpha": 16, "layers": 4},
        "train": {"steps": 40, "batch_size": 2, "learning_rate": 1e3, "eval_every": 4, "eval_batches": 4, "save_every": 4, "log_every": 2},
    })
    assert run.status == "failed" and "diverged" in run.error, (run.status, run.error)
    assert not (run.path / "adapter").exists()
    evals = [json.loads(l) for l in (run.path / "metrics.jsonl").read_text().splitlines() if '"EvalReport"' in l]
    assert evals[0]["val_loss"] < 5 and evals[-1]["val_loss"] > 9  # from the base's loss to about ln(49152) = 10.8
