"""Preference tuning (lm-dpo, lm-orpo): the losses by hand, the reference is the starting model, masks cover answers,
a run learns its pairs, and a run killed with SIGKILL resumes to the same metrics step for step."""

import json
import math
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from conftest import ANIMALS, COLORS, assert_resumes_like, train_and_sigkill_at, write_jsonl
from mlxft.api import train
from mlxft.data.pairs import PairEncoder, PairStats, encode_pairs
from mlxft.data.sources import Record
from mlxft.errors import DataError, RecipeError
from mlxft import lora
from mlxft.llm import adapters as A
from mlxft.llm.loading import load_model
from mlxft.llm.preference import REFERENCE_FILE, PreferenceJob, dpo_loss, log_sigmoid, orpo_loss
from mlxft.recipe import DataSection, recipe_from_dict

TRUE_COLOR = dict(zip(ANIMALS, COLORS))  # a preference the model can learn and generalise: each animal's one colour


def pair_row(rng: random.Random) -> dict:
    a = rng.choice(ANIMALS)
    wrong = rng.choice([c for c in COLORS if c != TRUE_COLOR[a]])
    return {"prompt": [{"role": "user", "content": f"What color is the {a}?"}],
            "chosen": [{"role": "assistant", "content": f"The {a} is {TRUE_COLOR[a]}."}],
            "rejected": [{"role": "assistant", "content": f"The {a} is {wrong}."}]}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    rng = random.Random(0)
    write_jsonl(folder / "train.jsonl", [pair_row(rng) for _ in range(32)])
    write_jsonl(folder / "valid.jsonl", [pair_row(rng) for _ in range(8)])
    return folder


def dpo_recipe(model, data_path, out, **sections) -> dict:
    recipe = {
        "kind": "lm-dpo", "model": str(model), "output_dir": str(out), "seed": 0,
        "data": {"path": str(data_path), "max_seq_length": 64},
        "lora": {"rank": 4, "alpha": 8, "targets": "all-linear"},
        "train": {"steps": 16, "batch_size": 4, "learning_rate": 1e-2, "eval_every": 8, "save_every": 8, "log_every": 1, "compile": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


# -- the losses, by hand --------------------------------------------------------------------------------


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_dpo_sigmoid_cdpo_and_ipo_losses_equal_a_hand_computation():
    pc, pr, rc, rr = -10.0, -14.0, -11.0, -12.0  # h = (pc - rc) - (pr - rr) = 1 - (-2) = 3
    args = [mx.array([v]) for v in (pc, pr, rc, rr)]
    beta = 0.1
    losses, chosen, rejected = dpo_loss(*args, beta=beta)
    assert losses.item() == pytest.approx(-math.log(_sig(0.3)), rel=1e-6)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.2)
    losses, _, _ = dpo_loss(*args, beta=beta, label_smoothing=0.2)
    assert losses.item() == pytest.approx(-0.8 * math.log(_sig(0.3)) - 0.2 * math.log(_sig(-0.3)), rel=1e-6)
    nc, nr = mx.array([4.0]), mx.array([2.0])  # IPO: averaged log-probs, h = (-2.5 + 2.75) - (-7 + 6) = 1.25
    losses, _, _ = dpo_loss(*args, beta=beta, kind="ipo", lengths=(nc, nr))
    assert losses.item() == pytest.approx((1.25 - 1 / (2 * beta)) ** 2, rel=1e-6)


def test_orpo_loss_equals_a_hand_computation():
    pc, pr, nc, nr = mx.array([-2.0]), mx.array([-6.0]), mx.array([4.0]), mx.array([3.0])
    losses, nll, log_odds, ac, ar = orpo_loss(pc, pr, nc, nr, beta=0.25)
    a, b = -0.5, -2.0
    odds = (a - math.log(1 - math.exp(a))) - (b - math.log(1 - math.exp(b)))
    assert log_odds.item() == pytest.approx(odds, rel=1e-5) and nll.item() == pytest.approx(0.5)
    assert losses.item() == pytest.approx(0.5 - 0.25 * math.log(_sig(odds)), rel=1e-5)


def test_log_sigmoid_is_finite_far_out_and_has_its_true_gradient_at_zero():
    x = mx.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    values, grads = log_sigmoid(x), mx.grad(lambda v: log_sigmoid(v).sum())(x)
    assert np.isfinite(np.array(values)).all() and values[0].item() == pytest.approx(-1e4)
    # DPO starts exactly at 0 (policy = reference): a zero gradient there would never move the model.
    assert grads[2].item() == pytest.approx(0.5) and grads[0].item() == pytest.approx(1.0)
    # ORPO with an answer the model is sure of (mean log-prob ~0) stays finite.
    losses, *_ = orpo_loss(mx.array([0.0]), mx.array([-3.0]), mx.array([3.0]), mx.array([3.0]), beta=0.1)
    assert math.isfinite(losses.item())


# -- data: masks, truncation ----------------------------------------------------------------------------


def _encoder(model_dir, **data):
    loaded = load_model(str(model_dir))
    return loaded, PairEncoder(loaded.tokenizer, DataSection(path="x", **data))


def test_masks_cover_the_answer_tokens_only_and_the_prompt_renders_like_sft(tiny_llama):
    loaded, enc = _encoder(tiny_llama)
    row = {"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": "What color is the cat?"}],
           "chosen": [{"role": "assistant", "content": "The cat is red."}], "rejected": [{"role": "assistant", "content": "The cat is blue."}]}
    chosen, rejected, _ = enc.encode(Record("f.jsonl", 1, row))
    hf = loaded.tokenizer._tokenizer
    for e, answer in ((chosen, "The cat is red."), (rejected, "The cat is blue.")):
        trained = hf.decode(e.ids[e.mask].tolist())
        assert trained == f"{answer}<|im_end|>\n"  # the earlier assistant turn ("Hello!") is prompt, not trained
        full = hf.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": answer}], tokenize=False)
        assert hf.decode(e.ids.tolist()) == full
    n = int(np.flatnonzero(chosen.mask)[0])
    assert (chosen.ids[:n] == rejected.ids[:n]).all()  # one prompt, rendered once per answer, identically


def test_over_long_pairs_lose_the_prompts_start_and_are_counted(tiny_llama):
    loaded, enc = _encoder(tiny_llama)
    long_prompt = " ".join(["one two three four five six seven eight nine ten"] * 12)
    row = {"prompt": long_prompt, "chosen": "red", "rejected": "blue green"}
    pair = enc.encode(Record("f.jsonl", 1, row))
    stats = PairStats()
    fitted = enc.fit(pair, "f.jsonl:1", 32, "truncate", stats)
    assert stats.prompt_truncated == 1 and stats.answer_truncated == 0
    for before, after in ((pair[0], fitted.chosen), (pair[1], fitted.rejected)):
        assert len(after) <= 32
        assert (after.ids[after.mask] == before.ids[before.mask]).all()  # the answers are whole
        assert (after.ids[: pair[2]] == before.ids[: pair[2]]).all() and pair[2] > 0  # the template's opening stays
    dropped, stats = encode_pairs([Record("f.jsonl", 1, row)], enc, 32, "drop")
    assert dropped == [] and stats.dropped_overlong == 1 and "f.jsonl:1" in stats.dropped_where[0]


def test_sft_rows_given_to_dpo_are_refused_naming_the_line(tiny_llama):
    _, enc = _encoder(tiny_llama)
    rows = [Record("data/train.jsonl", 3, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})]
    with pytest.raises(DataError, match=r"data/train.jsonl:3: not a preference row \(it looks like chat\)"):
        encode_pairs(rows, enc, 64, "truncate")


def test_recipe_rules_for_preference_kinds(tiny_llama, pairs, tmp_path):
    with pytest.raises(RecipeError, match="trains on preference pairs"):
        recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path, data={"format": "chat"}))
    with pytest.raises(RecipeError, match="read by lm-dpo and lm-orpo only"):
        recipe_from_dict({**dpo_recipe(tiny_llama, pairs, tmp_path), "kind": "lm-lora", "preference": {"beta": 0.2}})
    with pytest.raises(RecipeError, match="full fine-tuning has no adapter to switch off"):
        recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path, preference={"reference": "live", "adapter": "full"}))
    assert recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path, preference={"adapter": "dora"})).method == "dora"


# -- the reference is the starting model ------------------------------------------------------------------


def test_reference_logps_with_the_adapter_off_equal_the_base_models(tiny_llama, pairs, tmp_path):
    recipe = recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path, preference={"reference": "live"}))
    job = PreferenceJob(recipe)
    for _, m in job.model.named_modules():  # a trained-looking adapter: the policy now differs from the base
        if isinstance(m, lora.LoRALinear):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.2
    batch = job.train_batch([0, 1, 2])
    _, _, metrics = job.loss(job.model, *batch.arrays)
    policy = job._logps(job.model, *batch.arrays[:4])

    base = PreferenceJob(recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path, lora={"rank": 2, "targets": ["q_proj"]})))
    lora.set_adapters_enabled(base.model, False)  # a fresh model with its adapters off: the base itself
    reference = base._logps(base.model, *batch.arrays[:4])
    assert not np.allclose(np.array(policy), np.array(reference), atol=1e-3)
    beta = recipe.preference.beta
    assert metrics["rewards/chosen"].item() == pytest.approx(beta * float((policy[:3] - reference[:3]).mean()), rel=1e-4, abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(beta * float((policy[3:] - reference[3:]).mean()), rel=1e-4, abs=1e-6)


def test_precomputed_reference_is_cached_and_not_recomputed_on_resume(tiny_llama, pairs, tmp_path):
    run = train(dpo_recipe(tiny_llama, pairs, tmp_path, train={"steps": 4, "save_every": 2, "eval_every": None}))
    assert run.ok, run.error
    cached = run.path / "cache" / REFERENCE_FILE
    assert cached.is_file()
    logs = [e["message"] for e in events(run.path, "LogMessage")]
    assert any("computing the reference log-probs of 32 + 8 pairs" in m for m in logs)
    before = cached.stat().st_mtime_ns
    import shutil

    from mlxft.train.process import resume_run

    for folder in sorted((run.path / "checkpoints").iterdir())[1:]:
        shutil.rmtree(folder)  # as if it died after step 2
    resumed = resume_run(run.path)
    assert resumed.ok, resumed.error
    logs = [e["message"] for e in events(run.path, "LogMessage")]
    assert any("read from reference_logps.safetensors" in m for m in logs)
    assert sum("computing the reference" in m for m in logs) == 1 and cached.stat().st_mtime_ns == before


# -- runs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["precompute", "live"])
def test_dpo_raises_reward_accuracy_and_margin_on_its_pairs(tiny_llama, pairs, tmp_path, reference):
    run = train(dpo_recipe(tiny_llama, pairs, tmp_path, preference={"reference": reference}, train={"steps": 24, "eval_every": 12, "compile": True}))
    assert run.ok, run.error
    evals = events(run.path, "EvalReport")
    first, last = evals[0]["metrics"], evals[-1]["metrics"]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # step 0: the policy is the reference
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["rewards/accuracies"] >= 0.75 and last["rewards/accuracies"] > first["rewards/accuracies"] + 0.25  # a fraction of the 8 held-out pairs
    assert last["loss"] < math.log(2) - 0.2
    steps = events(run.path, "StepReport")
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"} <= set(steps[-1]["metrics"])
    assert (run.adapter_path / A.ADAPTER_WEIGHTS).is_file()


def test_orpo_raises_the_chosen_answers_likelihood_and_the_odds_ratio(tiny_llama, pairs, tmp_path):
    run = train(dpo_recipe(tiny_llama, pairs, tmp_path, kind="lm-orpo", train={"steps": 24, "eval_every": 12}))
    assert run.ok, run.error
    evals = events(run.path, "EvalReport")
    first, last = evals[0]["metrics"], evals[-1]["metrics"]
    assert last["nll_loss"] < first["nll_loss"] - 1.0
    assert last["log_odds_chosen"] > first["log_odds_chosen"] + 0.25 and last["rewards/accuracies"] >= 0.75
    assert not (run.path / "cache" / REFERENCE_FILE).exists()  # ORPO has no reference


def test_dpo_on_top_of_an_sft_run_keeps_the_sft_adapter_as_its_reference(tiny_llama, chat_data, pairs, tmp_path):
    from conftest import lm_recipe

    sft = train(lm_recipe(tiny_llama, chat_data, tmp_path / "sft", train={"steps": 6, "save_every": None}))
    assert sft.ok, sft.error
    run = train(dpo_recipe(tiny_llama, pairs, tmp_path / "dpo", init_adapter=str(sft.path), lora={"rank": 16}, train={"steps": 8, "eval_every": 8}))
    assert run.ok, run.error
    logs = [e["message"] for e in events(run.path, "LogMessage")]
    assert any("starting from the adapter in" in m and "lora section is not used" in m for m in logs)
    first = events(run.path, "EvalReport")[0]["metrics"]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # the reference is the SFT model, not the base
    cfg = json.loads((run.adapter_path / A.ADAPTER_CONFIG).read_text())
    assert cfg["lora_parameters"]["rank"] == 4 and cfg["mlxft"]["init_adapter"] == str(sft.path)


def test_dpo_run_killed_with_sigkill_resumes_to_the_same_metrics(tiny_llama, pairs, tmp_path):
    steps = 120
    sections = dict(train={"steps": steps, "save_every": 10, "eval_every": None, "log_every": 1, "keep_checkpoints": 3}, lora={"dropout": 0.1})
    reference = train(dpo_recipe(tiny_llama, pairs, tmp_path / "ref", **sections))
    assert reference.ok, reference.error
    run_dir = train_and_sigkill_at(dpo_recipe(tiny_llama, pairs, tmp_path / "killed", **sections), tmp_path / "killed", 10, tmp_path)
    assert_resumes_like(run_dir, reference.path, steps)


def test_data_validate_measures_preference_pairs_as_training_sees_them(tiny_llama, pairs):
    from mlxft.data.validate import validate_data

    loaded = load_model(str(tiny_llama))
    report = validate_data(pairs, tokenizer=loaded.tokenizer, max_seq_length=30)
    train = report.splits["train"]
    assert report.format == "preference" and train.over_max_length > 0 and train.truncated == train.over_max_length
    report = validate_data(pairs, tokenizer=loaded.tokenizer, max_seq_length=30, overlong="drop")
    assert report.splits["train"].dropped_overlong == train.over_max_length


def test_plan_sizes_a_dpo_batch_as_both_answers_of_every_pair(tiny_llama, pairs, tmp_path):
    import json as _json

    from mlxft.llm.batch_shapes import measure_train_lengths
    from mlxft.llm.memory import plan_memory

    recipe = recipe_from_dict(dpo_recipe(tiny_llama, pairs, tmp_path))
    config = _json.loads((Path(tiny_llama) / "config.json").read_text())
    plan = plan_memory(recipe, config, available=10**12, data=measure_train_lengths(recipe))
    assert plan.settings["batch_size"] == 2 * recipe.train.batch_size
    assert "4 pairs (8 sequences)" in plan.basis and "planned from the data" in plan.basis
