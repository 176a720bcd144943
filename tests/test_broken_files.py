"""Broken model, adapter, tokenizer and GGUF files: every command that loads them names the file and what to do.

Each broken file is made from the tiny models (truncated, keys deleted, tensors reshaped) and run through the CLI
(`mlxft.cli.main`); no output may hold a traceback, and the message must name the file (and field or tensor).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlxft  # noqa: F401  (BLAS preload before mlx.core)
import mlx.core as mx
import pytest

from mlxft.cli import main
from tiny import build_adapter


# -- running the CLI -----------------------------------------------------------------------------


def run(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mlxft ARGS` run in this process; a traceback anywhere fails the test."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def error_of(err: str) -> tuple[str, str]:
    """(message, hint) the CLI printed: the `error:` lines and the `  hint:` line."""
    assert err.count("error: ") == 1, err
    message, _, hint = err.split("error: ", 1)[1].partition("\n  hint: ")
    assert hint.strip(), f"no hint: {err}"
    return message, hint.strip()


def assert_clear_failure(capsys, args: list, named: Path, *fragments: str) -> str:
    """The command exits 1 with one message that names `named` and holds every fragment; returns the message.

    `chat --json` (the TUI's Chat child) must also give the error as its first JSON line.
    """
    rc, out, err = run(capsys, *args)
    assert rc == 1, err
    message, _ = error_of(err)
    assert str(named) in message, message
    words = re.sub(r"/\S*", "", message)  # the fragments must be in the words, not in a (test-named) tmp path
    for fragment in fragments:
        assert fragment in words, message
    if "--json" in args and args[0] == "chat":
        line = json.loads(out.splitlines()[0])
        assert line["fatal"] is True and line["error"] == message.rstrip("\n") and line["hint"]
    return message


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory) -> Path:
    return build_adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "prompt": "What color is the cat?", "expected": "red"}) + "\n" for i in range(2)))
    return path


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def cut(path: Path, keep: float) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep) if keep < 1 else int(keep))


def edit_tensors(path: Path, change) -> None:
    tensors = dict(mx.load(str(path)))
    mx.save_safetensors(str(path), change(tensors))


def shard(folder: Path, index: bool = True) -> None:
    """Split model.safetensors into two shards named as Hugging Face names them, with (or without) the index."""
    weights = mx.load(str(folder / "model.safetensors"))
    names = sorted(weights)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in parts.items():
        mx.save_safetensors(str(folder / file), {k: weights[k] for k in keys})
    (folder / "model.safetensors").unlink()
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: f for f, ks in parts.items() for k in ks}}))


def without(*keys):
    return lambda config: [config.pop(k) for k in keys]


# breakage -> (how to break a copy of the tiny model, the file the message names, fragments it holds)
MODEL_BREAKS = {
    "truncated weights": (lambda f: cut(f / "model.safetensors", 0.6), "model.safetensors", ["truncated", "needs", "bytes"]),
    "weights cut inside the header": (lambda f: cut(f / "model.safetensors", 50), "model.safetensors", ["truncated", "header"]),
    "a pickle named safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"PK\x03\x04" + b"\xff" * 64), "model.safetensors", ["not a safetensors file"]),
    "a missing shard": (lambda f: (shard(f), (f / "model-00002-of-00002.safetensors").unlink()), "model-00002-of-00002.safetensors", ["missing"]),
    "a missing shard, no index": (lambda f: (shard(f, index=False), (f / "model-00001-of-00002.safetensors").unlink()), "model-00001-of-00002.safetensors", ["missing"]),
    "an index that is not JSON": (lambda f: (shard(f), (f / "model.safetensors.index.json").write_text("{oops")), "model.safetensors.index.json", ["not valid JSON", "line 1"]),
    "an index without weight_map": (lambda f: (shard(f), (f / "model.safetensors.index.json").write_text("{}")), "model.safetensors.index.json", ["weight_map"]),
    "config without model_type": (lambda f: edit_json(f / "config.json", without("model_type")), "config.json", ["model_type: missing"]),
    "config without sizes": (lambda f: edit_json(f / "config.json", without("hidden_size", "num_hidden_layers")), "config.json", ["hidden_size: missing", "num_hidden_layers: missing"]),
    "config with a word for a number": (lambda f: edit_json(f / "config.json", lambda c: c.update(num_hidden_layers="two")), "config.json", ["num_hidden_layers: must be an integer, got 'two'"]),
    "config not JSON": (lambda f: (f / "config.json").write_text('{"model_type": "llama",'), "config.json", ["not valid JSON", "line 1"]),
    "config a list": (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json", ["JSON object"]),
    "config nested too deeply": (lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000), "config.json", ["nested too deeply"]),
    "an unsupported architecture": (lambda f: edit_json(f / "config.json", lambda c: c.update(model_type="frobnicator")), "config.json", ["'frobnicator'", "mlx-lm"]),
    "config sizes that do not match the weights": (lambda f: edit_json(f / "config.json", lambda c: c.update(intermediate_size=96)), "",
                                                   ["weights do not fit", "shape"]),
    "a tensor missing from the weights": (
        lambda f: edit_tensors(f / "model.safetensors", lambda t: {k: v for k, v in t.items() if k != "model.norm.weight"}), "",
        ["weights do not fit", "Missing 1 parameters", "model.norm.weight"]),
    "no tokenizer files": (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")], "", ["no tokenizer files"]),
    "tokenizer.json not JSON": (lambda f: (f / "tokenizer.json").write_text('{"model": '), "tokenizer.json", ["not valid JSON"]),
    "tokenizer_config.json not JSON": (lambda f: (f / "tokenizer_config.json").write_text("nope"), "tokenizer_config.json", ["not valid JSON"]),
    "eos_token_id a word": (lambda f: edit_json(f / "config.json", lambda c: c.update(eos_token_id="two")), "config.json", ["eos_token_id"]),
}
TOKENIZER_BREAKS = ["config not JSON", "config nested too deeply", "no tokenizer files", "tokenizer.json not JSON",
                    "tokenizer_config.json not JSON", "eos_token_id a word"]


def model_commands(model: Path, adapter: Path, data: Path, bench: Path, out: Path) -> dict[str, list]:
    return {
        "generate": ["generate", "--model", model, "--prompt", "hi", "--max-tokens", "2"],
        "chat --json": ["chat", "--json", "--model", model],
        "eval-loss": ["eval-loss", "--model", model, "--data", data],
        "eval": ["eval", "--model", model, "--adapter", adapter, "--bench", bench, "--out", out],
        "data validate --model": ["data", "validate", data, "--model", model],
    }


def broken_model(tiny_llama: Path, tmp_path: Path, breakage: str) -> tuple[Path, Path, list[str]]:
    folder = tmp_path / "broken-model"
    shutil.copytree(tiny_llama, folder)
    make, named, fragments = MODEL_BREAKS[breakage]
    make(folder)
    return folder, folder / named if named else folder, fragments


# -- models: weights, shards, config.json, tokenizer ----------------------------------------------


@pytest.mark.parametrize("command", ["generate", "chat --json", "eval-loss", "eval"])
@pytest.mark.parametrize("breakage", list(MODEL_BREAKS))
def test_a_broken_model_file_is_named_by_every_command_that_loads_the_model(breakage, command, tiny_llama, adapter, chat_data, bench, tmp_path, capsys):
    folder, named, fragments = broken_model(tiny_llama, tmp_path, breakage)
    args = model_commands(folder, adapter, chat_data, bench, tmp_path / "eval")[command]
    assert_clear_failure(capsys, args, named, *fragments)


@pytest.mark.parametrize("breakage", TOKENIZER_BREAKS)
def test_a_broken_tokenizer_or_config_is_named_by_data_validate(breakage, tiny_llama, chat_data, bench, tmp_path, capsys):
    folder, named, fragments = broken_model(tiny_llama, tmp_path, breakage)
    args = model_commands(folder, tmp_path, chat_data, bench, tmp_path)["data validate --model"]
    assert_clear_failure(capsys, args, named, *fragments)


def test_an_unsupported_architecture_says_what_mlx_lm_supports_and_the_nearest_name(tiny_llama, tmp_path, capsys):
    folder = shutil.copytree(tiny_llama, tmp_path / "typo")
    edit_json(folder / "config.json", lambda c: c.update(model_type="lama"))
    rc, _, err = run(capsys, "generate", "--model", folder, "--prompt", "hi")
    _, hint = error_of(err)
    assert rc == 1 and "did you mean 'llama'" in hint and "qwen2" in hint and "pip install -U mlx-lm" in hint


def test_an_architecture_whose_mlx_lm_module_exits_on_import_is_a_clear_error(tiny_llama, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("hf_olmo") is not None:
        pytest.skip("ai2-olmo is installed: mlx-lm's olmo module imports")
    folder = shutil.copytree(tiny_llama, tmp_path / "olmo")
    edit_json(folder / "config.json", lambda c: c.update(model_type="olmo"))
    message = assert_clear_failure(capsys, ["generate", "--model", folder, "--prompt", "hi"], folder / "config.json", "needs a package")
    assert "'olmo'" in message


@pytest.mark.parametrize("breakage", ["truncated weights", "config without sizes"])
def test_training_on_a_broken_model_fails_naming_the_file(breakage, tiny_llama, chat_data, tmp_path, capsys):
    import yaml

    from conftest import lm_recipe

    folder, named, fragments = broken_model(tiny_llama, tmp_path, breakage)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(lm_recipe(folder, chat_data, tmp_path / "runs")))
    rc, _, err = run(capsys, "train", recipe)
    assert rc == 1
    message, _ = error_of(err)
    assert str(named) in message and all(f in re.sub(r"/\S*", "", message) for f in fragments), message


def test_models_local_lists_each_broken_folder_with_what_is_wrong(tiny_llama, tmp_path, capsys, monkeypatch):
    local = tmp_path / "models-local"
    local.mkdir()
    shutil.copytree(tiny_llama, local / "sound")
    breaks = {"truncated weights": "truncated", "a missing shard": "missing", "config nested too deeply": "nested too deeply",
              "no tokenizer files": "no tokenizer files", "tokenizer.json not JSON": "tokenizer.json"}
    for i, breakage in enumerate(breaks):
        folder, _, _ = broken_model(tiny_llama, tmp_path / str(i), breakage)
        shutil.move(folder, local / f"broken-{i}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    rc, out, _ = run(capsys, "models", "--local", "--json", "--memory-gb", "16")
    assert rc == 0
    rows = {m["name"]: m for m in json.loads(out)["models"] if m["source"] == "local"}
    assert rows["sound"]["problem"] is None
    for i, fragment in enumerate(breaks.values()):
        assert fragment in (rows[f"broken-{i}"]["problem"] or ""), rows[f"broken-{i}"]


# -- adapters: weights and adapter_config.json -----------------------------------------------------

Q_A = "model.layers.0.self_attn.q_proj.lora_a"


def widen(tensors: dict) -> dict:
    return {**tensors, Q_A: mx.zeros((tensors[Q_A].shape[0] * 2, tensors[Q_A].shape[1]))}


ADAPTER_BREAKS = {
    "truncated weights": (lambda f: cut(f / "adapters.safetensors", 0.5), "adapters.safetensors", ["truncated"]),
    "no weights": (lambda f: (f / "adapters.safetensors").unlink(), "adapters.safetensors", ["missing"]),
    "a tensor of the wrong shape": (lambda f: edit_tensors(f / "adapters.safetensors", widen), "adapters.safetensors", [Q_A, "(128, 4)", "(64, 4)"]),
    "tensors of another model's layers": (
        lambda f: edit_tensors(f / "adapters.safetensors", lambda t: {k.replace("layers.1.", "layers.7."): v for k, v in t.items()}),
        "adapters.safetensors", ["model.layers.7.", "not a parameter of this model"]),
    "a tensor missing": (lambda f: edit_tensors(f / "adapters.safetensors", lambda t: {k: v for k, v in t.items() if k != Q_A}),
                         "adapters.safetensors", [Q_A, "missing from the adapter"]),
    "config without lora_parameters": (lambda f: edit_json(f / "adapter_config.json", without("lora_parameters")), "adapter_config.json", ["lora_parameters: missing"]),
    "config not JSON": (lambda f: (f / "adapter_config.json").write_text("nope"), "adapter_config.json", ["not valid JSON"]),
    "config of the wrong types": (
        lambda f: edit_json(f / "adapter_config.json", lambda c: c["lora_parameters"].update(rank="four", keys=5)),
        "adapter_config.json", ["lora_parameters.rank: must be a positive integer, got 'four'", "lora_parameters.keys"]),
    "config a list": (lambda f: (f / "adapter_config.json").write_text("[]"), "adapter_config.json", ["JSON object"]),
    "no config": (lambda f: (f / "adapter_config.json").unlink(), "adapter_config.json", ["missing"]),
}


@pytest.mark.parametrize("command", ["generate", "chat --json", "eval-loss", "eval"])
@pytest.mark.parametrize("breakage", list(ADAPTER_BREAKS))
def test_a_broken_adapter_is_named_by_every_command_that_loads_it(breakage, command, tiny_llama, adapter, chat_data, bench, tmp_path, capsys):
    folder = shutil.copytree(adapter, tmp_path / "broken-adapter")
    make, named, fragments = ADAPTER_BREAKS[breakage]
    make(folder)
    args = model_commands(tiny_llama, folder, chat_data, bench, tmp_path / "eval")[command]
    if command != "eval":
        args = args + ["--adapter", folder]
    assert_clear_failure(capsys, args, folder / named, *fragments)


# -- GGUF ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    from test_gguf import _tiny_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    _tiny_gguf(path, "llama")
    return path


@pytest.mark.parametrize("keep", [4, 24, 3000, 0.9])
@pytest.mark.parametrize("command", ["import", "generate --model", "data validate --model"])
def test_a_truncated_gguf_is_named_as_truncated(command, keep, tiny_gguf, chat_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cut.gguf"
    shutil.copy(tiny_gguf, path)
    cut(path, keep)
    args = {"import": ["import", path, "--out", tmp_path / "out"],
            "generate --model": ["generate", "--model", path, "--prompt", "hi"],
            "data validate --model": ["data", "validate", chat_data, "--model", path]}[command]
    assert_clear_failure(capsys, args, path, "truncated")
    assert not (tmp_path / "out").exists()


def test_gguf_metadata_of_the_wrong_type_is_named(tmp_path, capsys):
    path = tmp_path / "odd.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((8, 8))},
                 {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "llama.embedding_length": "sixty-four"})
    assert_clear_failure(capsys, ["import", path, "--out", tmp_path / "out"], path, "llama.embedding_length")


def test_a_damaged_gguf_import_in_the_cache_is_imported_again(tiny_gguf, tmp_path, monkeypatch):
    from mlxft.llm.loading import import_gguf_cached, load_model
    from mlxft.llm.model_files import check_safetensors

    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    folder = import_gguf_cached(tiny_gguf)
    cut(folder / "model.safetensors", 0.5)  # e.g. the disk filled up while the cache was copied
    assert import_gguf_cached(tiny_gguf) == folder
    check_safetensors(folder / "model.safetensors", "the model weights file")
    assert load_model(str(tiny_gguf)).model is not None


# -- trust_remote_code -----------------------------------------------------------------------------

MARKER_CODE = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n"


def test_a_model_file_is_never_run_while_trust_remote_code_is_off(tiny_llama, tmp_path, capsys):
    folder = shutil.copytree(tiny_llama, tmp_path / "custom")
    marker = tmp_path / "ran.txt"
    (folder / "custom_arch.py").write_text(MARKER_CODE.format(marker=str(marker)) + "from mlx_lm.models.llama import Model, ModelArgs\n")
    edit_json(folder / "config.json", lambda c: c.update(model_file="custom_arch.py"))
    message = assert_clear_failure(capsys, ["generate", "--model", folder, "--prompt", "hi"], folder / "config.json",
                                   "model_file", "custom_arch.py", "trust_remote_code is on, and it is off")
    assert "run" in message and not marker.exists()
    # On, it runs exactly that file: what the recipe field's description says.
    mlxft.load(str(folder), trust_remote_code=True)
    assert marker.read_text() == "ran"


def test_tokenizer_code_named_by_auto_map_is_never_run_while_trust_remote_code_is_off(tiny_llama, tmp_path, capsys):
    folder = shutil.copytree(tiny_llama, tmp_path / "custom-tokenizer")
    marker = tmp_path / "ran.txt"
    (folder / "tokenization_custom.py").write_text(
        MARKER_CODE.format(marker=str(marker)) + "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    edit_json(folder / "tokenizer_config.json",
              lambda c: (c.pop("tokenizer_class"), c.update(auto_map={"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]})))
    assert_clear_failure(capsys, ["generate", "--model", folder, "--prompt", "hi"], folder / "tokenizer_config.json",
                         "auto_map.AutoTokenizer", "tokenization_custom.CustomTokenizer", "trust_remote_code is on, and it is off")
    assert not marker.exists()


def test_trust_remote_code_description_names_both_kinds_of_code_it_lets_run():
    from mlxft.recipe import Recipe

    text = Recipe.model_fields["trust_remote_code"].description
    assert "model_file" in text and "auto_map" in text and "tokenizer" in text and "Off" in text


# -- the checked safetensors reader ----------------------------------------------------------------


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("content, fragment", [
    (b"\x01\x02", "too short"),
    (b"PK\x03\x04\x14\x00\x00\x00" + b"\0" * 32, "not a safetensors file"),
    ((40).to_bytes(8, "little") + b"{}", "header needs 48 bytes but the file has 10"),
    ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
    ((3).to_bytes(8, "little") + b"{x}", "not valid JSON"),
    (safetensors_bytes({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8), "tensor 'w' needs"),
    (safetensors_bytes({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 16), "tensor 'w' is malformed"),
    (safetensors_bytes({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "tensor 'w' is malformed"),
    (safetensors_bytes({"w": [1, 2]}, b""), "tensor 'w' is malformed"),
])
def test_check_safetensors_names_what_is_wrong_without_reading_the_data(content, fragment, tmp_path):
    from mlxft.errors import BrokenFileError
    from mlxft.llm.model_files import check_safetensors

    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(BrokenFileError) as caught:
        check_safetensors(path, "the test weights")
    assert caught.value.path == path and fragment in caught.value.message and caught.value.hint


def test_load_safetensors_checked_gives_back_what_was_saved(tmp_path):
    from mlxft.llm.model_files import check_safetensors, load_safetensors_checked

    path = tmp_path / "w.safetensors"
    saved = {"a": mx.arange(6, dtype=mx.float32).reshape(2, 3), "b": mx.ones((4,), dtype=mx.bfloat16)}
    mx.save_safetensors(str(path), saved, metadata={"format": "mlx"})
    info = check_safetensors(path, "the test weights")
    assert {k: (v.dtype, v.shape) for k, v in info.items()} == {"a": ("F32", (2, 3)), "b": ("BF16", (4,))}
    loaded = load_safetensors_checked(path, "the test weights")
    assert set(loaded) == {"a", "b"} and all(mx.array_equal(loaded[k], saved[k]).item() for k in saved)
