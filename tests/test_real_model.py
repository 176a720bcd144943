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


CHAT = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"  # {"messages"}: alpaca instructions and reference answers


def _short_alpaca_rows(tokenizer, n: int, max_answer_tokens: int) -> list[tuple[str, str]]:
    """The first n single-turn rows whose reference answer is at most max_answer_tokens long (keeps a CPU run short)."""
    rows = []
    for line in (CHAT / "train.jsonl").read_text().splitlines():
        m = json.loads(line)["messages"]
        if len(m) == 2 and len(tokenizer.encode(m[1]["content"])) <= max_answer_tokens and len(tokenizer.encode(m[0]["content"])) <= 64:
            rows.append((m[0]["content"], m[1]["content"]))
            if len(rows) == n:
                return rows
    return rows


@pytest.mark.skipif(not CHAT.is_dir(), reason="../shared/assets is not here")
def test_dpo_on_the_real_model_learns_to_prefer_reference_answers_over_its_own(tmp_path):
    """The issue's proof: chosen = the alpaca reference answer, rejected = what the base model answers (greedy, 40
    tokens) on 40 short prompts: 24 train, the rest (14 here) held out. DPO raises the validation reward margin, and on the held-out pairs the
    tuned model gives the reference answer the higher summed log-prob more often than the base does (adapter off)."""
    import numpy as np

    from mlxft.data.pairs import PairEncoder, encode_pairs
    from mlxft.data.sources import Record
    from mlxft.eval.compare import generate_answers
    from mlxft import lora
    from mlxft.llm import adapters as A
    from mlxft.llm.generate import render_prompt
    from mlxft.llm.loading import load_model
    from mlxft.llm.preference import make_logps, pair_arrays
    from mlxft.recipe import DataSection

    loaded = load_model(str(MODEL), dtype="float32")
    rows = _short_alpaca_rows(loaded.tokenizer, 40, max_answer_tokens=48)
    assert len(rows) == 40
    own = generate_answers(loaded.model, loaded.tokenizer, [render_prompt(loaded.tokenizer, prompt=p) for p, _ in rows], max_tokens=40, batch_size=16)
    pairs = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": ref}],
              "rejected": [{"role": "assistant", "content": mine}]} for (p, ref), mine in zip(rows, own) if mine and mine != ref]
    assert len(pairs) >= 38, own
    data = tmp_path / "pairs"
    data.mkdir()
    train_pairs, held_out = pairs[:24], pairs[24:]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_pairs))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out))

    run = train({
        "kind": "lm-dpo", "model": str(MODEL), "output_dir": str(tmp_path / "runs"), "seed": 0,
        "data": {"path": str(data), "max_seq_length": 160},
        "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": 8},
        "preference": {"beta": 0.1},
        "train": {"steps": 30, "batch_size": 4, "learning_rate": 2e-3, "schedule": "constant", "warmup_steps": 2, "eval_every": 30, "save_every": None, "log_every": 5},
    })
    assert run.ok, run.error
    evals = [json.loads(l) for l in (run.path / "metrics.jsonl").read_text().splitlines() if '"EvalReport"' in l]
    first, last = evals[0]["metrics"], evals[-1]["metrics"]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-3)  # step 0: the policy is the reference
    assert last["rewards/margins"] > first["rewards/margins"] + 0.3, [e["metrics"] for e in evals]

    # Held-out preference, one model: summed answer log-probs with the trained adapter on, then off (the base).
    A.load_adapter(loaded.model, run.adapter_path)
    encoder = PairEncoder(loaded.tokenizer, DataSection(path=str(data), max_seq_length=160))
    encoded, _ = encode_pairs([Record(str(data / "valid.jsonl"), i + 1, r) for i, r in enumerate(held_out)], encoder, 160, "truncate")
    arrays, _ = pair_arrays(encoded, loaded.tokenizer.pad_token_id or 0)
    logps = make_logps(loaded.model, loaded.model_type)
    tuned = np.array(logps(loaded.model, *arrays))
    lora.set_adapters_enabled(loaded.model, False)
    base = np.array(logps(loaded.model, *arrays))
    n = len(encoded)
    tuned_prefers, base_prefers = int((tuned[:n] > tuned[n:]).sum()), int((base[:n] > base[n:]).sum())
    print(f"held-out pairs preferring the reference answer: tuned {tuned_prefers}/{n}, base {base_prefers}/{n}; last eval {last}")
    assert tuned_prefers > base_prefers, (tuned_prefers, base_prefers, tuned.round(1).tolist(), base.round(1).tolist())
