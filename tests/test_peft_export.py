"""PEFT both ways: mlx-lm adapters written as PEFT's files (names, layouts, config), read back bit-exact, PEFT folders taken
by --adapter / init_adapter / import-adapter, every input we cannot take named; and (marker `interop`) the real peft and
transformers loading our exports, and adapters made by peft itself, with the same logits as mlxft's."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from conftest import ASSETS, lm_recipe, write_jsonl
from mlxft.api import train
from mlxft.errors import MlxftError, ModelError
from mlxft.export import ExportOptions, export_run
from mlxft.llm import peft_format as P
from mlxft.llm.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter, load_adapter
from mlxft.llm.loading import load_model

TOKENS = [[1, 5, 9, 33, 70, 2, 8, 100, 41, 7, 12, 250]]
ATOL = 1e-4  # float32, max abs logit difference across frameworks


def _train(recipe: dict) -> Path:
    run = train(recipe)
    assert run.ok, run.error
    return run.path


def _logits(model_dir: Path, adapter=None, tokens=TOKENS) -> np.ndarray:
    loaded = load_model(str(model_dir), dtype="float32")
    if adapter is not None:
        load_adapter(loaded.model, adapter)
    loaded.model.eval()  # LoRA dropout off, as PEFT's eval() has it
    return np.array(loaded.model(mx.array(tokens)))


def _read_mlx(folder: Path) -> tuple[dict, dict]:
    return json.loads((folder / ADAPTER_CONFIG).read_text()), mx.load(str(folder / ADAPTER_WEIGHTS))


def _write_peft(folder: Path, config: dict, tensors: dict) -> Path:
    """A PEFT folder written by hand (for inputs peft itself would not make)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none",
            "target_modules": ["q_proj"], "base_model_name_or_path": None, **config}
    (folder / P.PEFT_CONFIG).write_text(json.dumps(full))
    mx.save_safetensors(str(folder / P.PEFT_WEIGHTS), tensors)
    return folder


def _qv_tensors(layers=(0, 1), r=4, dims=(64, 64, 32)) -> dict:
    """PEFT tensors for q_proj (64 -> 64) and v_proj (64 -> 32) of the tiny llama's `layers`."""
    hidden, q_out, v_out = dims
    out = {}
    for i in layers:
        for name, d_out in (("q_proj", q_out), ("v_proj", v_out)):
            stem = f"base_model.model.model.layers.{i}.self_attn.{name}"
            out[f"{stem}.lora_A.weight"] = mx.random.normal((r, hidden))
            out[f"{stem}.lora_B.weight"] = mx.random.normal((d_out, r))
    return out


# -- runs trained for a few steps ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tiny_llama, chat_data, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("peft-runs")
    steps = {"steps": 3, "eval_every": None, "save_every": None, "learning_rate": 2e-2}
    return {
        "lora": _train(lm_recipe(tiny_llama, chat_data, out / "lora", train=steps)),
        "dora": _train(lm_recipe(tiny_llama, chat_data, out / "dora", kind="lm-dora", train=steps,
                                 lora={"rank": 4, "alpha": 6, "layers": 1, "targets": ["q_proj", "v_proj"]})),
    }


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    rng = random.Random(0)

    def row():
        colour = rng.choice(["red", "blue", "green"])
        words = rng.sample(["cat", "dog", "bird", "fish", "the", "a"], 3) + [colour]
        rng.shuffle(words)
        return {"text": " ".join(words), "label": colour}

    write_jsonl(folder / "train.jsonl", [row() for _ in range(48)])
    write_jsonl(folder / "valid.jsonl", [row() for _ in range(12)])
    return folder


def _classify_recipe(model: Path, data: Path, out: Path, head: str) -> dict:
    return {"kind": "lm-classify", "model": str(model), "output_dir": str(out), "seed": 0,
            "data": {"path": str(data), "max_seq_length": 64},
            "classify": {"head": head, "prompt_template": "Text: {text}\nColour:"},
            "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj", "o_proj"]},
            "train": {"steps": 4, "batch_size": 8, "learning_rate": 1e-2, "eval_every": None, "save_every": None, "compile": False}}


@pytest.fixture(scope="module")
def classifier_runs(tiny_llama, colours, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("peft-cls")
    return {head: _train(_classify_recipe(tiny_llama, colours, out / head, head)) for head in ("score", "verbalizer")}


# -- mlx-lm -> PEFT: names, layouts, config ------------------------------------------------------------------------


def test_peft_names_and_layouts_are_the_transposed_mlx_tensors(runs, tiny_llama):
    result = export_run(runs["lora"], "peft")
    assert result.files == [P.PEFT_CONFIG, P.PEFT_WEIGHTS]
    cfg, mlx_w = _read_mlx(runs["lora"] / "adapter")
    peft_w = mx.load(str(result.folder / P.PEFT_WEIGHTS))
    assert len(peft_w) == len(mlx_w) == 2 * 2 * 7  # 2 blocks x 7 linears x (A, B)
    for name, w in mlx_w.items():
        stem, leaf = name.rsplit(".", 1)
        got = peft_w[f"base_model.model.{stem}.{ {'lora_a': 'lora_A', 'lora_b': 'lora_B'}[leaf] }.weight"]
        assert got.dtype == w.dtype and np.array_equal(np.array(got), np.array(w.T))
    q = peft_w["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    v = peft_w["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert q.shape == (4, 64) and v.shape == (32, 4)  # [r, in] and [out, r] (v_proj: 2 kv heads x 16)
    pc = json.loads((result.folder / P.PEFT_CONFIG).read_text())
    assert pc["peft_type"] == "LORA" and pc["task_type"] == "CAUSAL_LM" and pc["r"] == 4 and pc["lora_alpha"] == 8
    assert pc["lora_alpha"] / pc["r"] == cfg["lora_parameters"]["scale"]
    assert pc["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert pc["layers_to_transform"] is None and pc["use_dora"] is False and pc["bias"] == "none"
    assert pc["base_model_name_or_path"] == str(Path(tiny_llama).resolve())
    assert any("local folder" in n for n in result.notes)


def test_dora_of_the_last_block_names_its_blocks_and_magnitudes(runs):
    folder = export_run(runs["dora"], "peft").folder
    pc = json.loads((folder / P.PEFT_CONFIG).read_text())
    assert pc["use_dora"] is True and pc["layers_to_transform"] == [1] and pc["layers_pattern"] == "layers"
    assert pc["target_modules"] == ["q_proj", "v_proj"] and pc["r"] == 4 and pc["lora_alpha"] == 6
    w = mx.load(str(folder / P.PEFT_WEIGHTS))
    _, mlx_w = _read_mlx(runs["dora"] / "adapter")
    assert sorted(k.split("layers.")[1].split(".")[0] for k in w) == ["1"] * 6
    m = w["base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector"]
    assert m.shape == (32,) and np.array_equal(np.array(m), np.array(mlx_w["model.layers.1.self_attn.v_proj.m"]))


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_mlx_to_peft_to_mlx_is_bit_exact(runs, kind, tmp_path):
    folder = export_run(runs[kind], "peft").folder
    back, notes = P.import_peft_adapter(folder, tmp_path / "back")
    cfg0, w0 = _read_mlx(runs[kind] / "adapter")
    cfg1, w1 = _read_mlx(back)
    for key in ("fine_tune_type", "num_layers", "lora_parameters"):
        assert cfg1[key] == cfg0[key], key
    assert cfg1["mlxft"]["alpha"] == cfg0["mlxft"]["alpha"]
    assert sorted(w1) == sorted(w0)
    for name in w0:
        assert w1[name].dtype == w0[name].dtype and np.array_equal(np.array(w1[name]), np.array(w0[name])), name
    assert notes[0].startswith(f"{kind} r4")


def test_a_peft_folder_is_an_adapter_for_mlxft_and_its_import_for_mlx_lm(runs, tiny_llama, tmp_path):
    from mlx_lm.utils import load as mlx_lm_load

    folder = export_run(runs["dora"], "peft").folder
    expected = _logits(tiny_llama, runs["dora"])
    assert not np.allclose(expected, _logits(tiny_llama), atol=1e-3), "the trained adapter must change the output"
    assert np.array_equal(_logits(tiny_llama, folder), expected)
    _, cfg = check_adapter(folder)
    assert cfg["fine_tune_type"] == "dora" and cfg["num_layers"] == 1 and cfg["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    back, _ = P.import_peft_adapter(folder, tmp_path / "for-mlx-lm")
    model, _ = mlx_lm_load(str(tiny_llama), adapter_path=str(back))
    assert np.allclose(np.array(model(mx.array(TOKENS))), expected, atol=1e-5)


def test_training_can_start_from_a_peft_folder(runs, tiny_llama, chat_data, tmp_path):
    folder = export_run(runs["dora"], "peft").folder
    run = _train(lm_recipe(tiny_llama, chat_data, tmp_path, kind="lm-dora", init_adapter=str(folder),
                           train={"steps": 1, "eval_every": None, "save_every": None, "learning_rate": 1e-9}))
    cfg, _ = _read_mlx(run / "adapter")
    assert cfg["fine_tune_type"] == "dora" and cfg["num_layers"] == 1 and cfg["mlxft"]["init_adapter"] == str(folder)
    assert np.allclose(_logits(tiny_llama, run), _logits(tiny_llama, folder), atol=1e-4)  # a tiny step away from where it started


@pytest.mark.parametrize("scale,rank,recorded", [(2.0, 4, 8.0), (0.1, 3, None), (1 / 3, 7, None), (0.7, 12, 8.4), (0.7, 12, None), (1e-3, 5, None), (20.0, 8, None)])
def test_lora_alpha_gives_back_the_scale_exactly_where_a_float_can(scale, rank, recorded):
    alpha = P._alpha_for(scale, rank, recorded)
    if recorded is not None and recorded / rank == scale:
        assert alpha == recorded
    near, x, y = [scale * rank], scale * rank, scale * rank
    for _ in range(16):
        x, y = math.nextafter(x, math.inf), math.nextafter(y, -math.inf)
        near += [x, y]
    if any(a / rank == scale for a in near):
        assert alpha / rank == scale
    else:
        assert abs(alpha / rank - scale) <= math.ulp(scale)


def test_target_modules_are_leaf_names_unless_those_would_catch_other_modules():
    layout = P.BlockLayout(layers=[1, 2], keys=["self_attn.o_proj", "self_attn.q_proj"], rank=4, dora=False)
    base = {f"model.layers.{i}.{k}": (8, 8) for i in range(3) for k in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")}
    assert P.choose_target_modules(layout, 3, base) == (["o_proj", "q_proj"], [1, 2])
    # A cross-attention o_proj in the same blocks: the leaf would adapt it too, the block path does not.
    base.update({f"model.layers.{i}.cross_attn.o_proj": (8, 8) for i in range(3)})
    targets, layers = P.choose_target_modules(layout, 3, base)
    assert targets == ["self_attn.o_proj", "self_attn.q_proj"] and layers == [1, 2]
    # A vision tower with its own layers.N.self_attn.q_proj: only a regex of the exact modules is exact.
    base.update({f"vision.layers.{i}.self_attn.q_proj": (8, 8) for i in range(3)})
    targets, layers = P.choose_target_modules(layout, 3, base)
    assert isinstance(targets, str) and layers is None
    assert P._peft_would_adapt(targets, None, set(base)) == {f"model.layers.{i}.{k}" for i in (1, 2) for k in layout.keys}


# -- classifiers -----------------------------------------------------------------------------------------------------


def test_a_score_head_classifier_is_a_seq_cls_adapter_and_imports_back_as_the_same_classifier(classifier_runs, tmp_path):
    run = classifier_runs["score"]
    result = export_run(run, "peft")
    assert result.files == [P.PEFT_CONFIG, P.PEFT_WEIGHTS, P.CLASSIFIER_SIDECAR]
    pc = json.loads((result.folder / P.PEFT_CONFIG).read_text())
    assert pc["task_type"] == "SEQ_CLS" and pc["modules_to_save"] == ["score"]
    w = mx.load(str(result.folder / P.PEFT_WEIGHTS))
    score = mx.load(str(run / "adapter" / "score.safetensors"))["score.weight"]
    assert np.array_equal(np.array(w["base_model.model.score.weight"]), np.array(score))
    side = json.loads((result.folder / P.CLASSIFIER_SIDECAR).read_text())
    assert side["num_labels"] == 3 and side["id2label"] == {"0": "blue", "1": "green", "2": "red"} and "base_model_path" not in side
    assert any("num_labels=3" in n and "id2label=" in n for n in result.notes)
    with pytest.raises(ModelError, match="SEQ_CLS"):
        check_adapter(result.folder)  # a classifier's head has no place in a causal LM's adapter
    back, notes = P.import_peft_adapter(result.folder, tmp_path / "clf")
    assert sorted(p.name for p in back.iterdir()) == ["adapter_config.json", "adapters.safetensors", "classifier.json", "score.safetensors"]
    texts = ["red cat dog", "the blue fish", "a green bird"]
    assert np.array_equal(mlxft.classifier(back).scores(texts), mlxft.classifier(run).scores(texts))


def test_a_verbalizer_classifier_is_a_causal_lm_adapter_with_its_words_in_a_note(classifier_runs):
    result = export_run(classifier_runs["verbalizer"], "peft")
    pc = json.loads((result.folder / P.PEFT_CONFIG).read_text())
    assert pc["task_type"] == "CAUSAL_LM" and pc["modules_to_save"] is None
    note = next(n for n in result.notes if "verbalizer" in n)
    assert "' red'" in note and "Text: {text}" in note
    assert json.loads((result.folder / P.CLASSIFIER_SIDECAR).read_text())["verbalizer"]["red"]["word"] == " red"


# -- what is refused ----------------------------------------------------------------------------------------------


def test_a_full_fine_tune_is_refused_with_the_fused_export_as_the_way():
    assert "lm-full" not in mlxft.export.all_formats()["peft"].kinds
    with pytest.raises(ModelError, match="full fine-tune") as err:
        P.mlx_layout({"fine_tune_type": "full", "num_layers": 2}, {"model.layers.0.mlp.up_proj.weight": (8, 8)})
    assert "--format fused" in err.value.hint


def test_export_options_that_do_not_apply_are_refused_and_dtype_casts(runs, tmp_path):
    with pytest.raises(MlxftError, match="--quantize applies to fused"):
        export_run(runs["lora"], "peft", out=tmp_path / "q", options=ExportOptions(quantize=4))
    with pytest.raises(MlxftError, match="float32, float16 or bfloat16"):
        export_run(runs["lora"], "peft", out=tmp_path / "q", options=ExportOptions(dtype="q8_0"))
    folder = export_run(runs["lora"], "peft", out=tmp_path / "f16", options=ExportOptions(dtype="float16")).folder
    assert {v.dtype for v in mx.load(str(folder / P.PEFT_WEIGHTS)).values()} == {mx.float16}


def test_a_base_the_adapter_does_not_fit_is_named(runs, tmp_path):
    from tiny import build_model

    other = build_model(tmp_path / "wide", "llama")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(MlxftError, match="has 3 blocks"):
        export_run(runs["lora"], "peft", out=tmp_path / "x", options=ExportOptions(base=str(other)))


def test_the_base_is_named_by_its_hub_id_where_the_catalogue_knows_it(runs, tmp_path):
    from mlxft.export.peft import base_model_name

    for spec in ("smollm2-135m-instruct", "mlx-community/SmolLM2-135M-Instruct-4bit"):
        name, _, notes = base_model_name(None, None, ExportOptions(base=spec))
        assert name == "HuggingFaceTB/SmolLM2-135M-Instruct" and any("the original of" in n for n in notes)
    # the catalogue's config says 30 blocks: an adapter of a 2-block model is refused rather than mislabelled
    with pytest.raises(MlxftError, match="the base \\(HuggingFaceTB/SmolLM2-135M-Instruct\\) has 30 blocks"):
        export_run(runs["lora"], "peft", out=tmp_path / "x", options=ExportOptions(base="smollm2-135m-instruct"))


def test_a_qlora_run_exports_its_lora_with_a_note(tiny_llama, chat_data, tmp_path):
    run = _train(lm_recipe(tiny_llama, chat_data, tmp_path, kind="lm-qlora", quantize={"bits": 4, "group_size": 32},
                           train={"steps": 2, "eval_every": None, "save_every": None}))
    result = export_run(run, "peft")
    assert any("QLoRA" in n and "unquantized base" in n for n in result.notes)
    back, _ = P.import_peft_adapter(result.folder, tmp_path / "back")
    assert _read_mlx(back)[0]["lora_parameters"] == _read_mlx(run / "adapter")[0]["lora_parameters"]


@pytest.mark.parametrize("field,value,message", [
    ("peft_type", "IA3", "peft_type: a IA3 adapter"),
    ("peft_type", "PREFIX_TUNING", "not other PEFT methods"),
    ("task_type", "SEQ_2_SEQ_LM", "task_type: SEQ_2_SEQ_LM"),
    ("bias", "all", "bias: 'all'"),
    ("fan_in_fan_out", True, "fan_in_fan_out"),
    ("rank_pattern", {"q_proj": 8}, "rank_pattern: varies by module"),
    ("alpha_pattern", {"v_proj": 32}, "alpha_pattern: varies by module"),
    ("modules_to_save", ["lm_head"], "modules_to_save: ['lm_head']"),
    ("lora_bias", True, "lora_bias"),
    ("layer_replication", [[0, 1]], "layer_replication"),
    ("trainable_token_indices", [3, 4], "trainable_token_indices"),
    ("init_lora_weights", "pissa_niter_4", "init_lora_weights: 'pissa_niter_4'"),
    ("some_future_option", "on", "some_future_option: set to 'on'"),
])
def test_peft_configs_mlxft_cannot_take_name_the_field(tiny_llama, tmp_path, field, value, message):
    folder = _write_peft(tmp_path / "a", {field: value}, _qv_tensors())
    loaded = load_model(str(tiny_llama))
    with pytest.raises(ModelError, match="mlxft cannot read this adapter") as err:
        load_adapter(loaded.model, folder)
    assert message in str(err.value)


def test_every_config_problem_is_named_at_once():
    problems = P.peft_config_problems({"peft_type": "LORA", "r": 0, "lora_alpha": "x", "bias": "lora_only", "use_qalora": True})
    assert [p.split(":")[0] for p in problems] == ["r", "lora_alpha", "bias", "use_qalora"]


@pytest.mark.parametrize("change,message", [
    (lambda t: {**t, "base_model.model.model.embed_tokens.lora_embedding_A": mx.zeros((4, 400))}, "LoRA on an embedding"),
    (lambda t: {**t, "base_model.model.lm_head.lora_A.weight": mx.zeros((4, 64))}, "outside the transformer blocks"),
    (lambda t: {k.replace("lora_A.weight", "lora_A.default.weight"): v for k, v in t.items()}, "carries PEFT's adapter name"),
    (lambda t: {k: v for k, v in t.items() if not k.endswith("layers.1.self_attn.q_proj.lora_B.weight")}, "layers.1.self_attn.q_proj: lacks lora_B.weight"),
    (lambda t: {k: v for k, v in t.items() if "layers.0.self_attn.v_proj" not in k}, "layers.0: has no adapter on self_attn.v_proj"),
    (lambda t: {**t, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight": mx.zeros((8, 64))}, "rank 8 but lora_B.weight rank 4"),
    (lambda t: {k: mx.zeros((v.shape[0], 2) if "lora_B" in k else (2, v.shape[1])) for k, v in t.items()}, "r: the config says rank 4 but the tensors have rank 2"),
    (lambda t: {k.replace("layers.0.", "layers.2."): v for k, v in t.items()}, "the adapter has block 2, this model only blocks 0..1"),
])
def test_peft_tensors_mlxft_cannot_take_are_named(tiny_llama, tmp_path, change, message):
    folder = _write_peft(tmp_path / "a", {}, change(_qv_tensors()))
    with pytest.raises(ModelError, match="mlxft cannot read this adapter") as err:
        load_adapter(load_model(str(tiny_llama)).model, folder)
    assert message in str(err.value)


def test_blocks_that_are_not_the_models_last_are_refused(tiny_llama, tmp_path):
    folder = _write_peft(tmp_path / "first", {"layers_to_transform": [0], "layers_pattern": "layers"}, _qv_tensors(layers=(0,)))
    with pytest.raises(ModelError, match="not the last blocks of this 2-block model"):
        load_adapter(load_model(str(tiny_llama)).model, folder)
    # import-adapter cannot tell without the base's config: it asks for it, and with it refuses the same way
    with pytest.raises(ModelError, match="--base") as err:
        P.import_peft_adapter(folder, tmp_path / "out")
    assert "layers_to_transform" in str(err.value)
    with pytest.raises(ModelError, match="not the last blocks"):
        P.import_peft_adapter(folder, tmp_path / "out", base=str(tiny_llama))
    assert not (tmp_path / "out").exists()


def test_target_modules_this_model_lacks_are_named(tiny_llama, tmp_path):
    tensors = {k.replace("self_attn.q_proj", "self_attn.qkv_proj"): v for k, v in _qv_tensors().items()}
    folder = _write_peft(tmp_path / "a", {"target_modules": ["qkv_proj", "v_proj"]}, tensors)
    with pytest.raises(ModelError, match="target_modules: self_attn.qkv_proj are not linear layers") as err:
        load_adapter(load_model(str(tiny_llama)).model, folder)
    assert "q_proj" in err.value.hint


def test_pickled_weights_and_missing_files_are_refused(tiny_llama, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / P.PEFT_CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (folder / P.PEFT_PICKLE).write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="never pickles"):
        check_adapter(folder)
    bare = tmp_path / "bare"
    bare.mkdir()
    mx.save_safetensors(str(bare / P.PEFT_WEIGHTS), _qv_tensors())
    with pytest.raises(ModelError, match="the adapter's config is missing"):
        check_adapter(bare)


def test_import_adapter_never_writes_over_a_folder_and_runs_from_the_command_line(runs, tmp_path, capsys):
    from mlxft.cli import main

    export = tmp_path / "export"
    assert main(["export", str(runs["lora"]), "--format", "peft", "--out", str(export), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == [P.PEFT_CONFIG, P.PEFT_WEIGHTS]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["import-adapter", str(export), "--out", str(taken)]) == 1
    assert "nothing is written over it" in capsys.readouterr().err and (taken / "notes.txt").read_text() == "mine"
    assert main(["import-adapter", str(export), "--out", str(tmp_path / "new"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["folder"] == str(tmp_path / "new") and sorted(p.name for p in (tmp_path / "new").iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert main(["import-adapter", str(runs["lora"] / "adapter"), "--out", str(tmp_path / "n2")]) == 1
    assert "needs no import" in capsys.readouterr().err


# -- interop: the real peft and transformers ---------------------------------------------------------------------------


def _torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    torch.manual_seed(0)
    return torch


def _lora_layers(model) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in model.modules())


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_loads_our_adapter_and_gives_mlxft_logits(runs, tiny_llama, kind):
    torch = _torch()
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    folder = export_run(runs[kind], "peft").folder
    if kind == "lora":
        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    else:
        base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(folder))
    assert _lora_layers(model) == {"lora": 14, "dora": 2}[kind]
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    ours = _logits(tiny_llama, runs[kind])
    assert not np.allclose(ours, _logits(tiny_llama), atol=1e-3)
    print(f"{kind} export: max |logit diff| peft vs mlxft {np.abs(theirs - ours).max():.2g}")
    assert np.abs(theirs - ours).max() <= ATOL


@pytest.mark.interop
def test_peft_loads_our_score_head_classifier_with_the_same_logits(classifier_runs):
    torch = _torch()
    from peft import AutoPeftModelForSequenceClassification

    folder = export_run(classifier_runs["score"], "peft").folder
    side = json.loads((folder / P.CLASSIFIER_SIDECAR).read_text())
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(folder), num_labels=side["num_labels"], id2label=side["id2label"], label2id=side["label2id"],
        pad_token_id=side["pad_token_id"], dtype=torch.float32)
    model.eval()
    clf = mlxft.classifier(classifier_runs["score"])
    texts = ["red cat dog", "the blue fish a", "green bird"]
    ids, _ = clf.encoder.encode(clf.rows(texts))
    with torch.no_grad():
        theirs = np.stack([model(torch.tensor([x.tolist()])).logits[0].numpy() for x in ids])
    print(f"score-head export: max |logit diff| peft vs mlxft {np.abs(theirs - clf.scores(texts)).max():.2g}")
    assert np.abs(theirs - clf.scores(texts)).max() <= ATOL


def _peft_made(tiny_llama, folder: Path, task="CAUSAL_LM", **lora):
    """An adapter made by peft itself on the tiny llama, with lora_B (and DoRA's magnitude) moved off their initial values."""
    torch = _torch()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "SEQ_CLS":
        base = AutoModelForSequenceClassification.from_pretrained(str(tiny_llama), num_labels=3, pad_token_id=0, dtype=torch.float32)
    else:
        base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(task_type=task, **lora))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0, 0.3)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(str(folder))
    return model


@pytest.mark.interop
@pytest.mark.parametrize("lora", [
    dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    dict(r=2, lora_alpha=5, target_modules=["q_proj", "v_proj"], use_dora=True, layers_to_transform=[1], layers_pattern="layers"),
    dict(r=8, lora_alpha=4, target_modules="all-linear", use_rslora=True, lora_dropout=0.1),
], ids=["lora", "dora-last-block", "rslora-all-linear"])
def test_an_adapter_made_by_peft_gives_its_logits_in_mlxft(tiny_llama, tmp_path, lora):
    torch = _torch()
    model = _peft_made(tiny_llama, tmp_path / "made", **lora)
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    ours = _logits(tiny_llama, tmp_path / "made")
    assert not np.allclose(ours, _logits(tiny_llama), atol=1e-2)
    print(f"peft-made {lora}: max |logit diff| mlxft vs peft {np.abs(theirs - ours).max():.2g}")
    assert np.abs(theirs - ours).max() <= ATOL
    back, notes = P.import_peft_adapter(tmp_path / "made", tmp_path / "imported")
    assert np.array_equal(_logits(tiny_llama, back), ours)
    if lora.get("use_rslora"):
        scale = json.loads((back / ADAPTER_CONFIG).read_text())["lora_parameters"]["scale"]
        assert scale == pytest.approx(4 / math.sqrt(8)) and any("sqrt(r)" in n for n in notes)


@pytest.mark.interop
def test_a_sequence_classifier_made_by_peft_imports_with_its_head(tiny_llama, tmp_path):
    torch = _torch()
    from mlxft.llm.classify import model_parts, pool_last

    model = _peft_made(tiny_llama, tmp_path / "made", task="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    back, notes = P.import_peft_adapter(tmp_path / "made", tmp_path / "imported")
    assert any("score.safetensors" in n and "cannot use it" in n for n in notes)
    loaded = load_model(str(tiny_llama))
    load_adapter(loaded.model, back)
    body, _ = model_parts(loaded.model, loaded.model_type)
    score = mx.load(str(back / "score.safetensors"))["score.weight"]
    tokens = mx.array(TOKENS)
    ours = np.array(pool_last(body(tokens), mx.array([tokens.shape[1] - 1])) @ score.T)
    print(f"peft-made SEQ_CLS: max |logit diff| mlxft vs peft {np.abs(theirs - ours).max():.2g}")
    assert np.abs(theirs - ours).max() <= ATOL


@pytest.mark.interop
def test_a_regex_target_modules_loads_in_peft_on_exactly_the_adapted_modules(runs, tiny_llama, tmp_path):
    """The regex fallback (modules a leaf name cannot single out), checked against peft's own matching."""
    torch = _torch()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = export_run(runs["dora"], "peft", out=tmp_path / "x").folder
    pc = json.loads((folder / P.PEFT_CONFIG).read_text())
    layout = P.BlockLayout(layers=[1], keys=["self_attn.q_proj", "self_attn.v_proj"], rank=4, dora=True)
    pc["target_modules"], pc["layers_to_transform"] = P.choose_target_modules(layout, 2, {"vision.layers.1.self_attn.q_proj": (8, 8)})
    pc["layers_pattern"] = None
    assert isinstance(pc["target_modules"], str)
    (folder / P.PEFT_CONFIG).write_text(json.dumps(pc))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32), str(folder))
    assert _lora_layers(model) == 2
    with torch.no_grad():
        theirs = model(torch.tensor(TOKENS)).logits.numpy()
    assert np.abs(theirs - _logits(tiny_llama, runs["dora"])).max() <= ATOL


# -- slow: the real small model -------------------------------------------------------------------------------------------

REAL = ASSETS / "models" / "smollm2-135m-instruct-4bit"
CHAT = ASSETS / "data" / "instructions" / "alpaca_en_demo_chat"


@pytest.fixture(scope="module")
def real_base(tmp_path_factory) -> Path:
    """The real model dequantized to float32 in Hugging Face layout: the base both mlxft and transformers load."""
    if not REAL.is_dir() or not CHAT.is_dir():
        pytest.skip(f"real assets not found at {ASSETS}")
    import shutil

    from mlx.utils import tree_flatten

    out = tmp_path_factory.mktemp("real") / "smollm2-135m-f32"
    out.mkdir()
    loaded = load_model(str(REAL), dtype="float32", keep_quantized=False)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(loaded.model.parameters())), metadata={"format": "pt"})
    config = {k: v for k, v in json.loads((REAL / "config.json").read_text()).items() if k not in ("quantization", "quantization_config")}
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": "float32"}))
    for f in REAL.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")) or f.name == "generation_config.json":
            shutil.copy2(f, out / f.name)
    return out


@pytest.mark.slow
@pytest.mark.interop
def test_a_real_models_lora_loads_in_peft_with_the_same_logits(real_base, tmp_path):
    torch = _torch()
    from peft import AutoPeftModelForCausalLM

    recipe = lm_recipe(real_base, CHAT, tmp_path, data={"max_seq_length": 256},
                       lora={"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj", "o_proj"], "layers": 8},
                       train={"steps": 3, "batch_size": 2, "learning_rate": 5e-3, "eval_every": None, "save_every": None})
    run = _train(recipe)
    folder = export_run(run, "peft").folder
    pc = json.loads((folder / P.PEFT_CONFIG).read_text())
    assert pc["layers_to_transform"] == list(range(22, 30))
    tokens = [[1, 28120, 314, 253, 2752, 3458, 30, 1218, 1109, 314, 1345, 3458, 30, 2]]
    ours = _logits(real_base, run, tokens)
    model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor(tokens)).logits.numpy()
    diff = float(np.abs(theirs - ours).max())
    print(f"real model: max |logit diff| peft vs mlxft = {diff:.3g} (logits up to {np.abs(ours).max():.1f})")
    assert not np.allclose(ours, _logits(real_base, None, tokens), atol=1e-3)
    assert diff <= 1e-3
    # Named by the catalogue key, the export records the Hub id (and the catalogue's 30 blocks agree with the adapter).
    named = export_run(run, "peft", out=tmp_path / "hub", options=ExportOptions(base="smollm2-135m-instruct")).folder
    assert json.loads((named / P.PEFT_CONFIG).read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (named / P.PEFT_WEIGHTS).read_bytes() == (folder / P.PEFT_WEIGHTS).read_bytes()
