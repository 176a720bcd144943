"""Adapter contracts over (architecture, method): identity at init, fused == unfused, round-trips, mlx-lm compatibility."""

import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from mlxft import lora
from mlxft.llm import adapters as A
from mlxft.llm.loading import load_model

TOKENS = mx.array([[1, 5, 9, 33, 70, 2, 8, 100, 41, 7]])


def _adapted(path, method, targets="all-linear", layers=2, seed=0):
    loaded = load_model(str(path))
    base_out = loaded.model(TOKENS)
    keys = A.resolve_target_keys(loaded.model, targets, layers)
    mx.random.seed(seed)
    A.apply_adapters(loaded.model, method, rank=4, scale=2.0, dropout=0.0, keys=keys, num_layers=layers)
    cfg = A.adapter_config(method, layers, 4, 2.0, 0.0, keys, alpha=8)
    return loaded, base_out, cfg


def _perturb(model, seed=1):
    """Give lora_b (and DoRA's m) non-trivial values, as after some training."""
    mx.random.seed(seed)
    for _, m in model.named_modules():
        if isinstance(m, lora.LoRALinear):
            m.lora_b = 0.05 * mx.random.normal(m.lora_b.shape)
            if isinstance(m, lora.DoRALinear):
                m.m = m.m * (1 + 0.1 * mx.random.normal(m.m.shape))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_output_equals_base_at_init(tiny_model, method):
    loaded, base_out, _ = _adapted(tiny_model, method)
    assert mx.allclose(loaded.model(TOKENS), base_out, atol=1e-5).item()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_fused_model_matches_unfused_output(tiny_model, method):
    loaded, base_out, _ = _adapted(tiny_model, method)
    _perturb(loaded.model)
    adapted = loaded.model(TOKENS)
    assert not mx.allclose(adapted, base_out, atol=1e-3).item(), "the perturbed adapter must change the output"
    lora.fuse_adapters(loaded.model)
    assert not any(isinstance(m, lora.LoRALinear) for _, m in loaded.model.named_modules())
    assert mx.allclose(loaded.model(TOKENS), adapted, atol=1e-4).item()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_switching_adapters_off_gives_the_base_output(tiny_model, method):
    loaded, base_out, _ = _adapted(tiny_model, method)
    _perturb(loaded.model)
    lora.set_adapters_enabled(loaded.model, False)
    assert mx.allclose(loaded.model(TOKENS), base_out, atol=1e-5).item()
    lora.set_adapters_enabled(loaded.model, True)
    assert not mx.allclose(loaded.model(TOKENS), base_out, atol=1e-3).item()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_saved_adapter_round_trips_and_mlx_lm_loads_it(tiny_model, method, tmp_path):
    from mlx_lm.utils import load as mlx_lm_load

    loaded, _, cfg = _adapted(tiny_model, method)
    _perturb(loaded.model)
    expected = loaded.model(TOKENS)
    A.save_adapter(loaded.model, tmp_path / "adapter", cfg)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["lora_parameters"]["scale"] == 2.0 and saved["fine_tune_type"] == method

    again = load_model(str(tiny_model))
    A.load_adapter(again.model, tmp_path / "adapter")
    assert mx.allclose(again.model(TOKENS), expected, atol=1e-5).item()

    # mlx-lm builds its own LoRA/DoRA layers from our adapter_config.json and loads our weights.
    model, _ = mlx_lm_load(str(tiny_model), adapter_path=str(tmp_path / "adapter"))
    model.update(nn.utils.tree_map(lambda p: p.astype(mx.float32), model.parameters()))
    assert mx.allclose(model(TOKENS), expected, atol=1e-4).item()


def test_trainable_count_matches_rank_times_dims(tiny_llama):
    loaded, _, _ = _adapted(tiny_llama, "lora", targets=["q_proj", "v_proj"], layers=1)
    args = loaded.config
    hidden, kv = args["hidden_size"], args["num_key_value_heads"] * args["hidden_size"] // args["num_attention_heads"]
    expected = 4 * (hidden + hidden) + 4 * (hidden + kv)  # q: r*(in+out), v: r*(in+out_kv)
    trainable = sum(v.size for _, v in tree_flatten(loaded.model.trainable_parameters()))
    assert trainable == expected


def test_unknown_targets_name_the_choices(tiny_llama):
    from mlxft.errors import ModelError

    loaded = load_model(str(tiny_llama))
    with pytest.raises(ModelError) as err:
        A.resolve_target_keys(loaded.model, ["qproj"], 2)
    assert "q_proj" in err.value.hint
