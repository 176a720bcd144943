"""Packed (padding-free) SFT batches: the same loss and gradients as padded ones, and no attention across samples."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from conftest import lm_recipe
from mlxft.api import train
from mlxft.data.batches import collate, pack, pack_layout, pack_rows
from mlxft.data.encode import Encoded, SampleEncoder, encode_records
from mlxft.data.sources import read_split
from mlxft.llm.loading import load_model
from mlxft.llm.objective import make_loss
from mlxft.llm.packing import attention_cost, packed_caches
from mlxft.recipe import DataSection, recipe_from_dict


def _sample(ids, trained_from=1):
    ids = np.asarray(ids, dtype=np.int32)
    mask = np.zeros(len(ids), dtype=bool)
    mask[trained_from:] = True
    return Encoded(ids, mask)


def test_first_fit_decreasing_fills_rows_and_keeps_batch_order_inside_them():
    rows = pack_rows([5, 3, 8, 2, 4], 10)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 8, 2, 4][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3 and all(r == sorted(r) for r in rows)


def test_a_packed_row_holds_each_sample_shifted_with_its_own_targets_and_segment():
    a, b = _sample([10, 11, 12, 13], trained_from=2), _sample([20, 21, 22])
    p = pack([a, b], pad_id=0, max_row=64)
    assert p.inputs.shape == (1, 8)  # 3 + 2 positions, rounded up to 8
    assert p.inputs[0, :5].tolist() == [10, 11, 12, 20, 21] and p.targets[0, :5].tolist() == [11, 12, 13, 21, 22]
    assert p.segments[0].tolist() == [0, 0, 0, 1, 1, -1, -1, -1]
    # trained targets: 12->13 (a's mask from index 2: targets 12, 13) and both of b's
    assert p.positions[: p.trained_tokens].tolist() == [1, 2, 3, 4] and p.trained_tokens == a.trained_tokens + b.trained_tokens
    assert p.real_tokens == 5 and p.padded_tokens == 8


def test_the_row_length_trades_padding_against_attention_cost():
    sizes = [100, 90, 80, 40, 30]
    length, rows = pack_layout(sizes, 2048, 0.0)  # attention free: one row holds everything
    assert len(rows) == 1 and length == 344
    length, rows = pack_layout(sizes, 2048, 1.0)  # attention dear: rows no longer than the longest sample
    assert length == 104 and len(rows) == 4
    length, rows = pack_layout(sizes, 128, 0.0)  # never longer than max_row (unless one sample is)
    assert length <= 128
    assert pack_layout([300], 128, 0.0)[0] == 304


def _samples(model_dir, chat_data, n=5):
    loaded = load_model(str(model_dir))
    samples, _ = encode_records(read_split(chat_data, "train")[:n], SampleEncoder(loaded.tokenizer, DataSection(path="x")), "chat", 128, "truncate")
    return loaded, samples


def _arrays(b, packed):
    arrays = [mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights)]
    return arrays + [mx.array(b.segments)] if packed else arrays


def test_packed_loss_and_gradients_equal_padded_ones(tiny_model, chat_data):
    loaded, samples = _samples(tiny_model, chat_data)
    loss_fn = make_loss(loaded.model, loaded.model_type)
    padded, packed = collate(samples), pack(samples, max_row=2048)
    assert packed.inputs.shape[0] == 1 and packed.padded_tokens < padded.padded_tokens
    grad = nn.value_and_grad(loaded.model, lambda m, *a: loss_fn(m, *a)[0])
    l1, g1 = grad(loaded.model, *_arrays(padded, False))
    l2, g2 = grad(loaded.model, *_arrays(packed, True))
    assert l2.item() == pytest.approx(l1.item(), rel=1e-5)
    for (k, a), (_, b) in zip(tree_flatten(g1), tree_flatten(g2)):
        assert np.allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-5), k


def test_no_attention_crosses_a_sample_boundary(tiny_model, chat_data):
    loaded, samples = _samples(tiny_model, chat_data, n=3)
    body = loaded.model.model
    p = pack(samples, max_row=2048, attention_cost=0.0)
    assert p.inputs.shape[0] == 1, "one row holds all three"
    seg = mx.array(p.segments)
    before = np.array(body(mx.array(p.inputs), cache=packed_caches(body, seg)))[0]
    first, others = p.segments[0] == 0, p.segments[0] > 0
    changed = p.inputs.copy()
    changed[0, first] = (changed[0, first] + 7) % 300  # another first sample, same length
    after = np.array(body(mx.array(changed), cache=packed_caches(body, seg)))[0]
    assert first.any() and others.any()
    assert not np.allclose(before[first], after[first])  # the perturbed sample did change
    assert np.allclose(before[others], after[others], atol=1e-6)
    # and each sample's hidden states are those it has alone, from position 0 (positions need no restart)
    for i in (0, 1, 2):
        alone = np.array(body(mx.array(samples[i].ids[:-1][None])))[0]
        assert np.allclose(before[p.segments[0] == i], alone, atol=2e-5), i


def test_a_packed_run_trains_the_same_steps_as_a_bucketed_one(tiny_llama, chat_data, tmp_path):
    from mlxft.llm.sft import SFTJob
    from mlxft.train.loop import LoopHooks, Trainer

    curves, packed = {}, 0
    for batching in ("bucket", "pack"):
        recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path / batching, data={"batching": batching},
                                            train={"steps": 6, "batch_size": 8, "eval_every": 3, "save_every": None, "compile": True}))
        job = SFTJob(recipe)
        job._attention_cost = 0.0  # this tiny model's attention is dear relative to its width: let rows be shared
        batch = job.train_batch
        def counting(idx, epoch=0, batch=batch):
            nonlocal packed
            b = batch(idx, epoch)
            packed += len(b.arrays) == 5
            return b
        job.train_batch = counting
        events = []
        Trainer(job, recipe.train, seed=0, run_dir=tmp_path / batching, hooks=LoopHooks(emit=events.append)).fit()
        curves[batching] = [e.loss for e in events if type(e).__name__ == "StepReport"] + [e.val_loss for e in events if type(e).__name__ == "EvalReport"]
    assert packed >= 3, "the packed run did share rows"
    said = []
    SFTJob(recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path / "said", data={"batching": "pack"})), emit=said.append)
    summary = next(e.message for e in said if "batching pack:" in getattr(e, "message", ""))
    assert "% of the positions computed hold tokens" in summary and "padded buckets would compute" in summary
    assert len(curves["pack"]) == 6 + 3
    assert curves["pack"] == pytest.approx(curves["bucket"], rel=2e-4)


def test_a_batch_whose_rows_would_each_hold_one_sample_is_a_plain_causal_batch():
    a, b = _sample(list(range(10, 40))), _sample(list(range(50, 78)))
    p = pack([a, b], max_row=64, attention_cost=1.0)  # attention so dear that sharing a row never pays
    assert not hasattr(p, "segments") and p.inputs.shape == (2, 32)


def test_an_architecture_that_cannot_be_packed_is_bucketed_and_says_so(tiny_llama, chat_data, tmp_path, monkeypatch):
    import mlxft.llm.packing as P
    from mlxft.llm.sft import SFTJob

    monkeypatch.setattr(P, "PACKABLE_TYPES", P.PACKABLE_TYPES - {"llama"})
    said = []
    recipe = recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path, data={"batching": "pack"}))
    job = SFTJob(recipe, emit=said.append)
    assert job.batching == "bucket"
    assert any(getattr(e, "level", "") == "warning" and "cannot be packed" in e.message and "bucket" in e.message for e in said)
    assert len(job.train_batch([0, 1, 2]).arrays) == 4  # padded batches: no segments


def test_pack_is_refused_for_kinds_it_does_not_lay_out(tmp_path):
    with pytest.raises(Exception) as err:
        recipe_from_dict({"kind": "lm-classify", "model": "m", "data": {"path": str(tmp_path), "batching": "pack"}})
    assert "batching pack" in str(err.value) and "bucket" in str(err.value)


def test_attention_cost_grows_with_width_less_than_the_layer_work():
    small = attention_cost({"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3})
    big = attention_cost({"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8})
    assert 0 < big < small < 0.01


def test_the_memory_plan_sizes_packed_batches_as_pack_lays_them_out():
    from mlxft.llm.batch_shapes import DataLengths, candidate_batches

    lengths = (20, 200, 30, 180, 25, 40, 210, 35)
    data = DataLengths(path="x", lengths=lengths, trained=tuple(n // 2 for n in lengths), rows=len(lengths))
    padded, _ = candidate_batches(data, 4, None, 0, "pad")
    packed, _ = candidate_batches(data, 4, None, 0, "pack", (2048, 0.0))
    assert max(s.batch * s.length for s in packed) < max(s.batch * s.length for s in padded)
    for order_batch in (s for s in packed):
        assert order_batch.batch == 1  # attention free: each batch of 4 fits one row


def test_the_one_pass_cross_entropy_equals_mlx_cross_entropy_and_its_gradient():
    from mlxft.llm.objective import _one_pass_cross_entropy

    mx.random.seed(3)
    logits = mx.random.normal((37, 501)) * 8.0  # large logits: the max shift matters
    targets = mx.random.randint(0, 501, (37,)).astype(mx.int32)
    weights = (mx.arange(37) % 3 != 0).astype(mx.float32)  # some rows weigh 0, as padding does
    ours = lambda z: (_one_pass_cross_entropy(z, targets)[0] * weights).sum()  # noqa: E731
    ref = lambda z: (nn.losses.cross_entropy(z, targets) * weights).sum()  # noqa: E731
    (l1, g1), (l2, g2) = mx.value_and_grad(ours)(logits), mx.value_and_grad(ref)(logits)
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    assert np.allclose(np.array(g1), np.array(g2), atol=1e-6)
    compiled = mx.compile(mx.value_and_grad(ours))(logits)
    assert np.allclose(np.array(compiled[1]), np.array(g2), atol=1e-6)


def test_the_cpu_swiglu_equals_the_models_own_and_keeps_its_parameters(tiny_model):
    from mlxft.llm.cpu_speed import KeptSigmoidSwiGLU, use_cpu_kernels

    loaded = load_model(str(tiny_model))
    model = loaded.model
    x = mx.random.normal((2, 9, model.layers[0].mlp.gate_proj.weight.shape[1])) * 3.0
    names = sorted(k for k, _ in tree_flatten(model.parameters()))
    before = model.layers[0].mlp(x)
    gb = mx.grad(lambda x: model.layers[0].mlp(x).sum())(x)
    assert use_cpu_kernels(model) == len(model.layers)
    assert isinstance(model.layers[0].mlp, KeptSigmoidSwiGLU)
    assert sorted(k for k, _ in tree_flatten(model.parameters())) == names
    assert np.allclose(np.array(model.layers[0].mlp(x)), np.array(before), atol=1e-6)
    assert np.allclose(np.array(mx.grad(lambda x: model.layers[0].mlp(x).sum())(x)), np.array(gb), atol=1e-5)


@pytest.mark.slow
def test_on_the_real_model_packed_and_cpu_kernel_losses_equal_the_plain_padded_ones():
    from conftest import ASSETS

    model_dir = ASSETS / "models" / "smollm2-135m-instruct-4bit"
    data = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"
    if not model_dir.is_dir() or not data.is_dir():
        pytest.skip("../shared/assets is not here")
    from mlxft.llm.cpu_speed import use_cpu_kernels
    from mlxft.llm.loading import dequantize_model

    loaded = load_model(str(model_dir), dtype="float32")
    dequantize_model(loaded.model, mx.float32)
    samples, _ = encode_records(read_split(str(data), "train")[:4], SampleEncoder(loaded.tokenizer, DataSection(path="x")), "chat", 256, "truncate")
    plain = make_loss(loaded.model, loaded.model_type)
    padded = collate(samples)
    reference = nn.value_and_grad(loaded.model, lambda m, *a: nn.losses.cross_entropy(  # MLX's own CE and SwiGLU
        m.model.embed_tokens.as_linear(mx.take(m.model(a[0]).reshape(-1, m.args.hidden_size), a[2], axis=0)), mx.take(a[1].reshape(-1), a[2])).__mul__(a[3]).sum() / a[3].sum())
    loaded.model.freeze()
    loaded.model.model.layers[-1].self_attn.q_proj.unfreeze()  # one trainable weight keeps the gradient small to compare
    l0, g0 = reference(loaded.model, *_arrays(padded, False))
    assert use_cpu_kernels(loaded.model) == len(loaded.model.layers)
    grad = nn.value_and_grad(loaded.model, lambda m, *a: plain(m, *a)[0])
    l1, g1 = grad(loaded.model, *_arrays(pack(samples, max_row=4096), True))
    assert l1.item() == pytest.approx(l0.item(), rel=1e-5)
    for (k, a), (_, b) in zip(tree_flatten(g0), tree_flatten(g1)):
        assert np.allclose(np.array(a), np.array(b), rtol=1e-3, atol=1e-6), k
