"""The fused export on tiny real models: the folder stands alone (config, tokenizer, weights in the base's dtype, shards),
mlx-lm and transformers load it with the logits of base + adapter (LoRA, DoRA, full, DPO, QLoRA), a score classifier
becomes a *ForSequenceClassification with mlxft.classifier's probabilities, and re-quantizing into a quantized base is
measured: the warning fires when a small update is erased, not when the export keeps it."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten, tree_unflatten

import mlxft
from conftest import ASSETS, lm_recipe, write_jsonl
from mlxft.api import train
from mlxft.errors import MlxftError, ModelError
from mlxft.export import ExportOptions, export_run
from mlxft.export import fidelity
from mlxft.export.fused import FIDELITY_FILE
from mlxft.llm import adapters as A
from mlxft.llm.loading import load_model
from mlxft.llm.model_files import check_model_weights, check_safetensors
from tiny import build_adapter

IDS = [5, 17, 42, 99, 7, 250, 3, 64, 128, 11, 300, 2]  # tokens every tiny vocabulary has


# -- runs and references --------------------------------------------------------------------------


def fake_run(root: Path, recipe: dict, make_adapter) -> Path:
    """A finished run directory (recipe.yaml, metrics.jsonl, model.json, adapter/) whose adapter `make_adapter(base, folder)` writes."""
    run = root / "run"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "metrics.jsonl").write_text("")
    (run / "model.json").write_text(json.dumps({"model": recipe["model"], "model_path": recipe["model"]}))
    make_adapter(Path(recipe["model"]), run / "adapter")
    return run


def lora_adapter(strength: float = 0.5):
    return lambda base, folder: build_adapter(base, folder, strength=strength)


def dora_adapter(base: Path, folder: Path) -> Path:
    model = load_model(str(base), dtype="float32").model
    n = len(model.layers)
    keys = A.resolve_target_keys(model, "all-linear", n)
    A.apply_adapters(model, "dora", 4, 2.0, 0.0, keys, n)
    mx.random.seed(2)
    moved = [(k, mx.random.normal(v.shape) * 0.3 if k.endswith("lora_b") else v * (1 + 0.2 * mx.random.normal(v.shape)) if k.endswith(".m") else v)
             for k, v in tree_flatten(model.trainable_parameters())]
    model.update(tree_unflatten(moved))
    return A.save_adapter(model, folder, A.adapter_config("dora", n, 4, 2.0, 0.0, keys, base_model=str(base)))


def full_adapter(base: Path, folder: Path) -> Path:
    """lm-full of the last block: its every weight moved."""
    model = load_model(str(base), dtype="float32").model
    model.freeze()
    model.layers[-1].unfreeze()
    mx.random.seed(3)
    model.update(tree_unflatten([(k, v + 0.05 * mx.random.normal(v.shape)) for k, v in tree_flatten(model.trainable_parameters())]))
    return A.save_adapter(model, folder, A.adapter_config("full", 1, 0, 0.0, 0.0, [], base_model=str(base)))


def tuned_logits(base: Path, adapter: Path | None, ids=IDS, quantize=None) -> np.ndarray:
    """mlxft's own base + adapter (unfused, float32): the reference every export is held to."""
    model = load_model(str(base), dtype="float32", quantize=quantize).model
    if adapter is not None:
        A.load_adapter(model, adapter)
    model.eval()
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def mlx_lm_logits(folder: Path, ids=IDS) -> tuple[np.ndarray, nn.Module]:
    import mlx_lm

    model, _ = mlx_lm.load(str(folder))
    return np.array(model(mx.array([ids]))[0].astype(mx.float32)), model


def quantized_copy(dense: Path, out: Path, bits: int = 4, group: int = 32) -> Path:
    """A tiny checkpoint in mlx-lm's quantized layout (weights, scales, biases; config `quantization`)."""
    import mlx_lm

    shutil.copytree(dense, out)
    model, _ = mlx_lm.load(str(dense))
    nn.quantize(model, group_size=group, bits=bits)
    (out / "model.safetensors").unlink()
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization"] = {"group_size": group, "bits": bits, "mode": "affine"}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def train_run(recipe: dict):
    run = train(recipe)
    assert run.ok, (run.status, run.error)
    return run.path


def header_dtypes(folder: Path) -> set[str]:
    return {info.dtype for f in folder.glob("model*.safetensors") for info in check_safetensors(f, f.name).values()}


def fid(folder: Path) -> dict:
    return json.loads((folder / FIDELITY_FILE).read_text())


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_base(tiny_llama, tmp_path_factory) -> Path:
    """The tiny llama in bfloat16, as a Hub model comes: torch_dtype, generation_config.json, a LICENSE."""
    out = tmp_path_factory.mktemp("bf16") / "base"
    shutil.copytree(tiny_llama, out)
    weights = mx.load(str(out / "model.safetensors"))
    mx.save_safetensors(str(out / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()})
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16", "architectures": ["LlamaForCausalLM"]}))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "temperature": 0.7}))
    (out / "LICENSE").write_text("Apache-2.0, the tiny base's license\n")
    return out


@pytest.fixture(scope="module")
def q4_base(tiny_llama, tmp_path_factory) -> Path:
    return quantized_copy(tiny_llama, tmp_path_factory.mktemp("q4") / "base")


CASES = {"llama-lora": ("llama", "lm-lora", lora_adapter()), "qwen2-lora": ("qwen2", "lm-lora", lora_adapter()),
         "llama-dora": ("llama", "lm-dora", dora_adapter), "qwen2-dora": ("qwen2", "lm-dora", dora_adapter),
         "llama-full": ("llama", "lm-full", full_adapter)}


@pytest.fixture(scope="module")
def fused_cases(tiny_llama, tiny_qwen, chat_data, tmp_path_factory):
    """name -> (base, run, export folder), each exported once for the mlx-lm and the transformers tests."""
    made = {}

    def get(name: str):
        if name not in made:
            arch, kind, make = CASES[name]
            base = {"llama": tiny_llama, "qwen2": tiny_qwen}[arch]
            root = tmp_path_factory.mktemp(name)
            run = fake_run(root, lm_recipe(base, chat_data, root, kind=kind), make)
            made[name] = (base, run, export_run(run, "fused").folder)
        return made[name]

    return get


@pytest.fixture(scope="module")
def dpo_run(tiny_llama, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dpo")
    rng = random.Random(0)
    rows = [{"prompt": [{"role": "user", "content": f"What color is the {a}?"}],
             "chosen": [{"role": "assistant", "content": f"The {a} is red."}],
             "rejected": [{"role": "assistant", "content": f"The {a} is blue."}]} for a in (rng.choice(["cat", "dog", "fish"]) for _ in range(24))]
    write_jsonl(root / "data" / "train.jsonl", rows[:16])
    write_jsonl(root / "data" / "valid.jsonl", rows[16:])
    return train_run({"kind": "lm-dpo", "model": str(tiny_llama), "output_dir": str(root / "runs"), "seed": 0,
                      "data": {"path": str(root / "data"), "max_seq_length": 64},
                      "lora": {"rank": 4, "alpha": 8, "targets": "all-linear"},
                      "train": {"steps": 3, "batch_size": 4, "learning_rate": 5e-2, "eval_every": 3, "save_every": None, "compile": False}})


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    from test_lm_classify import colour_row

    folder = tmp_path_factory.mktemp("colours")
    rng = random.Random(0)
    for split, n in (("train", 32), ("valid", 8)):
        write_jsonl(folder / f"{split}.jsonl", [colour_row(rng) for _ in range(n)])
    return folder


@pytest.fixture(scope="module")
def classifier_runs(tiny_llama, tiny_qwen, colours, tmp_path_factory):
    """head (and arch) -> a trained lm-classify run, trained once."""
    from test_lm_classify import classify_recipe

    made = {}

    def get(head: str, arch: str = "llama") -> Path:
        if (head, arch) not in made:
            out = tmp_path_factory.mktemp(f"classify-{head}-{arch}")
            base = {"llama": tiny_llama, "qwen2": tiny_qwen}[arch]
            made[head, arch] = train_run(classify_recipe(base, colours, out, classify={"head": head},
                                                         train={"steps": 4, "eval_every": 4, "save_every": None, "learning_rate": 5e-2}))
        return made[head, arch]

    return get


TEXTS = ["red cat dog the", "the quick blue fish", "a lazy bird red", "blue", "fish the red"]


# -- the folder ------------------------------------------------------------------------------------


def test_fused_folder_stands_alone_in_the_base_dtype(bf16_base, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(bf16_base, chat_data, tmp_path), lora_adapter())
    result = export_run(run, "fused")
    folder = result.folder
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "LICENSE",
            FIDELITY_FILE} <= set(result.files)
    assert json.loads((folder / "generation_config.json").read_text()) == {"eos_token_id": 2, "temperature": 0.7}
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]  # the chat template travels with it
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16" and cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert "quantization" not in cfg and "quantization_config" not in cfg
    assert header_dtypes(folder) == {"BF16"}
    assert not (folder / "model.safetensors.index.json").exists()  # one file: no index
    # The note says what was measured; rounding a strong update to bfloat16 keeps it.
    f = fid(folder)
    assert f["lost_share"] < 0.05 and not f["fine_tune_lost"] and f["dtype"] == "bfloat16"
    assert any(n.startswith("fidelity (fused, dense bfloat16)") for n in result.notes)

    wider = export_run(run, "fused", out=tmp_path / "f32", options=ExportOptions(dtype="float32"))
    assert header_dtypes(wider.folder) == {"F32"} and json.loads((wider.folder / "config.json").read_text())["torch_dtype"] == "float32"
    expected = tuned_logits(bf16_base, run / "adapter")
    got, _ = mlx_lm_logits(wider.folder)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_mlx_lm_loads_the_fused_model_with_the_logits_of_base_plus_adapter(fused_cases, case):
    base, run, folder = fused_cases(case)
    expected = tuned_logits(base, run / "adapter")
    assert np.abs(expected - tuned_logits(base, None)).max() > 1e-2  # the fine-tune moves the logits: the check can fail
    got, model = mlx_lm_logits(folder)
    assert np.abs(got - expected).max() <= 1e-4
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    assert fid(folder)["lost_share"] < 1e-4


def test_a_large_model_is_sharded_with_an_index(tiny_llama, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path), lora_adapter())
    result = export_run(run, "fused", options=ExportOptions(extra={"max_shard_bytes": 150_000}))
    shards = sorted(f for f in result.files if f.startswith("model-"))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors" and "model.safetensors" not in result.files
    index = json.loads((result.folder / "model.safetensors.index.json").read_text())
    tensors = check_model_weights(result.folder)  # every shard the index lists is there and whole
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(np.prod(t.shape) * 4 for t in tensors.values())
    got, _ = mlx_lm_logits(result.folder)
    assert np.abs(got - tuned_logits(tiny_llama, run / "adapter")).max() <= 1e-4


# -- quantized bases ----------------------------------------------------------------------------------


def test_re_quantizing_erases_a_small_update_and_the_export_warns_with_numbers(q4_base, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(q4_base, chat_data, tmp_path), lora_adapter(strength=0.002))  # far below a 4-bit step
    dense = export_run(run, "fused", out=tmp_path / "dense")
    requant = export_run(run, "fused", out=tmp_path / "q4", options=ExportOptions(quantize=4))

    # Dequantized: the update is all there, and no warning.
    f = fid(dense.folder)
    assert f["kl_tuned_base"] > 1e-6 and f["lost_share"] < 0.01 and not f["fine_tune_lost"]
    assert not any(n.startswith("WARNING") for n in dense.notes)
    assert any("the base is 4-bit: it was dequantized" in n for n in dense.notes)
    cfg = json.loads((dense.folder / "config.json").read_text())
    assert "quantization" not in cfg and header_dtypes(dense.folder) == {"F32"}
    got, _ = mlx_lm_logits(dense.folder)
    assert np.abs(got - tuned_logits(q4_base, run / "adapter")).max() <= 1e-4

    # Re-quantized to the base's 4 bits: the update is rounded away, and the notes say so with the numbers.
    f = fid(requant.folder)
    assert f["fine_tune_lost"] and f["lost_share"] > 0.5 and f["bits"] == 4 and f["group_size"] == 32
    warning = next(n for n in requant.notes if n.startswith("WARNING"))
    assert f"{f['kl_tuned_exported']:.3g}" in warning and f"{f['kl_tuned_base']:.3g}" in warning and "leave out --quantize" in warning
    cfg = json.loads((requant.folder / "config.json").read_text())
    assert cfg["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    got, model = mlx_lm_logits(requant.folder)
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    base_logits = tuned_logits(q4_base, None)
    # What mlx-lm reads back is (nearly) the base again: the fine-tune is gone, as the warning said.
    assert np.abs(got - base_logits).max() < np.abs(tuned_logits(q4_base, run / "adapter") - base_logits).max()


def test_an_update_that_survives_re_quantizing_gets_no_warning(q4_base, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(q4_base, chat_data, tmp_path), lora_adapter(strength=0.05))
    result = export_run(run, "fused", options=ExportOptions(quantize=8))
    f = fid(result.folder)
    assert f["kl_tuned_base"] > 1e-3 and f["lost_share"] < 0.05 and not f["fine_tune_lost"]
    assert not any(n.startswith("WARNING") for n in result.notes)
    assert json.loads((result.folder / "config.json").read_text())["quantization"]["bits"] == 8


def test_quantize_over_a_dense_base_makes_an_mlx_lm_quantized_model(tiny_llama, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path), lora_adapter())
    result = export_run(run, "fused", options=ExportOptions(quantize=8))
    cfg = json.loads((result.folder / "config.json").read_text())
    assert cfg["quantization"] == {"group_size": 64, "bits": 8, "mode": "affine"} == cfg["quantization_config"]
    got, model = mlx_lm_logits(result.folder)
    assert sum(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()) == 2 * 7 + 1  # every block's linears, the LM head
    f = fid(result.folder)
    assert f["lost_share"] < 0.05 and f["what"] == "fused, quantized to 8 bits (group 64)"
    assert np.abs(got - tuned_logits(tiny_llama, run / "adapter")).max() < 0.1  # 8-bit rounding, not a different model


def test_re_quantizing_onto_the_base_grid_gives_back_the_base_exactly(q4_base, chat_data, tmp_path):
    """A zero update re-quantized to the base's bits is the base's own packed weights, scales and biases (MLX's fresh
    quantization of dequantized weights is not: it moves values by a whole step)."""
    run = fake_run(tmp_path, lm_recipe(q4_base, chat_data, tmp_path), lora_adapter(strength=0.0))
    result = export_run(run, "fused", options=ExportOptions(quantize=4))
    base = mx.load(str(q4_base / "model.safetensors"))
    out = mx.load(str(result.folder / "model.safetensors"))
    assert set(out) == set(base)
    assert all(mx.array_equal(out[k], base[k]).item() for k in base)
    assert fid(result.folder)["kl_tuned_exported"] < 1e-9


def test_a_qlora_run_fuses_onto_the_quantized_base_it_trained_on(tiny_llama, chat_data, tmp_path):
    path = train_run(lm_recipe(tiny_llama, chat_data, tmp_path, kind="lm-qlora", quantize={"bits": 4, "group_size": 32},
                               train={"steps": 2, "eval_every": 2, "save_every": None}))
    result = export_run(path, "fused")
    expected = tuned_logits(tiny_llama, path / "adapter", quantize=(4, 32))
    got, _ = mlx_lm_logits(result.folder)
    assert np.abs(got - expected).max() <= 1e-4  # dequant(W_q) + update, not the dense W + update
    assert np.abs(got - tuned_logits(tiny_llama, path / "adapter")).max() > 1e-3
    assert any("the base is 4-bit" in n for n in result.notes)
    assert "the run's 'valid' split" in fid(result.folder)["source"]


# -- DPO and classifiers ----------------------------------------------------------------------------------


def test_a_dpo_run_fuses_like_any_adapter(dpo_run, tiny_llama):
    result = export_run(dpo_run, "fused")
    got, _ = mlx_lm_logits(result.folder)
    assert np.abs(got - tuned_logits(tiny_llama, dpo_run / "adapter")).max() <= 1e-4
    f = fid(result.folder)
    assert f["kl_tuned_base"] > 0 and f["prompts"] == 8 and "'valid' split" in f["source"]


def test_a_score_classifier_becomes_a_sequence_classification_folder(classifier_runs):
    run = classifier_runs("score")
    result = export_run(run, "fused")
    cfg = json.loads((result.folder / "config.json").read_text())
    clf = json.loads((run / "adapter" / "classifier.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"]
    assert cfg["num_labels"] == 2 and cfg["id2label"] == clf["id2label"] and cfg["label2id"] == clf["label2id"]
    assert cfg["pad_token_id"] == clf["pad_token_id"]
    assert cfg["mlxft_classifier"]["prompt_template"] == clf["prompt_template"] and cfg["mlxft_classifier"]["head"] == "score"
    tensors = check_safetensors(result.folder / "model.safetensors", "weights")
    assert tensors["score.weight"].shape == (2, clf["hidden_size"])
    assert not any(k.startswith("lm_head.") for k in tensors)
    f = fid(result.folder)
    assert f["positions"] == f["prompts"] and f["lost_share"] < 1e-4  # one label distribution per prompt
    assert any("AutoModelForSequenceClassification" in n for n in result.notes)
    with pytest.raises(MlxftError, match="--quantize makes an MLX-only model"):
        export_run(run, "fused", out=run / "exports" / "q", options=ExportOptions(quantize=4))


def test_a_verbalizer_classifier_is_a_causal_lm_with_its_label_words_in_config(classifier_runs, tiny_llama):
    run = classifier_runs("verbalizer")
    result = export_run(run, "fused")
    cfg = json.loads((result.folder / "config.json").read_text())
    clf = json.loads((run / "adapter" / "classifier.json").read_text())
    entry = cfg["mlxft_classifier"]
    assert cfg["architectures"] == ["LlamaForCausalLM"] and "num_labels" not in cfg
    assert entry["label_words"] == {k: v["word"] for k, v in clf["verbalizer"].items()}
    assert entry["label_token_ids"] == {k: v["token_ids"] for k, v in clf["verbalizer"].items()}
    assert any("label words" in n and "summed log-probability" in n for n in result.notes)
    got, _ = mlx_lm_logits(result.folder)
    assert np.abs(got - tuned_logits(tiny_llama, run / "adapter")).max() <= 1e-4


# -- bad input ------------------------------------------------------------------------------------------


def test_a_moved_base_is_named_and_base_finds_it(tiny_llama, chat_data, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    run = fake_run(tmp_path, lm_recipe(base, chat_data, tmp_path), lora_adapter())
    base.rename(tmp_path / "moved")
    with pytest.raises(ModelError, match="the base model this run was trained on cannot be found") as err:
        export_run(run, "fused")
    assert "--base" in err.value.hint and not (run / "exports" / "fused").exists()
    result = export_run(run, "fused", options=ExportOptions(base=str(tmp_path / "moved")))
    got, _ = mlx_lm_logits(result.folder)
    assert np.abs(got - tuned_logits(tmp_path / "moved", run / "adapter")).max() <= 1e-4
    with pytest.raises(ModelError, match="--base .*nowhere"):
        export_run(run, "fused", options=ExportOptions(base=str(tmp_path / "nowhere")))


def test_a_base_that_does_not_fit_the_adapter_is_refused(tiny_llama, chat_data, tmp_path):
    run = fake_run(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path), lora_adapter())
    other = tmp_path / "one-layer"  # the same llama with its second block gone
    shutil.copytree(tiny_llama, other)
    weights = mx.load(str(other / "model.safetensors"))
    mx.save_safetensors(str(other / "model.safetensors"), {k: v for k, v in weights.items() if not k.startswith("model.layers.1.")})
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    with pytest.raises(ModelError, match="do not fit this model"):
        export_run(run, "fused", options=ExportOptions(base=str(other)))
    assert not (run / "exports" / "fused").exists()


@pytest.mark.parametrize("options, message", [(ExportOptions(dtype="q8_0"), "--dtype q8_0"), (ExportOptions(quantize=3), "--quantize 3")])
def test_options_a_fused_model_cannot_take_are_refused(tiny_llama, chat_data, tmp_path, options, message):
    run = fake_run(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path), lora_adapter())
    with pytest.raises(MlxftError, match=message):
        export_run(run, "fused", options=options)
    assert not (run / "exports" / "fused").exists()


def test_the_cli_exports_fused_and_prints_the_notes(tiny_llama, chat_data, tmp_path, capsys):
    from mlxft.cli import main

    run = fake_run(tmp_path, lm_recipe(tiny_llama, chat_data, tmp_path), lora_adapter())
    assert main(["export", str(run), "--format", "fused", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["format"] == "fused" and "model.safetensors" in answer["files"]
    assert any(n.startswith("fidelity") for n in answer["notes"])
    assert main(["export", str(run), "--format", "fused", "--dtype", "f16"]) == 1
    err = capsys.readouterr().err
    assert "--dtype f16" in err and "--format gguf" in err and "Traceback" not in err


# -- the measurement itself ------------------------------------------------------------------------------


def test_mean_kl_equals_a_hand_computation():
    p, q = np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 0.0, 0.0]])
    sp, sq = np.exp(p) / np.exp(p).sum(), np.exp(q) / np.exp(q).sum()
    assert fidelity.mean_kl(mx.array(p), mx.array(q)) == pytest.approx(float((sp * np.log(sp / sq)).sum()), rel=1e-5)
    assert fidelity.mean_kl(mx.array(p), mx.array(p + 3.0)) == pytest.approx(0.0, abs=1e-6)  # a shift is no change (float32 rounding aside)


def test_the_verdict_reads_the_share_of_the_fine_tune_lost():
    def make(lost, effect, to_base):
        return fidelity.Fidelity(source="s", prompts=1, positions=1, what="w", kl_tuned_exported=lost, max_logit_change=0.0,
                                 kl_tuned_base=effect, kl_base_exported=to_base)

    assert not make(0.01, 1.0, 0.99).fine_tune_lost
    assert make(0.6, 1.0, 0.7).fine_tune_lost                       # more than half of the effect is gone
    assert make(0.3, 1.0, 0.1).fine_tune_lost and make(0.3, 1.0, 0.1).closer_to_base  # nearer the base than the tuned model
    assert make(1e-3, 1e-9, 1e-3).lost_share is None and not make(1e-3, 1e-9, 1e-3).fine_tune_lost  # nothing to lose
    assert make(0.6, 1.0, 0.7).notes("do this")[1].startswith("WARNING") and "do this" in make(0.6, 1.0, 0.7).notes("do this")[1]


def test_held_out_prompts_fall_back_to_a_fixed_set_when_the_data_is_gone(tiny_llama, chat_data, tmp_path):
    from mlxft.recipe import recipe_from_dict

    tokenizer = load_model(str(tiny_llama)).tokenizer
    here = fidelity.held_out_prompts(recipe_from_dict(lm_recipe(tiny_llama, chat_data, tmp_path)), tokenizer)
    assert len(here.prompts) == fidelity.MAX_PROMPTS and "'valid' split" in here.source
    assert all(0 < len(p) <= fidelity.MAX_TOKENS for p in here.prompts)
    gone = fidelity.held_out_prompts(recipe_from_dict(lm_recipe(tiny_llama, tmp_path / "gone", tmp_path)), tokenizer)
    assert len(gone.prompts) == len(fidelity.FIXED_PROMPTS) and "fixed prompts" in gone.source and "gone" in gone.source


# -- transformers reads the folders (interop) -------------------------------------------------------------


def model_class_name(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["architectures"][0]


def _torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return torch


@pytest.mark.interop
@pytest.mark.parametrize("case", list(CASES))
def test_transformers_loads_the_fused_causal_lm_with_the_logits_of_base_plus_adapter(fused_cases, case):
    torch = _torch()
    from transformers import AutoModelForCausalLM

    base, run, folder = fused_cases(case)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([IDS])).logits[0].numpy()
    assert np.abs(got - tuned_logits(base, run / "adapter")).max() <= 1e-4


@pytest.mark.interop
def test_transformers_loads_the_dense_export_of_a_dpo_run_and_of_a_quantized_base(dpo_run, tiny_llama, q4_base, chat_data, tmp_path):
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = fake_run(tmp_path, lm_recipe(q4_base, chat_data, tmp_path), lora_adapter(strength=0.05))
    for path, base in ((dpo_run, tiny_llama), (run, q4_base)):
        folder = export_run(path, "fused").folder
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        with torch.no_grad():
            got = model(torch.tensor([IDS])).logits[0].numpy()
        assert np.abs(got - tuned_logits(base, path / "adapter")).max() <= 1e-4
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"


@pytest.mark.interop
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_transformers_sequence_classifier_gives_the_probabilities_of_mlxft_classifier(classifier_runs, arch):
    torch = _torch()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = classifier_runs("score", arch)
    folder = export_run(run, "fused").folder
    assert model_class_name(folder) == {"llama": "LlamaForSequenceClassification", "qwen2": "Qwen2ForSequenceClassification"}[arch]
    expected = mlxft.classifier(run).probabilities(TEXTS)
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    assert type(model).__name__ == model_class_name(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    template = model.config.mlxft_classifier["prompt_template"]
    batch = tok([template.format(text=t) for t in TEXTS], return_tensors="pt", padding=True)  # a padded batch: pad_token_id at work
    with torch.no_grad():
        got = torch.softmax(model(**batch).logits, dim=-1).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert [model.config.id2label[i] for i in range(2)] == mlxft.classifier(run).labels
    assert expected.max(axis=1).min() < 0.999  # not saturated: the comparison means something


@pytest.mark.interop
def test_transformers_scores_the_verbalizer_label_words_like_mlxft_classifier(classifier_runs):
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = classifier_runs("verbalizer")
    folder = export_run(run, "fused").folder
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    entry = model.config.mlxft_classifier
    scores = []
    for text in TEXTS:
        prompt = tok(entry["prompt_template"].format(text=text))["input_ids"]
        row = []
        for label in entry["labels"]:
            word = entry["label_token_ids"][label]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + word])).logits[0], dim=-1)
            row.append(sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(word)))
        scores.append(row)
    got = torch.softmax(torch.tensor(scores), dim=-1).numpy()
    assert np.abs(got - mlxft.classifier(run).probabilities(TEXTS)).max() <= 1e-4


# -- the real small model (slow) -------------------------------------------------------------------------


REAL = ASSETS / "models" / "smollm2-135m-instruct-4bit"
REAL_DATA = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "config.json").is_file() or not REAL_DATA.is_dir(), reason="needs ../shared/assets (real model and data)")
def test_real_lora_fused_into_the_4bit_base_with_and_without_re_quantizing(tmp_path):
    """A short LoRA run on SmolLM2-135M (4-bit, group 32), fused dense (bfloat16, the base's dtype; float32) and
    re-quantized (4 and 8 bits); the numbers are printed for the record (pytest -s)."""
    recipe = {"kind": "lm-lora", "model": str(REAL), "output_dir": str(tmp_path / "runs"), "seed": 0,
              "data": {"path": str(REAL_DATA), "format": "chat", "max_seq_length": 128},
              "lora": {"rank": 8, "alpha": 16, "targets": "all-linear"},
              "train": {"steps": 8, "batch_size": 4, "learning_rate": 5e-4, "eval_every": None, "save_every": None, "compile": False}}
    path = train_run(recipe)
    found = {}
    for name, options in (("dense bfloat16", ExportOptions()), ("dense float32", ExportOptions(dtype="float32")),
                          ("4-bit", ExportOptions(quantize=4)), ("8-bit", ExportOptions(quantize=8))):
        result = export_run(path, "fused", out=tmp_path / name.replace(" ", "-"), options=options)
        f = found[name] = fid(result.folder)
        print(f"\n{name}: KL(tuned||export) {f['kl_tuned_exported']:.4g}, KL(tuned||base) {f['kl_tuned_base']:.4g}, "
              f"share {f['lost_share']:.3g}, max logit change {f['max_logit_change']:.3g}, KL(base||export) {f['kl_base_exported']:.4g}, "
              f"lost: {f['fine_tune_lost']}")
        print("\n".join(result.notes))
        assert f["fine_tune_lost"] == any(n.startswith("WARNING") for n in result.notes)
    assert found["dense float32"]["lost_share"] < 0.01 and not found["dense bfloat16"]["fine_tune_lost"]
    assert found["4-bit"]["lost_share"] > found["8-bit"]["lost_share"] > found["dense float32"]["lost_share"]
    assert json.loads((tmp_path / "dense-bfloat16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    got, model = mlx_lm_logits(tmp_path / "4-bit")
    assert np.isfinite(got).all() and any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
