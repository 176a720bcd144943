"""The memory planner: estimates that track a measured peak, verdicts, cheaper suggestions, and the `mlxft models` table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
from mlxft.backend import GB, machine_memory, memory_to_judge
from mlxft.errors import MlxftError, ModelError
from mlxft.llm.batch_shapes import BatchShape, DataLengths, candidate_batches, measure_train_lengths, padded_length
from mlxft.llm.catalogue import find_model, load_catalogue
from mlxft.llm.memory import (
    UPDATE_COPIES,
    UPDATE_VOCAB_COPIES,
    MemoryEstimate,
    count_parameters,
    estimate_memory,
    format_models_table,
    format_plan,
    judge,
    plan_memory,
    recipe_settings,
)
from mlxft.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
QWEN_7B = find_model("qwen2.5-7b-instruct").config()
LLAMA_8B = find_model("llama-3.1-8b-instruct").config()


def _benchmark():
    # The calibration script is importable on purpose: the test measures exactly what the benchmark does.
    spec = importlib.util.spec_from_file_location("memory_plan_benchmark", ROOT / "benchmarks" / "memory_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe(**fields):
    data = {"kind": "lm-lora", "model": "qwen2.5-7b-instruct", "data": {"path": "data"}, "dtype": "float32"}
    for key, value in fields.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return recipe_from_dict(data)


def test_estimate_for_a_tiny_model_is_close_to_the_peak_of_mlxfts_own_step():
    bench = _benchmark()
    estimated, measured, _ = bench.measure_tiny(*bench.TINY["lora-4L-prompt-masked"])
    assert 0.9 * measured <= estimated <= 1.2 * measured, (estimated, measured)


def test_breakdown_adds_up_to_the_total():
    e = estimate_memory(QWEN_7B, method="lora", rank=8, targets="all-linear", batch_size=2, seq_len=512)
    parts = e.weights + e.trainable + e.gradients + e.optimizer + e.activations + e.logits
    assert e.arrays == parts and e.total == parts + e.overhead
    assert e.parameters == count_parameters(QWEN_7B)


def test_qlora_needs_less_than_lora_for_a_7b():
    common = dict(method="lora", rank=8, targets=["q_proj", "v_proj"], batch_size=1, seq_len=512, compute_dtype="bfloat16")
    lora = estimate_memory(QWEN_7B, **common)
    qlora = estimate_memory(QWEN_7B, quant_bits=4, group_size=64, **common)
    assert qlora.total < lora.total
    # 4 bits plus a bf16 scale and bias per 64 weights is 0.5625 bytes a parameter, against 2.
    assert 0.25 < qlora.weights / lora.weights < 0.32


def test_full_finetuning_keeps_gradients_and_two_adam_states():
    e = estimate_memory(LLAMA_8B, method="full", batch_size=1, seq_len=256, compute_dtype="bfloat16")
    assert e.trainable == 0 and e.trainable_parameters == e.parameters
    assert e.optimizer == 2 * e.weights
    # A short batch peaks at the compiled optimizer step: every gradient, the new weights and Adam states being
    # built, and working copies of the vocabulary matrices; the activations are gone by then.
    vocab_matrices = 2 * 128256 * 4096 * 2
    assert e.gradients == int(e.weights + UPDATE_COPIES * e.weights + UPDATE_VOCAB_COPIES * vocab_matrices)
    assert e.activations == 0 and e.logits == 0


def test_lora_adapters_are_float32_and_sized_by_rank_and_targets():
    e = estimate_memory(LLAMA_8B, method="lora", rank=16, targets=["q_proj", "v_proj"], lora_layers=8, batch_size=1, seq_len=128)
    # q: 4096 -> 4096, v: 4096 -> 1024, in 8 layers.
    assert e.trainable_parameters == 8 * 16 * ((4096 + 4096) + (4096 + 1024))
    assert e.trainable == 4 * e.trainable_parameters and e.optimizer == 2 * e.trainable


def test_checkpointing_fewer_layers_and_shorter_sequences_each_save_activations():
    base = dict(method="lora", rank=8, targets="all-linear", batch_size=4, seq_len=1024)
    full = estimate_memory(LLAMA_8B, **base).activations
    assert estimate_memory(LLAMA_8B, **{**base, "grad_checkpoint": True}).activations < full / 4
    assert estimate_memory(LLAMA_8B, **{**base, "lora_layers": 8}).activations < full / 2
    assert estimate_memory(LLAMA_8B, **{**base, "seq_len": 512}).activations < full / 2
    assert estimate_memory(LLAMA_8B, **{**base, "gpu": True}).activations < full  # no attention scores kept


def test_a_7b_lora_in_float32_will_not_fit_24gb_and_qlora_is_suggested():
    plan = plan_memory(_recipe(), QWEN_7B, available=24 * GB)
    assert plan.verdict == "will-not-fit"
    qlora = [s for s in plan.suggestions if "kind=lm-qlora" in s.overrides]
    assert qlora and qlora[0].estimate.total < plan.estimate.total
    assert any(s.verdict == "fits" for s in plan.suggestions), format_plan(plan)
    text = format_plan(plan)
    assert "will-not-fit" in text and "kind=lm-qlora" in text and "weights" in text


def test_suggestions_carry_overrides_the_recipe_accepts():
    plan = plan_memory(_recipe(train__batch_size=8), QWEN_7B, available=24 * GB)
    for suggestion in plan.suggestions:
        recipe_from_dict(
            {"kind": "lm-lora", "model": "m", "data": {"path": "data"}}, overrides=list(suggestion.overrides)
        )


def test_a_small_run_fits_and_gets_no_suggestions():
    recipe = _recipe(model="smollm2-135m-instruct", train__batch_size=1, data={"path": "data", "max_seq_length": 256})
    plan = plan_memory(recipe, find_model("smollm2-135m-instruct").config(), available=64 * GB)
    assert plan.verdict == "fits" and plan.suggestions == ()
    assert "Verdict: fits" in format_plan(plan)


def test_verdicts_follow_the_share_of_available_memory():
    assert judge(79, 100) == "fits"
    assert judge(95, 100) == "tight"
    assert judge(101, 100) == "will-not-fit"


def test_recipe_settings_follow_the_recipe():
    recipe = _recipe(kind="lm-qlora", lora={"rank": 32, "layers": 4, "targets": "all-linear"}, train__grad_checkpoint=True)
    s = recipe_settings(recipe)
    assert (s["method"], s["quant_bits"], s["group_size"], s["rank"], s["lora_layers"]) == ("lora", 4, 64, 32, 4)
    assert s["targets"] == "all-linear" and s["grad_checkpoint"] and s["compute_dtype"] == "float32"


def test_auto_dtype_is_float32_on_the_cpu_backend():
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        pytest.skip("needs MLX's CPU backend as the default device")
    assert recipe_settings(_recipe(dtype="auto"))["compute_dtype"] == "float32"


def test_bad_settings_and_configs_are_user_errors():
    with pytest.raises(MlxftError):
        estimate_memory(QWEN_7B, method="full", quant_bits=4)
    with pytest.raises(MlxftError):
        estimate_memory(QWEN_7B, method="prefix-tuning")
    with pytest.raises(ModelError, match="hidden_size"):
        estimate_memory({"vocab_size": 10, "num_hidden_layers": 2, "num_attention_heads": 2})


def test_machine_memory_is_plausible_and_does_not_import_mlx():
    total, available = machine_memory()
    assert 0 < available <= total
    code = "import sys, mlxft; from mlxft.backend import machine_memory; machine_memory(); print('mlx.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_models_table_lists_every_catalogue_entry():
    entries = load_catalogue()
    table = format_models_table(entries, 24 * GB)
    lines = table.splitlines()
    for entry in entries:
        assert sum(line.startswith(entry.key + " ") for line in lines) == 1, entry.key
    assert "batch 4 x 512" in table and "rank 8" in table


def test_memory_estimate_is_a_frozen_record():
    e = estimate_memory(QWEN_7B, batch_size=1, seq_len=128)
    assert isinstance(e, MemoryEstimate)
    with pytest.raises(AttributeError):
        e.weights = 0


# -- planned from the data ---------------------------------------------------------------------------


def _lengths(lengths, trained=None, exact=True, rows=None) -> DataLengths:
    trained = trained or [n - 1 for n in lengths]
    return DataLengths("data", tuple(lengths), tuple(trained), rows or len(lengths), exact)


def test_fewer_trained_positions_make_a_proportionally_smaller_logits_term():
    common = dict(method="lora", batch_size=4, seq_len=512)
    all_trained = estimate_memory(LLAMA_8B, **common)
    half = estimate_memory(LLAMA_8B, **common, trained_tokens=1024)
    assert half.logits * 2 == pytest.approx(all_trained.logits, rel=1e-6)
    assert half.activations == all_trained.activations  # the body still runs on every position


def test_shorter_batches_shrink_the_activations_and_without_scores_in_proportion():
    common = dict(method="lora", batch_size=4, trained_tokens=512, gpu=True)  # a GPU keeps no attention scores
    long, short = (estimate_memory(LLAMA_8B, **common, seq_len=n) for n in (1024, 256))
    assert long.activations == pytest.approx(4 * short.activations, rel=0.01)


def test_the_plan_is_sized_by_the_longest_batch_and_says_so():
    recipe = _recipe(model="smollm2-135m-instruct", train__batch_size=4, train__steps=1000)
    config = find_model("smollm2-135m-instruct").config()
    data = _lengths([100] * 60 + [300, 310, 320, 330])  # the four longest fill the last bucket
    plan = plan_memory(recipe, config, available=64 * GB, data=data)
    assert (plan.settings["batch_size"], plan.settings["seq_len"], plan.settings["trained_tokens"]) == (4, 336, 1280)
    assert plan.basis == "planned from the data: batch 4 x 336 tokens (1,280 trained), the largest of 16 batches of 64 samples"
    ceiling = plan_memory(recipe, config, available=64 * GB)
    assert ceiling.basis.startswith("planned from max_seq_length=2048 (no data measured): batch 4 x 2048 tokens")
    assert plan.estimate.total < ceiling.estimate.total / 4
    assert plan.basis in format_plan(plan)


def test_a_short_run_is_planned_for_the_batches_it_trains_on():
    from mlxft.data.batches import epoch_order

    lengths = [20 + 7 * i for i in range(100)]
    data = _lengths(lengths)
    shapes, which = candidate_batches(data, 4, 3, 0, "bucket")  # 3 steps: the first 3 batches of epoch 0
    seen = epoch_order(lengths, 4, 0, 0, "bucket")[:3]
    assert max(s.length for s in shapes) == max(padded_length(max(lengths[i] for i in b)) for b in seen)
    assert which == "the largest of the 3 batches this run trains on"
    everything, _ = candidate_batches(data, 4, None, 0, "bucket")
    assert max(s.length for s in everything) == padded_length(max(lengths))


def test_ranks_are_planned_for_their_part_of_each_batch_and_judged_together():
    from mlxft.data.batches import epoch_order
    from mlxft.llm.batch_shapes import batch_shape

    lengths = [20 + 9 * i for i in range(37)]
    data = _lengths(lengths)
    shapes, _ = candidate_batches(data, 4, None, 0, "bucket", ranks=2)
    # what each rank computes: every 2nd sample of each global batch, as World.shard splits it
    parts = [batch_shape([lengths[i] for i in b[r::2]], [lengths[i] - 1 for i in b[r::2]]) for b in epoch_order(lengths, 4, 0, 0, "bucket")
             for r in range(2) if b[r::2]]
    assert max(s.batch for s in shapes) == 2 and max(s.length for s in shapes) == max(s.length for s in parts)
    assert all(any(p.batch <= s.batch and p.length <= s.length and p.trained <= s.trained for s in shapes) for p in parts)

    recipe = _recipe(model="smollm2-135m-instruct", train__batch_size=8, train__steps=1000)
    config = find_model("smollm2-135m-instruct").config()
    data = _lengths([300] * 64)
    one = plan_memory(recipe, config, available=64 * GB, data=data)
    two = plan_memory(recipe, config, available=64 * GB, data=data, ranks=2)
    assert two.settings["batch_size"] == 4 and one.settings["batch_size"] == 8
    assert two.estimate.total < one.estimate.total < two.total == 2 * two.estimate.total  # each rank holds its own model
    room = int((one.estimate.total + two.total) / 2 / 0.8)  # one process fits; two ranks together do not
    assert plan_memory(recipe, config, available=room, data=data).verdict == "fits"
    tight = plan_memory(recipe, config, available=room, data=data, ranks=2)
    assert tight.verdict != "fits"
    text = format_plan(tight)
    assert "batch 4 per rank (of 8, over 2 ranks) x 304 tokens" in text and "2 ranks" in text and "every rank fewer" in text
    assert f"{two.total / GB:.2f} GB" in format_plan(two)


def test_the_last_bucket_may_be_a_partial_batch():
    shapes, _ = candidate_batches(_lengths([50] * 8 + [400, 410]), 4, None, 0, "bucket")  # 10 samples: 4, 4, 2
    assert BatchShape(2, padded_length(410), 832) in shapes
    assert all(s.length <= padded_length(410) for s in shapes)


def test_a_smaller_max_seq_length_suggestion_truncates_the_measured_samples():
    recipe = _recipe(model="smollm2-135m-instruct", train__batch_size=8, train__steps=1000)
    config = find_model("smollm2-135m-instruct").config()
    data = _lengths([200] * 60 + [1800] * 4)
    plan = plan_memory(recipe, config, available=2 * GB, data=data)
    length = [s for s in plan.suggestions if s.overrides == ("data.max_seq_length=900",)]
    assert length and "4 of 64 samples are longer and get truncated" in length[0].change
    assert length[0].estimate.total < plan.estimate.total


def test_unmeasurable_data_falls_back_to_max_seq_length_and_says_why(tmp_path):
    recipe = _recipe(model="smollm2-135m-instruct", data={"path": str(tmp_path / "nowhere"), "max_seq_length": 512})
    data = measure_train_lengths(recipe)
    assert data.problem == f"no data at {tmp_path / 'nowhere'}"
    plan = plan_memory(recipe, find_model("smollm2-135m-instruct").config(), available=64 * GB, data=data)
    assert plan.basis.startswith(f"planned from max_seq_length=512 (no data at {tmp_path / 'nowhere'})")


def test_measured_lengths_are_what_training_encodes(tiny_llama, chat_data):
    from mlxft.data.encode import SampleEncoder, encode_records
    from mlxft.data.sources import read_split
    from mlxft.llm.loading import load_tokenizer

    recipe = recipe_from_dict({"kind": "lm-lora", "model": str(tiny_llama), "data": {"path": str(chat_data), "max_seq_length": 40}})
    data = measure_train_lengths(recipe)
    d = recipe.data
    encoded, _ = encode_records(read_split(d.path, "train"), SampleEncoder(load_tokenizer(str(tiny_llama)), d), d.format, d.max_seq_length, d.overlong)
    assert data.exact and data.problem is None
    assert data.lengths == tuple(len(e) for e in encoded) and data.trained == tuple(e.trained_tokens for e in encoded)
    assert max(data.lengths) <= 40  # after the length policy
    assert measure_train_lengths(recipe) is data  # kept: re-planning a changed batch size tokenizes nothing


def test_a_bad_row_is_named_as_the_reason_the_plan_falls_back(tiny_llama, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "fine"}\n')
    recipe = recipe_from_dict({"kind": "lm-lora", "model": str(tiny_llama), "data": {"path": str(tmp_path), "format": "chat"}})
    data = measure_train_lengths(recipe)
    assert data.problem and "bad sample" in data.problem and not data.lengths


def test_a_large_split_is_sampled_longest_rows_first(tiny_llama, tmp_path, monkeypatch):
    import mlxft.llm.batch_shapes as shapes

    monkeypatch.setattr(shapes, "EXACT_ROWS", 40)
    monkeypatch.setattr(shapes, "LONGEST_ROWS", 8)
    monkeypatch.setattr(shapes, "SAMPLE_ROWS", 10)
    rows = [{"text": "red green blue " * (1 + i % 7)} for i in range(200)]
    rows[137] = {"text": "red green blue " * 30}  # the longest, far from the start
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_from_dict({"kind": "lm-lora", "model": str(tiny_llama), "data": {"path": str(tmp_path), "format": "text"}})
    data = measure_train_lengths(recipe)
    assert not data.exact and data.rows == 200 and data.samples == 18
    assert max(data.lengths) == data.lengths[0]  # row 137, kept as the longest by size
    plan = plan_memory(recipe, find_model("smollm2-135m-instruct").config(), available=64 * GB, data=data)
    assert "estimated from the 8 longest of 200 rows by size and 10 drawn at random" in plan.basis


@pytest.mark.slow
def test_smollm2_at_batch_4_on_real_chat_data_fits_a_16gb_machine():
    # The case: planned from max_seq_length it read ~37.6 GB, will-not-fit; its real batches need far less.
    from conftest import ASSETS

    model, data_path = ASSETS / "models" / "smollm2-135m-instruct-4bit", ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"
    if not model.is_dir():
        pytest.skip("needs the real assets")
    recipe = recipe_from_dict({"kind": "lm-lora", "model": str(model), "data": {"path": str(data_path)}, "dtype": "float32", "train": {"batch_size": 4}})
    config = json.loads((model / "config.json").read_text())
    assert plan_memory(recipe, config, available=16 * GB).verdict == "will-not-fit"
    plan = plan_memory(recipe, config, available=16 * GB, data=measure_train_lengths(recipe))
    assert plan.verdict == "fits", format_plan(plan)
    assert plan.basis.startswith("planned from the data: batch 4 x 752 tokens")


def test_a_quantized_checkpoint_is_planned_as_load_model_treats_it():
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        pytest.skip("needs MLX's CPU backend as the default device")
    config = {**find_model("smollm2-135m-instruct").config(), "quantization": {"bits": 4, "group_size": 32}}
    assert recipe_settings(_recipe(), config)["quant_bits"] is None  # dequantized on the CPU
    qlora = recipe_settings(_recipe(kind="lm-qlora"), config)
    assert (qlora["quant_bits"], qlora["group_size"]) == (4, 32)  # kept as saved, not re-quantized


def test_one_gb_is_a_billion_bytes_and_memory_gb_judges_every_plan(monkeypatch):
    monkeypatch.setenv("MLXFT_MEMORY_GB", "16")
    assert GB == 10**9
    assert memory_to_judge() == (16 * 10**9, 16 * 10**9)
    plan = plan_memory(_recipe(), QWEN_7B)
    assert plan.available == 16 * 10**9 and "of 16.00 GB available" in format_plan(plan)
    monkeypatch.setenv("MLXFT_MEMORY_GB", "nan")
    with pytest.raises(MlxftError, match="more than 0 GB"):
        memory_to_judge()


def test_train_warns_only_when_even_the_datas_real_batches_do_not_fit(tiny_llama, chat_data, tmp_path, monkeypatch, capsys):
    from conftest import lm_recipe

    from mlxft.cli import _warn_if_it_will_not_fit

    recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path / "runs", data={"max_seq_length": 2048}))
    config = json.loads((tiny_llama / "config.json").read_text())
    ceiling = plan_memory(recipe, config, available=GB).estimate.total
    measured = plan_memory(recipe, config, available=GB, data=measure_train_lengths(recipe)).estimate.total
    assert measured < 0.7 * ceiling
    monkeypatch.setenv("MLXFT_MEMORY_GB", str((measured / 0.75) / GB))  # the ceiling would not fit; the data fits
    _warn_if_it_will_not_fit(recipe)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MLXFT_MEMORY_GB", str(0.9 * measured / GB))
    _warn_if_it_will_not_fit(recipe)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: this run is estimated not to fit") and "planned from the data: batch 4 x " in warning
