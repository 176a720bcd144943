"""Calibrate the memory planner: its estimate against the measured peak of mlxft's own training step.

Run:  .venv/bin/python benchmarks/memory_plan.py                  (every case; ~15 min on 2 busy CPU cores)
Try:  .venv/bin/python benchmarks/memory_plan.py lora-4L          (cases by name; a tiny one takes seconds)
      .venv/bin/python benchmarks/memory_plan.py --tiny           (only the random tiny models, ~1 min)

Every case runs the step `mlxft train` runs: mlxft's adapters (LoRA/DoRA) or full training, its quantization,
its loss (the LM head on trained positions only), its compiled `Trainer.train_step` with AdamW and clipping.
The peak of the second step (optimizer state already allocated) is read with `mx.get_peak_memory()` and compared
with the plan's `estimate.arrays`, the estimate without the fixed runtime overhead.

- tiny cases: random mlx-lm Llamas in float32, one batch of random tokens with the last `trained` share of
  each sample trained, sized through the planner's own batch shapes;
- real cases (when /work/shared/assets is there): SmolLM2-135M-Instruct on real data sets, planned with
  `measure_train_lengths` + `plan_memory` exactly as `mlxft plan` does; the batch measured is the one of
  the run's own epoch order that the planner says needs most memory.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
import mlx.core as mx
import numpy as np
from mlx_lm.models import llama

from mlxft.backend import GB
from mlxft.data.batches import collate, epoch_order
from mlxft.data.encode import Encoded
from mlxft.job import Batch
from mlxft.llm import adapters as A
from mlxft.llm.batch_shapes import DataLengths, batch_shape, candidate_batches, measure_train_lengths
from mlxft.llm.loading import quantize_model
from mlxft.llm.memory import estimate_memory, plan_memory, recipe_settings
from mlxft.llm.objective import make_loss
from mlxft.recipe import TrainSection, recipe_from_dict
from mlxft.recompute import enable_grad_checkpoint
from mlxft.train.loop import LoopHooks, Trainer

MB = 10**6  # as GB: one unit everywhere mlxft prints memory
ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"  # as tests/conftest.py finds them
SMOLLM = ASSETS / "models" / "smollm2-135m-instruct-4bit"
CHAT = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"
TEXT = ASSETS / "data" / "instructions" / "mlx_wikisql"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny_config(hidden=256, intermediate=704, layers=4, heads=8, kv_heads=4, vocab=8192) -> dict:
    """A Hugging Face style config for a small random Llama."""
    return dict(model_type="llama", hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=True)


def settings(**changes) -> dict:
    """A tiny case: estimate keywords (without the batch shape) plus batch, seq_len and the trained share."""
    base = dict(method="lora", quant_bits=None, group_size=64, rank=8, targets=ATTENTION, lora_layers="all",
                compute_dtype="float32", grad_checkpoint=False, batch=2, seq_len=256, trained=1.0)
    return {**base, **changes}


TINY = {
    "lora-4L": (tiny_config(), settings()),
    "lora-4L-prompt-masked": (tiny_config(), settings(trained=0.25)),
    "lora-8L-long": (tiny_config(layers=8), settings(batch=1, seq_len=512, trained=0.6)),
    "lora-512d-32k": (tiny_config(hidden=512, intermediate=1408, layers=6, vocab=32000), settings(batch=4, seq_len=128)),
    "lora-512d-32k-masked": (tiny_config(hidden=512, intermediate=1408, layers=6, vocab=32000), settings(batch=4, seq_len=128, trained=0.3)),
    "lora-1024d": (tiny_config(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=4, vocab=32000), settings(seq_len=512, trained=0.5)),
    "lora-all-linear": (tiny_config(layers=6), settings(targets="all-linear", rank=16, batch=4)),
    "lora-last-2": (tiny_config(layers=8, vocab=16384), settings(lora_layers=2)),
    "lora-grad-ckpt": (tiny_config(layers=8), settings(grad_checkpoint=True, batch=4)),
    "dora": (tiny_config(layers=6), settings(method="dora")),
    # Quantized matmuls have no BLAS on the CPU: keep these small or they take minutes.
    "qlora-4bit": (tiny_config(layers=4, vocab=16384), settings(quant_bits=4, seq_len=128)),
    "qlora-4bit-long": (tiny_config(layers=2, vocab=32000), settings(quant_bits=4, batch=1, seq_len=512, trained=0.5)),
    "full-4L": (tiny_config(), settings(method="full")),
    "full-512d": (tiny_config(hidden=512, intermediate=1408, layers=6, vocab=16384), settings(method="full", seq_len=128)),
    "full-1024d": (tiny_config(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=4, vocab=32000), settings(method="full", batch=1)),
    "full-big-vocab": (tiny_config(hidden=512, intermediate=1408, layers=2, vocab=65536), settings(method="full", batch=1, seq_len=128)),
    "full-untied": (dict(tiny_config(hidden=512, intermediate=1408, layers=2, vocab=65536), tie_word_embeddings=False),
                    settings(method="full", batch=1, seq_len=128)),
    "full-grad-ckpt": (tiny_config(hidden=512, intermediate=1408, layers=8), settings(method="full", grad_checkpoint=True, batch=4)),
}

# Real cases: recipe fields on SmolLM2-135M-Instruct (4-bit checkpoint; dequantized to float32 on CPU unless QLoRA).
REAL = {
    "smollm2-lora-b4": dict(data={"path": str(CHAT)}, train={"batch_size": 4}),
    "smollm2-lora-b1": dict(data={"path": str(CHAT)}, train={"batch_size": 1}),
    "smollm2-lora-b8-len256": dict(data={"path": str(CHAT), "max_seq_length": 256}, train={"batch_size": 8}),
    "smollm2-lora-text-b4": dict(data={"path": str(TEXT)}, train={"batch_size": 4}),
    "smollm2-lora-ckpt-b4": dict(data={"path": str(CHAT), "max_seq_length": 512}, train={"batch_size": 4, "grad_checkpoint": True}),
    "smollm2-dora-b2-len512": dict(kind="lm-dora", data={"path": str(CHAT), "max_seq_length": 512}, train={"batch_size": 2}),
    "smollm2-qlora-b2-len256": dict(kind="lm-qlora", data={"path": str(CHAT), "max_seq_length": 256}, train={"batch_size": 2}),
    "smollm2-full-b2-len512": dict(kind="lm-full", data={"path": str(CHAT), "max_seq_length": 512}, train={"batch_size": 2}),
}


class OneBatchJob:
    """The SFT step on one fixed batch: just enough of a job for the Trainer to run its compiled step."""

    artifact, unit, higher_is_better, phases, uniform_loss, has_validation = "adapter", "tok", set(), None, None, False

    def __init__(self, model, samples: list[Encoded], model_type: str):
        self.model, self.samples, self.train_size = model, samples, len(samples)
        self.loss = make_loss(model, model_type)

    def train_order(self, epoch, batch_size, seed):
        return [list(range(len(self.samples)))]

    def train_batch(self, indices, epoch=0):
        b = collate([self.samples[i] for i in indices])
        return Batch((mx.array(b.inputs), mx.array(b.targets), mx.array(b.positions), mx.array(b.weights)), float(b.trained_tokens), b.trained_tokens)


def peak_of_steps(model, samples: list[Encoded], train_cfg, model_type: str = "llama") -> int:
    """Peak bytes MLX allocates during mlxft's second training step on `samples` (one batch)."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(OneBatchJob(model, samples, model_type), train_cfg, seed=0, total_steps=3, run_dir=Path(run_dir), hooks=LoopHooks())
        trainer.train_step()  # compiles the step and allocates the optimizer state
        mx.reset_peak_memory()
        trainer.train_step()
        return mx.get_peak_memory()


def _restorer(block_cls):
    """An undo for `enable_grad_checkpoint`, which patches the block's class for good (a run is its own process)."""
    original = block_cls.__call__

    def undo():
        block_cls.__call__ = original
        if hasattr(block_cls, "_mlxft_checkpointed"):
            del block_cls._mlxft_checkpointed

    return undo


def measure_tiny(config: dict, s: dict) -> tuple[int, int, str]:
    """(estimated, measured) bytes and the batch, for one tiny case."""
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(rms_norm_eps=1e-5, **config))
    if s["quant_bits"]:
        quantize_model(model, s["quant_bits"], s["group_size"])
    if s["method"] != "full":
        n = config["num_hidden_layers"] if s["lora_layers"] == "all" else s["lora_layers"]
        A.apply_adapters(model, s["method"], s["rank"], 2.0, 0.0, A.resolve_target_keys(model, s["targets"], n), n)
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(s["batch"]):
        ids = rng.integers(0, config["vocab_size"], s["seq_len"] + 1).astype(np.int32)
        mask = np.zeros(s["seq_len"] + 1, bool)
        mask[round((s["seq_len"] + 1) * (1 - s["trained"])):] = True
        samples.append(Encoded(ids, mask))
    data = DataLengths("tiny", tuple(len(e) for e in samples), tuple(e.trained_tokens for e in samples), len(samples))
    (shape,), _ = candidate_batches(data, s["batch"], 1, 0, "bucket")
    kwargs = {k: v for k, v in s.items() if k not in ("batch", "seq_len", "trained")}
    estimated = estimate_memory(config, **kwargs, **shape.settings()).arrays
    undo = _restorer(llama.TransformerBlock)
    try:
        if s["grad_checkpoint"]:
            enable_grad_checkpoint(model.layers[0])
        measured = peak_of_steps(model, samples, TrainSection(batch_size=s["batch"], steps=3))
    finally:
        undo()
        del model
        mx.clear_cache()
    return estimated, measured, f"{shape.batch} x {shape.length} ({shape.trained:,} trained)"


def measure_real(fields: dict) -> tuple[int, int, str]:
    """(estimated, measured) bytes and the batch, for one real case, planned the way `mlxft plan` plans it."""
    from mlxft.llm.sft import load_splits, prepare_model

    recipe = recipe_from_dict({"kind": "lm-lora", "model": str(SMOLLM), "dtype": "float32", **fields, "train": {"epochs": 1, **fields["train"]}})
    config = json.loads((SMOLLM / "config.json").read_text())
    plan = plan_memory(recipe, config, available=1000 * GB, data=measure_train_lengths(recipe))
    loaded, _ = prepare_model(recipe)
    train, _ = load_splits(recipe, loaded.tokenizer)
    # The run's own first epoch; measure the batch the planner's estimate says needs most memory.
    settings_ = recipe_settings(recipe, config)
    batches = epoch_order([len(s) for s in train], recipe.train.batch_size, recipe.seed, 0, recipe.data.batching)

    def need(batch: list[int]) -> int:
        shape = batch_shape([len(train[i]) for i in batch], [train[i].trained_tokens for i in batch])
        return estimate_memory(config, **{**settings_, **shape.settings()}).total

    worst = max(batches, key=need)
    shape = batch_shape([len(train[i]) for i in worst], [train[i].trained_tokens for i in worst])
    block = type(loaded.model.layers[0])
    undo = _restorer(block)
    try:
        if recipe.train.grad_checkpoint:
            enable_grad_checkpoint(loaded.model.layers[0])
        measured = peak_of_steps(loaded.model, [train[i] for i in worst], recipe.train, loaded.model_type)
    finally:
        undo()
        del loaded
        mx.clear_cache()
    planned = plan.settings
    assert (planned["batch_size"], planned["seq_len"], planned["trained_tokens"]) == (shape.batch, shape.length, shape.trained), (plan.basis, shape)
    return plan.estimate.arrays, measured, f"{shape.batch} x {shape.length} ({shape.trained:,} trained)"


def calibrate(names: list[str] | None = None) -> list[tuple[str, str, int, int]]:
    """(name, batch, estimated bytes, measured bytes) for each named case (all by default; real ones need the assets)."""
    rows = []
    for name in names or [*TINY, *(REAL if SMOLLM.is_dir() else {})]:
        estimated, measured, batch = measure_tiny(*TINY[name]) if name in TINY else measure_real(REAL[name])
        rows.append((name, batch, estimated, measured))
    return rows


def main(argv: list[str]) -> None:
    names = list(TINY) if argv == ["--tiny"] else argv or None
    print(f"| {'case':<26} | {'batch':<24} | {'estimate MB':>11} | {'measured MB':>11} | {'ratio':>5} |")
    print(f"|{'-' * 28}|{'-' * 26}|{'-' * 12}:|{'-' * 12}:|{'-' * 6}:|")
    for name, batch, estimated, measured in calibrate(names):
        print(f"| {name:<26} | {batch:<24} | {estimated / MB:>11.1f} | {measured / MB:>11.1f} | {estimated / measured:>5.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
