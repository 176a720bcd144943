"""GGUF export (`mlxft export --format gguf | gguf-adapter`), proved with the readers: gguf's GGUFReader, our own
`mlxft import`, and llama.cpp itself (llama-cpp-python) where it is installed.

Tiny models of each architecture the export writes (llama, a Llama 3-scaled llama, mistral with a SentencePiece
tokenizer, qwen2, qwen3 with head_dim != hidden/heads) carry random LoRA adapters strong enough that base and tuned
logits differ by whole units, so a match below 1e-4 cannot be an accident.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before mlx.core)
import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten, tree_unflatten

from conftest import ASSETS, lm_recipe
from tiny import CORPUS, build_adapter, build_tokenizer

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.interop

from mlxft.errors import MlxftError, ModelError  # noqa: E402
from mlxft.export import ExportOptions, export_run  # noqa: E402
from mlxft.llm.gguf import import_gguf, permute_rows  # noqa: E402
from mlxft.runs import RunDir  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
ARCHS = {
    "llama": dict(model_type="llama", **SMALL, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=2048),
    # Llama 3's rope scaling: at head_dim 16 its three bands (kept, smoothed, divided by 8) all occur
    "llama3": dict(model_type="llama", **SMALL, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, max_position_embeddings=8192,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 2048}),
    "mistral": dict(model_type="mistral", **SMALL, rms_norm_eps=1e-5, rope_theta=1000000.0, tie_word_embeddings=False, max_position_embeddings=2048),
    "qwen2": dict(model_type="qwen2", **SMALL, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=2048),
    "qwen3": dict(model_type="qwen3", **SMALL, head_dim=32, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                  max_position_embeddings=2048),
}
GGUF_ARCH = {"llama": "llama", "llama3": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "What is the capital of France? Paris.",
         "Colors: red green blue, 123 cats\n\nand  two   spaces", "Ünïcödé 🤖 2024\ttab"]


# -- tiny models, adapters and runs ----------------------------------------------------------------


def build_spm_tokenizer(folder: Path) -> None:
    """A SentencePiece BPE tokenizer (byte fallback, like Llama 2 / Mistral's), as transformers converts it to tokenizer.json."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=proto, vocab_size=400, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   user_defined_symbols=["[INST]", "[/INST]"], minloglevel=2)
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "chat_template": MISTRAL_TEMPLATE}))
    AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))


def build_arch(folder: Path, arch: str, seed: int = 0) -> Path:
    """A tiny random model of `arch` in Hugging Face layout; norms and biases are perturbed so their layout matters too."""
    from mlx_lm.utils import _get_classes
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (build_spm_tokenizer if arch == "mistral" else build_tokenizer)(folder)
    tokens = len(AutoTokenizer.from_pretrained(str(folder)))
    ids = {"bos_token_id": 1, "eos_token_id": 2} if arch == "mistral" else {"eos_token_id": 2}
    config = {**ARCHS[arch], "vocab_size": tokens + 16, **ids, "torch_dtype": "float32"}  # 16 embedding rows no token has
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    flat = tree_flatten(model.parameters())
    model.update(tree_unflatten([(k, v + 0.2 * mx.random.normal(v.shape)) for k, v in flat if v.ndim == 1]))
    mx.eval(model.parameters())
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def build_dora(model_folder: Path, folder: Path, seed: int = 3) -> Path:
    from mlxft.llm.adapters import adapter_config, apply_adapters, resolve_target_keys, save_adapter
    from mlxft.llm.loading import load_model

    model = load_model(str(model_folder)).model
    layers = len(model.layers)
    keys = resolve_target_keys(model, ["q_proj", "k_proj", "v_proj"], layers)
    apply_adapters(model, "dora", 4, 2.0, 0.0, keys, layers)
    mx.random.seed(seed)
    flat = tree_flatten(model.trainable_parameters())
    model.update(tree_unflatten([(k, mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v * 1.2) for k, v in flat if not k.endswith("lora_a")]))
    return save_adapter(model, folder, adapter_config("dora", layers, 4, 2.0, 0.0, keys, base_model=str(model_folder)))


def make_run(root: Path, model: Path, adapter: Path, kind: str = "lm-lora") -> Path:
    """A finished run directory as `mlxft train` leaves one (recipe, metrics, adapter/), around a given adapter."""
    run = RunDir.create(root, "run")
    recipe = lm_recipe(model, root / "data", root, kind=kind)
    run.recipe_path.write_text(yaml.safe_dump(recipe))
    run.metrics_path.write_text("")
    shutil.copytree(adapter, run.adapter_dir)
    return run.path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> (model folder, LoRA adapter folder, run directory), built once per architecture as asked."""
    root = tmp_path_factory.mktemp("gguf-export")
    made = {}

    def get(arch: str):
        if arch not in made:
            model = build_arch(root / arch / "model", arch)
            adapter = build_adapter(model, root / arch / "adapter", strength=0.25)
            made[arch] = (model, adapter, make_run(root / arch / "runs", model, adapter))
        return made[arch]

    return get


def load_tokenizer(folder):
    from mlxft.llm.loading import load_tokenizer as load

    return load(str(folder))


def mlxft_logits(model_folder: Path, adapter: Path | None, ids: list[int]) -> np.ndarray:
    from mlxft.llm.adapters import load_adapter
    from mlxft.llm.loading import load_model

    loaded = load_model(str(model_folder), dtype="float32")
    if adapter is not None:
        load_adapter(loaded.model, adapter)
    return np.array(loaded.model(mx.array([ids]))[0])


def mean_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean KL(p || q) per token between two [tokens, vocab] logit arrays."""
    from mlxft.export.gguf_model import logit_change

    return logit_change(mx.array(p_logits), mx.array(q_logits))[1]


def hf_ids(model_folder: Path, text: str) -> list[int]:
    from mlxft.llm.loading import load_tokenizer

    return list(load_tokenizer(str(model_folder)).encode(text))


def read(path: Path):
    return gguf.GGUFReader(str(path))


def field(reader, key: str):
    """A metadata value as Python: a string, a number, or a list of them."""
    f = reader.fields[key]
    return f.contents()


# -- the fused model GGUF, read back -----------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_fused_gguf_has_llama_cpps_names_shapes_types_and_metadata(tiny, arch, tmp_path):
    model, _, run = tiny(arch)
    result = export_run(run, "gguf", tmp_path / "out")
    assert sorted(result.files) == ["Modelfile", "model.gguf"]
    reader = read(result.folder / "model.gguf")
    config = json.loads((model / "config.json").read_text())
    a = GGUF_ARCH[arch]
    layers, hidden, heads, kv = config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    dim = config.get("head_dim", hidden // heads)

    # every name is one llama.cpp knows for this architecture
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == a)
    known = {gguf.TENSOR_NAMES[t].format(bid=b) + s for t in gguf.MODEL_TENSORS[arch_enum] for b in range(layers) for s in (".weight", ".bias")}
    names = {t.name for t in reader.tensors}
    assert names <= known, names - known
    per_layer = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}
    per_layer |= {"attn_q_norm", "attn_k_norm"} if arch == "qwen3" else set()
    expected = {f"blk.{b}.{n}.weight" for b in range(layers) for n in per_layer} | {"token_embd.weight", "output_norm.weight"}
    expected |= {f"blk.{b}.attn_{p}.bias" for b in range(layers) for p in "qkv"} if arch == "qwen2" else set()
    expected |= set() if config["tie_word_embeddings"] else {"output.weight"}
    assert {n for n in names if n != "rope_freqs.weight"} == expected
    assert ("rope_freqs.weight" in names) == (arch == "llama3")

    # shapes in GGUF's order (fastest dimension first), types: 2-D F16, 1-D F32
    tensors = {t.name: t for t in reader.tensors}
    vocab = config["vocab_size"]
    assert list(tensors["token_embd.weight"].shape) == [hidden, vocab]
    assert list(tensors["blk.0.attn_q.weight"].shape) == [hidden, heads * dim]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [hidden, kv * dim]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [config["intermediate_size"], hidden]
    assert tensors["blk.0.attn_q.weight"].data.shape == (heads * dim, hidden)  # the numpy array is [out, in]
    for t in reader.tensors:
        want = gguf.GGMLQuantizationType.F32 if len(t.shape) == 1 else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == want, t.name

    assert field(reader, "general.architecture") == a and field(reader, "general.type") == "model"
    assert field(reader, "general.file_type") == 1  # MOSTLY_F16
    assert field(reader, f"{a}.block_count") == layers and field(reader, f"{a}.embedding_length") == hidden
    assert field(reader, f"{a}.attention.head_count") == heads and field(reader, f"{a}.attention.head_count_kv") == kv
    assert field(reader, f"{a}.feed_forward_length") == config["intermediate_size"]
    assert field(reader, f"{a}.rope.dimension_count") == dim
    assert field(reader, f"{a}.rope.freq_base") == pytest.approx(config["rope_theta"])
    assert field(reader, f"{a}.attention.layer_norm_rms_epsilon") == pytest.approx(config["rms_norm_eps"])
    assert field(reader, f"{a}.context_length") == config["max_position_embeddings"]
    if arch == "qwen3":
        assert field(reader, "qwen3.attention.key_length") == 32 and field(reader, "qwen3.attention.value_length") == 32

    # the tokenizer and the chat template travel inside
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model))
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == vocab
    assert tokens[: len(hf)] == [hf.convert_ids_to_tokens(i) for i in range(len(hf))]
    assert tokens[len(hf):] == [f"[PAD{i}]" for i in range(len(hf), vocab)] and set(types[len(hf):]) == {5}
    assert field(reader, "tokenizer.chat_template") == hf.chat_template
    assert field(reader, "tokenizer.ggml.eos_token_id") == hf.eos_token_id
    if arch == "mistral":  # SentencePiece: scores, byte tokens, a BOS added, a space prefix
        assert field(reader, "tokenizer.ggml.model") == "llama" and "tokenizer.ggml.merges" not in reader.fields
        assert len(field(reader, "tokenizer.ggml.scores")) == vocab
        assert types[tokens.index("<0x0A>")] == 6 and types[tokens.index("<s>")] == 3 and types[tokens.index("[INST]")] in (3, 4)
        assert field(reader, "tokenizer.ggml.bos_token_id") == 1 and field(reader, "tokenizer.ggml.add_bos_token") is True
        assert field(reader, "tokenizer.ggml.add_space_prefix") is True
    else:  # byte-level BPE: merges, and the split the live tokenizer does (transformers rebuilds a qwen2 model's with Qwen2's pattern)
        spec = json.loads(hf.backend_tokenizer.to_str())
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        pre = "qwen2" if arch == "qwen2" else "gpt-2"
        assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == pre
        assert field(reader, "tokenizer.ggml.merges") == merges
        assert types[tokens.index("<|im_end|>")] == 3 and field(reader, "tokenizer.ggml.add_bos_token") is False

    modelfile = (result.folder / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and "TEMPLATE is" not in modelfile and "No TEMPLATE" in modelfile


@pytest.mark.parametrize("arch", list(ARCHS))
def test_fused_gguf_reimported_gives_the_logits_of_base_plus_adapter(tiny, arch, tmp_path):
    model, adapter, run = tiny(arch)
    ids = hf_ids(model, TEXTS[0] + " " + TEXTS[1])
    tuned = mlxft_logits(model, adapter, ids)
    base = mlxft_logits(model, None, ids)
    assert np.abs(tuned - base).max() > 0.5  # the adapter matters
    diffs = {}
    for kind in ("f32", "f16", "bf16", "q8_0"):
        out = export_run(run, "gguf", tmp_path / kind, options=ExportOptions(dtype=kind))
        folder = import_gguf(out.folder / "model.gguf", tmp_path / f"{kind}-imported")
        diffs[kind] = float(np.abs(mlxft_logits(folder, None, ids) - tuned).max())
        assert any(f"{kind.upper()} weights give logits within" in n for n in out.notes)
        if kind == "f32":  # the tokenizer comes back too (SentencePiece's rebuilt from pieces and scores)
            assert all(hf_ids(folder, t) == hf_ids(model, t) for t in TEXTS)
            assert json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") == load_tokenizer(str(model)).chat_template
    print(arch, "max|logit|", np.abs(tuned).max(), "fine-tune moves them by", np.abs(tuned - base).max(), diffs)
    # measured on these tiny models: f32 <= 6e-6, f16 <= 5e-3, bf16 <= 0.05, q8_0 <= 0.15
    for kind, tol in (("f32", 1e-4), ("f16", 1e-2), ("bf16", 0.1), ("q8_0", 0.25)):
        assert diffs[kind] <= tol, (kind, diffs)
    assert diffs["f32"] < diffs["f16"] < min(diffs["q8_0"], diffs["bf16"])


def test_the_export_measures_rounding_and_warns_when_it_eats_the_fine_tune(tiny, tmp_path):
    model, _, _ = tiny("llama")
    faint = build_adapter(model, tmp_path / "faint", strength=2e-4)
    run = make_run(tmp_path / "runs", model, faint)
    f32 = export_run(run, "gguf", tmp_path / "f32", options=ExportOptions(dtype="f32"))
    q8 = export_run(run, "gguf", tmp_path / "q8", options=ExportOptions(quantize=8))
    assert any("F32 weights give logits within" in n for n in f32.notes) and not any(n.startswith("warning") for n in f32.notes)
    assert any(n.startswith("warning: at Q8_0") for n in q8.notes), q8.notes
    reader = read(q8.folder / "model.gguf")
    assert field(reader, "general.file_type") == 7
    assert {t.tensor_type for t in reader.tensors if len(t.shape) == 2} == {gguf.GGMLQuantizationType.Q8_0}


def test_a_quantized_base_is_dequantized_then_fused_in_float32(tiny, tmp_path):
    from mlxft.llm.loading import load_model

    model, _, _ = tiny("llama")
    q4 = tmp_path / "q4"
    shutil.copytree(model, q4)
    quantized = load_model(str(model), dtype="float32", quantize=(4, 32)).model
    mx.save_safetensors(str(q4 / "model.safetensors"), dict(tree_flatten(quantized.parameters())))
    config = json.loads((q4 / "config.json").read_text())
    (q4 / "config.json").write_text(json.dumps({**config, "quantization": {"group_size": 32, "bits": 4}}))
    adapter = build_adapter(q4, tmp_path / "adapter", strength=0.25)
    run = make_run(tmp_path / "runs", q4, adapter, kind="lm-qlora")
    out = export_run(run, "gguf", tmp_path / "out", options=ExportOptions(dtype="f32"))
    assert any("4-bit base (QLoRA)" in n for n in out.notes)
    assert {t.tensor_type for t in read(out.folder / "model.gguf").tensors} == {gguf.GGMLQuantizationType.F32}
    ids = hf_ids(q4, TEXTS[0])
    folder = import_gguf(out.folder / "model.gguf", tmp_path / "imported")
    assert np.abs(mlxft_logits(folder, None, ids) - mlxft_logits(q4, adapter, ids)).max() <= 1e-4


def test_a_dora_run_is_refused_as_a_gguf_adapter_and_fused_exactly_as_gguf(tiny, tmp_path):
    model, _, _ = tiny("llama")
    dora = build_dora(model, tmp_path / "dora")
    run = make_run(tmp_path / "runs", model, dora, kind="lm-dora")
    with pytest.raises(MlxftError, match="llama.cpp has no DoRA") as info:
        export_run(run, "gguf-adapter")
    assert "--format gguf" in info.value.hint
    assert not (run / "exports" / "gguf-adapter").exists()
    ids = hf_ids(model, TEXTS[0])
    out = export_run(run, "gguf", tmp_path / "fused", options=ExportOptions(dtype="f32"))
    folder = import_gguf(out.folder / "model.gguf", tmp_path / "imported")
    assert np.abs(mlxft_logits(folder, None, ids) - mlxft_logits(model, dora, ids)).max() <= 1e-4


# -- the adapter GGUF --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_adapter_gguf_is_laid_out_as_convert_lora_to_gguf_writes_it(tiny, arch, tmp_path):
    model, adapter, run = tiny(arch)
    result = export_run(run, "gguf-adapter", tmp_path / "out")
    assert sorted(result.files) == ["Modelfile", "adapter.gguf"]
    reader = read(result.folder / "adapter.gguf")
    assert field(reader, "general.type") == "adapter" and field(reader, "adapter.type") == "lora"
    assert field(reader, "general.architecture") == GGUF_ARCH[arch]
    cfg = json.loads((adapter / "adapter_config.json").read_text())["lora_parameters"]
    assert field(reader, "adapter.lora.alpha") == pytest.approx(cfg["scale"] * cfg["rank"])
    assert "tokenizer.ggml.tokens" not in reader.fields

    weights = mx.load(str(adapter / "adapters.safetensors"))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(weights)
    config = json.loads((model / "config.json").read_text())
    heads, kv, hidden, r = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"], cfg["rank"]
    for layer in range(config["num_hidden_layers"]):
        for hf, name, out_rows, perm in (("self_attn.q_proj", "attn_q", 64, heads), ("self_attn.k_proj", "attn_k", 32, kv),
                                         ("self_attn.v_proj", "attn_v", 32, None), ("mlp.down_proj", "ffn_down", 64, None)):
            a, b = tensors[f"blk.{layer}.{name}.weight.lora_a"], tensors[f"blk.{layer}.{name}.weight.lora_b"]
            in_dims = 128 if name == "ffn_down" else hidden
            assert list(a.shape) == [in_dims, r] and list(b.shape) == [r, out_rows]  # GGUF order: ne = [in, r], [r, out]
            assert a.data.shape == (r, in_dims) and b.data.shape == (out_rows, r)  # numpy: [r, in], [out, r]
            assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
            mlx_a = np.array(weights[f"model.layers.{layer}.{hf}.lora_a"])
            mlx_b = np.array(weights[f"model.layers.{layer}.{hf}.lora_b"])
            assert np.array_equal(a.data, mlx_a.T)
            want_b = mlx_b.T if perm is None or arch != "llama" else np.array(permute_rows(mx.array(mlx_b.T), perm))
            assert np.array_equal(b.data, want_b), (layer, name)

    modelfile = (result.folder / "Modelfile").read_text()
    assert "ADAPTER ./adapter.gguf" in modelfile and "FROM ./base.gguf" in modelfile and str(model) in modelfile
    assert any("edit the FROM line" in n for n in result.notes)


def test_adapter_export_with_base_writes_a_modelfile_that_runs_as_it_is(tiny, tmp_path):
    _, _, run = tiny("qwen2")
    result = export_run(run, "gguf-adapter", tmp_path / "out", options=ExportOptions(dtype="q8_0", extra={"with_base": True}))
    assert sorted(result.files) == ["Modelfile", "adapter.gguf", "base.gguf"]
    base = read(result.folder / "base.gguf")
    assert field(base, "general.type") == "model" and field(base, "general.file_type") == 7
    assert "FROM ./base.gguf" in (result.folder / "Modelfile").read_text()
    assert not any("edit the FROM line" in n for n in result.notes)


def test_a_run_trained_from_a_gguf_gets_an_adapter_for_that_very_file(tiny, tmp_path, monkeypatch):
    """Ollama's GGUF in, a fine-tune, an adapter out that llama.cpp applies to the same GGUF: FROM names that file."""
    from mlxft.export.gguf_model import write_model_gguf
    from mlxft.llm.loading import load_model

    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    model, _, _ = tiny("llama")
    loaded = load_model(str(model), dtype="float32")
    original = tmp_path / "from-ollama.gguf"
    write_model_gguf(original, loaded.model, loaded.config, loaded.tokenizer, "f32")
    adapter = build_adapter(original, tmp_path / "adapter", strength=0.25)  # trained on the GGUF, as mlxft imports it
    run = make_run(tmp_path / "runs", original, adapter)
    out = export_run(run, "gguf-adapter", tmp_path / "out")
    assert f"FROM {original.resolve()}" in (out.folder / "Modelfile").read_text()
    assert not any("edit the FROM line" in n for n in out.notes)
    if importlib.util.find_spec("llama_cpp") is not None:
        ids = hf_ids(model, TEXTS[0])
        tuned = mlxft_logits(original, adapter, ids)
        assert np.abs(llama_cpp_logits(original, ids, lora=out.folder / "adapter.gguf") - tuned).max() <= 1e-4


# -- llama.cpp itself --------------------------------------------------------------------------------


def llama_cpp_logits(path: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    kw = {"lora_path": str(lora)} if lora is not None else {}
    # an F32 KV cache: llama.cpp's default F16 cache alone moves tiny models' logits by ~4e-3
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0, **kw)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)])
    llm.close()
    return out


@pytest.mark.parametrize("arch", list(ARCHS))
def test_llama_cpp_runs_the_fused_gguf_with_mlxfts_tokens_and_logits(tiny, arch, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model, adapter, run = tiny(arch)
    out = export_run(run, "gguf", tmp_path / "out", options=ExportOptions(dtype="f32"))
    path = out.folder / "model.gguf"
    llm = llama_cpp.Llama(str(path), n_ctx=256, vocab_only=True, verbose=False)
    for text in TEXTS:  # add_bos=True: llama.cpp adds what the file says encoding adds (a BOS for the SentencePiece one)
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf_ids(model, text), text
    from mlxft.llm.loading import load_tokenizer

    tok = load_tokenizer(str(model))
    chat_ids = list(tok.apply_chat_template([{"role": "user", "content": "Count: one two"}], add_generation_prompt=True))
    text = tok.apply_chat_template([{"role": "user", "content": "Count: one two"}], add_generation_prompt=True, tokenize=False)
    got = llm.tokenize(text.encode(), add_bos=False, special=True)
    if arch == "mistral":  # transformers 5's Llama tokenizer (legacy=False) vs llama.cpp's dummy prefix: said, and no more than that
        assert any("extra '▁' token" in n for n in out.notes)
        space, specials = tok.convert_tokens_to_ids("▁"), {1, 2, tok.convert_tokens_to_ids("[INST]"), tok.convert_tokens_to_ids("[/INST]")}
        got = [t for i, t in enumerate(got) if not (t == space and i and got[i - 1] in specials)]
    assert got == chat_ids
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    llm.close()

    ids = hf_ids(model, TEXTS[0] + " " + TEXTS[2])
    diff = np.abs(llama_cpp_logits(path, ids) - mlxft_logits(model, adapter, ids)).max()
    assert diff <= 1e-4, diff


def test_a_sentencepiece_tokenizer_that_prefixes_every_segment_tokenizes_chats_in_llama_cpp_exactly(tiny, tmp_path):
    """Llama 2 / Mistral v0.1's tokenizer.json (a Prepend normalizer, applied to each text segment) is what llama.cpp does."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from mlxft.export.gguf_model import write_model_gguf
    from mlxft.llm.loading import load_model, load_tokenizer

    model, _, _ = tiny("mistral")
    legacy = tmp_path / "legacy"
    shutil.copytree(model, legacy)
    spec = json.loads((legacy / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = None
    spec["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                               {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    (legacy / "tokenizer.json").write_text(json.dumps(spec))
    (legacy / "tokenizer.model").unlink()
    config = json.loads((legacy / "tokenizer_config.json").read_text())
    (legacy / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    loaded = load_model(str(legacy), dtype="float32")
    info = write_model_gguf(tmp_path / "legacy.gguf", loaded.model, loaded.config, loaded.tokenizer, "f16")
    assert info.notes == []
    tok = load_tokenizer(str(legacy))
    llm = llama_cpp.Llama(str(tmp_path / "legacy.gguf"), vocab_only=True, verbose=False)
    chat = [{"role": "user", "content": "Count: one two"}, {"role": "assistant", "content": "three four"}, {"role": "user", "content": "red?"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == list(tok.apply_chat_template(chat))
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == list(tok.encode(text)), text
    llm.close()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_llama_cpp_reads_every_tensor_type_the_export_writes(tiny, arch, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model, adapter, run = tiny(arch)
    ids = hf_ids(model, TEXTS[0] + " " + TEXTS[1])
    tuned = mlxft_logits(model, adapter, ids)
    diffs = {}
    for kind in ("f16", "bf16", "q8_0"):
        out = export_run(run, "gguf", tmp_path / kind, options=ExportOptions(dtype=kind))
        diffs[kind] = float(np.abs(llama_cpp_logits(out.folder / "model.gguf", ids) - tuned).max())
    # measured: f16 <= 7e-3, bf16 <= 0.05, q8_0 <= 0.14 (as the re-import sees, though llama.cpp rounds activations too)
    assert diffs["f16"] <= 1e-2 and diffs["bf16"] <= 0.1 and diffs["q8_0"] <= 0.25, diffs


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
def test_llama_cpp_applies_the_adapter_gguf_on_the_base_gguf_as_mlxft_does(tiny, arch, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    model, adapter, run = tiny(arch)
    out = export_run(run, "gguf-adapter", tmp_path / "out", options=ExportOptions(dtype="f32", extra={"with_base": True}))
    ids = hf_ids(model, TEXTS[1] + " " + TEXTS[0])
    tuned, base = mlxft_logits(model, adapter, ids), mlxft_logits(model, None, ids)
    assert np.abs(llama_cpp_logits(out.folder / "base.gguf", ids) - base).max() <= 1e-4
    diff = np.abs(llama_cpp_logits(out.folder / "base.gguf", ids, lora=out.folder / "adapter.gguf") - tuned).max()
    assert diff <= 1e-4 < np.abs(tuned - base).max(), diff


# -- options, refusals, the command line ------------------------------------------------------------


def test_bad_options_are_refused_with_what_to_do(tiny, tmp_path):
    _, _, run = tiny("llama")
    with pytest.raises(MlxftError, match="llama-quantize"):
        export_run(run, "gguf", tmp_path / "a", options=ExportOptions(quantize=4))
    with pytest.raises(MlxftError, match="not a GGUF tensor type") as info:
        export_run(run, "gguf", tmp_path / "b", options=ExportOptions(dtype="q4_k"))
    assert "q8_0" in info.value.hint
    with pytest.raises(MlxftError, match="two different files"):
        export_run(run, "gguf", tmp_path / "c", options=ExportOptions(quantize=8, dtype="f16"))
    with pytest.raises(MlxftError, match="--with-base"):
        export_run(run, "gguf-adapter", tmp_path / "d", options=ExportOptions(dtype="f16"))
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_an_architecture_llama_cpp_is_not_given_is_refused_before_any_weight_is_read(tiny, tmp_path):
    model, adapter, _ = tiny("llama")
    odd = tmp_path / "odd"
    shutil.copytree(model, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "gemma"}))
    (odd / "model.safetensors").write_bytes(b"not read")
    run = make_run(tmp_path / "runs", odd, adapter)
    for fmt in ("gguf", "gguf-adapter"):
        with pytest.raises(ModelError, match="'gemma' model; the GGUF export writes llama, mistral, qwen2, qwen3"):
            export_run(run, fmt)


def test_pre_tokenizers_are_named_from_their_structure_and_an_unknown_one_is_refused_not_guessed():
    from mlxft.export.gguf_vocab import bpe_pre_name
    from mlxft.llm.gguf import _LLAMA3, _QWEN2

    def split_then_bytes(pattern):
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}}

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert bpe_pre_name({"pre_tokenizer": byte_level}) == "gpt-2"
    assert bpe_pre_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, byte_level]}}) == "smollm"  # SmolLM's tokenizer.json
    assert bpe_pre_name(split_then_bytes(_LLAMA3)) == "llama-bpe" and bpe_pre_name(split_then_bytes(_QWEN2)) == "qwen2"
    with pytest.raises(ModelError):  # GPT-2's split, but with a space added in front of every text
        bpe_pre_name({"pre_tokenizer": {**byte_level, "add_prefix_space": True}})
    odd = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": r"\w+"}},
                                                                     {"type": "ByteLevel", "use_regex": False}]}}
    with pytest.raises(ModelError, match="split text differently"):
        bpe_pre_name(odd)


def test_a_missing_gguf_package_says_how_to_install_it(tiny, tmp_path, monkeypatch):
    import sys

    _, _, run = tiny("llama")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MlxftError, match="needs the gguf package") as info:
        export_run(run, "gguf", tmp_path / "out")
    assert "pip install" in info.value.hint and not (tmp_path / "out").exists()


def test_q8_0_rows_that_are_not_whole_blocks_fall_back_to_f16():
    from mlxft.export.gguf_write import choose_type, decode, encode

    assert choose_type("blk.0.attn_q.weight", (64, 48), "q8_0") == "F16"
    assert choose_type("blk.0.attn_q.weight", (64, 96), "q8_0") == "Q8_0"
    assert choose_type("blk.0.attn_norm.weight", (64,), "q8_0") == "F32"
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    back = decode(encode(x, "Q8_0"), "Q8_0", x.shape)
    assert np.abs(back - x).max() <= np.abs(x).max() / 127  # one step of the block's scale at most


def test_a_trained_run_exports_on_the_command_line_and_llama_cpp_answers_as_mlxft(tiny_llama, chat_data, tmp_path, capsys):
    from mlxft.api import train
    from mlxft.cli import main

    finished = train(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 4, "eval_every": None, "save_every": None}))
    assert finished.ok, finished.error
    run = finished.path
    assert main(["export", str(run), "--format", "gguf", "--dtype", "q8_0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "gguf" and sorted(out["files"]) == ["Modelfile", "model.gguf"]
    assert Path(out["folder"]) == run / "exports" / "gguf"
    assert any("Q8_0 weights give logits within" in n for n in out["notes"])
    assert main(["export", str(run), "--format", "gguf-adapter", "--with-base", "--dtype", "f32"]) == 0
    text = capsys.readouterr().out
    assert "adapter.gguf" in text and "base.gguf" in text and "alpha 8" in text  # the recipe's alpha (rank 4, alpha 8)
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    folder = run / "exports" / "gguf-adapter"
    ids = hf_ids(tiny_llama, TEXTS[1])
    tuned = mlxft_logits(tiny_llama, run / "adapter", ids)
    assert np.abs(llama_cpp_logits(folder / "base.gguf", ids, lora=folder / "adapter.gguf") - tuned).max() <= 1e-4


# -- the real small model ----------------------------------------------------------------------------

REAL = ASSETS / "models" / "smollm2-135m-instruct-4bit"
REAL_DATA = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"


@pytest.mark.slow
def test_a_real_lora_run_exports_to_gguf_and_reads_back(tmp_path):
    if not (REAL / "config.json").is_file() or not (REAL_DATA / "train.jsonl").is_file():
        pytest.skip(f"real assets missing: {REAL}")
    from mlxft.api import train

    recipe = lm_recipe(REAL, REAL_DATA, tmp_path, lora={"rank": 8, "alpha": 16, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers": 8},
                       train={"steps": 8, "batch_size": 2, "learning_rate": 2e-3, "eval_every": None, "save_every": None},
                       data={"max_seq_length": 192})
    finished = train(recipe)
    assert finished.ok, finished.error
    ids = hf_ids(REAL, "What is the capital of France? The capital of France is Paris.")
    tuned, base = mlxft_logits(REAL, finished.path / "adapter", ids), mlxft_logits(REAL, None, ids)
    report = {"fine_tune_max_logit_change": float(np.abs(tuned - base).max())}
    adapter = export_run(finished.path, "gguf-adapter", tmp_path / "adapter", options=ExportOptions(extra={"with_base": True}))
    reader = read(adapter.folder / "adapter.gguf")
    assert len(reader.tensors) == 8 * 4 * 2 and field(reader, "general.architecture") == "llama"
    report["adapter_gguf_mb"] = (adapter.folder / "adapter.gguf").stat().st_size / 1e6
    for kind in ("f16", "q8_0"):
        out = export_run(finished.path, "gguf", tmp_path / kind, options=ExportOptions(dtype=kind))
        path = out.folder / "model.gguf"
        reader = read(path)
        assert field(reader, "tokenizer.ggml.pre") == "gpt-2" and len(field(reader, "tokenizer.ggml.tokens")) == 49152
        assert "output.weight" not in {t.name for t in reader.tensors}  # tied embeddings, as the base's
        report[f"{kind}_gguf_mb"] = path.stat().st_size / 1e6
        folder = import_gguf(path, tmp_path / f"{kind}-imported")
        back = mlxft_logits(folder, None, ids)
        report[f"{kind}_reimport_max_logit_diff"] = float(np.abs(back - tuned).max())
        report[f"{kind}_reimport_kl"] = mean_kl(tuned, back)
        report[f"{kind}_notes"] = out.notes
    report["fine_tune_kl"] = mean_kl(tuned, base)
    if importlib.util.find_spec("llama_cpp") is None:
        report["llama_cpp"] = "not installed"
    else:
        folder = adapter.folder
        report["llama_cpp_base_plus_adapter_kl"] = mean_kl(tuned, llama_cpp_logits(folder / "base.gguf", ids, lora=folder / "adapter.gguf"))
        report["llama_cpp_fused_q8_0_kl"] = mean_kl(tuned, llama_cpp_logits(tmp_path / "q8_0" / "model.gguf", ids))
        assert report["llama_cpp_base_plus_adapter_kl"] < 0.05 * report["fine_tune_kl"]
    print(json.dumps(report, indent=2))
    assert report["f16_reimport_max_logit_diff"] < 0.1 < report["fine_tune_max_logit_change"]
    assert report["f16_reimport_kl"] < 0.05 * report["fine_tune_kl"]
    assert report["q8_0_reimport_kl"] < 0.01
