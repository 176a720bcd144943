"""Calibrate the memory planner: estimated vs measured peak memory of real training steps on small random models.

Run:  .venv/bin/python benchmarks/memory_plan.py            (all configs, ~1 minute on 2 CPU cores)
Try:  .venv/bin/python benchmarks/memory_plan.py lora-4L    (one config by name)

Each config builds a random mlx-lm Llama in float32, applies LoRA/DoRA (or trains everything), optionally
quantizes the base, and runs two AdamW steps of a masked cross-entropy loss. The peak of the second step
(optimizer state already allocated) is read with `mx.get_peak_memory()` and compared with
`estimate_memory(...).arrays`, the estimate without the fixed runtime overhead.
"""

from __future__ import annotations

import sys

import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx_lm.models import llama
from mlx_lm.tuner import trainer as mlx_lm_trainer
from mlx_lm.tuner.utils import linear_to_lora_layers

from mlxft.train.memory import estimate_memory

MB = 1 << 20
_PREFIX = {"q_proj": "self_attn.", "k_proj": "self_attn.", "v_proj": "self_attn.", "o_proj": "self_attn.",
           "gate_proj": "mlp.", "up_proj": "mlp.", "down_proj": "mlp."}
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def tiny_config(hidden=256, intermediate=704, layers=4, heads=8, kv_heads=4, vocab=8192) -> dict:
    """A Hugging Face style config for a small random Llama."""
    return dict(model_type="llama", hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, tie_word_embeddings=True)


def settings(**changes) -> dict:
    base = dict(method="lora", quant_bits=None, group_size=64, rank=8, targets=ATTENTION, lora_layers="all",
                batch_size=2, seq_len=256, compute_dtype="float32", grad_checkpoint=False)
    return {**base, **changes}


CONFIGS = {
    "lora-4L": (tiny_config(), settings()),
    "lora-8L-long": (tiny_config(layers=8), settings(batch_size=1, seq_len=512)),
    "lora-512d-32k": (tiny_config(hidden=512, intermediate=1408, layers=6, vocab=32000), settings(batch_size=4, seq_len=128)),
    "lora-1024d": (tiny_config(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=4, vocab=32000), settings(seq_len=512)),
    "lora-all-linear": (tiny_config(layers=6), settings(targets="all-linear", rank=16, batch_size=4)),
    "lora-last-2": (tiny_config(layers=8, vocab=16384), settings(lora_layers=2)),
    "lora-grad-ckpt": (tiny_config(layers=8), settings(grad_checkpoint=True, batch_size=4)),
    "dora": (tiny_config(layers=6), settings(method="dora")),
    # Quantized matmuls have no BLAS on the CPU: keep these small or they take minutes.
    "qlora-4bit": (tiny_config(layers=4, vocab=16384), settings(quant_bits=4, seq_len=128)),
    "qlora-4bit-long": (tiny_config(layers=2, vocab=32000), settings(quant_bits=4, batch_size=1, seq_len=512)),
    "full-4L": (tiny_config(), settings(method="full")),
    "full-512d": (tiny_config(hidden=512, intermediate=1408, layers=6, vocab=16384), settings(method="full", batch_size=2, seq_len=128)),
    "full-1024d": (tiny_config(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=4, vocab=32000), settings(method="full", batch_size=1)),
    "full-big-vocab": (tiny_config(hidden=512, intermediate=1408, layers=2, vocab=65536), settings(method="full", batch_size=1, seq_len=128)),
    "full-untied": (dict(tiny_config(hidden=512, intermediate=1408, layers=2, vocab=65536), tie_word_embeddings=False),
                    settings(method="full", batch_size=1, seq_len=128)),
    "full-grad-ckpt": (tiny_config(hidden=512, intermediate=1408, layers=8), settings(method="full", grad_checkpoint=True, batch_size=4)),
}


def measure_peak(config: dict, s: dict, seed: int = 0) -> int:
    """Peak bytes MLX allocates during one AdamW training step (the second, so optimizer state exists)."""
    mx.random.seed(seed)
    args = llama.ModelArgs(rms_norm_eps=1e-5, **config)
    model = llama.Model(args)
    if s["quant_bits"]:
        nn.quantize(model, group_size=s["group_size"], bits=s["quant_bits"])
    if s["method"] != "full":
        model.freeze()
        names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] if s["targets"] == "all-linear" else s["targets"]
        layers = config["num_hidden_layers"] if s["lora_layers"] == "all" else s["lora_layers"]
        lora = {"rank": s["rank"], "scale": 2.0, "dropout": 0.0, "keys": {_PREFIX[n] + n for n in names}}
        linear_to_lora_layers(model, layers, lora, use_dora=s["method"] == "dora")
    mx.eval(model.parameters())

    block_call = llama.TransformerBlock.__call__
    if s["grad_checkpoint"]:
        mlx_lm_trainer.grad_checkpoint(model.layers[0])  # patches the class; restored below
    try:
        tokens = mx.random.randint(0, config["vocab_size"], (s["batch_size"], s["seq_len"] + 1))
        mask = mx.ones((s["batch_size"], s["seq_len"]))
        mx.eval(tokens, mask)

        def loss_fn(model, tokens, mask):
            logits = model(tokens[:, :-1])
            ce = nn.losses.cross_entropy(logits, tokens[:, 1:]) * mask
            return ce.sum() / mask.sum()

        loss_and_grad = nn.value_and_grad(model, loss_fn)
        optimizer = optim.AdamW(learning_rate=1e-4)
        for _ in range(2):
            mx.reset_peak_memory()
            loss, grads = loss_and_grad(model, tokens, mask)
            optimizer.update(model, grads)
            mx.eval(loss, model.parameters(), optimizer.state)
            del loss, grads
        return mx.get_peak_memory()
    finally:
        llama.TransformerBlock.__call__ = block_call
        del model
        mx.clear_cache()


def calibrate(names: list[str] | None = None) -> list[tuple[str, int, int]]:
    """(name, estimated bytes, measured bytes) for each named config (all by default)."""
    rows = []
    for name in names or list(CONFIGS):
        config, s = CONFIGS[name]
        rows.append((name, estimate_memory(config, **s).arrays, measure_peak(config, s)))
    return rows


def main(argv: list[str]) -> None:
    print(f"{'config':<18}{'estimate MB':>12}{'measured MB':>13}{'ratio':>8}")
    for name, estimate, measured in calibrate(argv or None):
        print(f"{name:<18}{estimate / MB:>12.1f}{measured / MB:>13.1f}{estimate / measured:>8.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
