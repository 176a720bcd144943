"""The memory planner: estimates that track a measured peak, verdicts, cheaper suggestions, and the `mlxft models` table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
from mlxft.errors import MlxftError, ModelError
from mlxft.llm.catalogue import find_model, load_catalogue
from mlxft.recipe import recipe_from_dict
from mlxft.train.memory import (
    GB,
    MemoryEstimate,
    count_parameters,
    estimate_memory,
    format_models_table,
    format_plan,
    judge,
    machine_memory,
    plan_memory,
    recipe_settings,
)

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


def test_estimate_for_a_tiny_model_is_close_to_its_measured_peak():
    bench = _benchmark()
    config, settings = bench.CONFIGS["lora-4L"]
    measured = bench.measure_peak(config, settings)
    estimated = estimate_memory(config, **settings).arrays
    assert 0.9 * measured <= estimated <= 1.3 * measured, (estimated, measured)


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
    # A short batch peaks at the optimizer step: every gradient plus the vocabulary matrices' temporaries.
    vocab_matrices = 2 * 128256 * 4096 * 2
    assert e.gradients == e.weights + 3 * vocab_matrices


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
    code = "import sys, mlxft; from mlxft.train.memory import machine_memory; machine_memory(); print('mlx.core' in sys.modules)"
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
