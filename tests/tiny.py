"""Tiny real models in Hugging Face layout, built on the fly, with a byte-level BPE tokenizer and a chat template."""

from __future__ import annotations

import json
from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before mlx.core)
import mlx.core as mx
from mlx.utils import tree_flatten

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Translate to pirate: hello friend -> ahoy matey.",
    "user assistant system Answer briefly. Count: one two three four five six seven eight nine ten.",
    "Colors: red green blue yellow purple orange. Animals: cat dog bird fish.",
] * 20


def build_tokenizer(folder: Path, vocab_size: int = 384) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "chat_template": CHATML, "model_max_length": 2048,
    }))


ARCHS = {
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, max_position_embeddings=2048),
}


def build_model(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Write config.json, model.safetensors and a tokenizer; returns the folder."""
    from mlx_lm.utils import _get_classes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    config = {**ARCHS[arch], "vocab_size": len(vocab) + len(SPECIALS), "eos_token_id": 2, "architectures": ["X"]}
    config["vocab_size"] = max(config["vocab_size"], 400)
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def build_adapter(model_folder: Path, folder: Path, seed: int = 1, strength: float = 0.5) -> Path:
    """A LoRA adapter on every linear layer with random (not zero) B, so tuned answers differ from the base."""
    from mlx.utils import tree_unflatten

    from mlxft.llm.adapters import adapter_config, apply_adapters, resolve_target_keys, save_adapter
    from mlxft.llm.loading import load_model

    model = load_model(str(model_folder)).model
    model.freeze()
    layers = len(model.layers)
    keys = resolve_target_keys(model, "all-linear", layers)
    apply_adapters(model, "lora", 4, 2.0, 0.0, keys, layers)
    mx.random.seed(seed)
    b = [(k, mx.random.normal(v.shape) * strength) for k, v in tree_flatten(model.trainable_parameters()) if k.endswith("lora_b")]
    model.update(tree_unflatten(b))
    return save_adapter(model, folder, adapter_config("lora", layers, 4, 2.0, 0.0, keys, base_model=str(model_folder)))
