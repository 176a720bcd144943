"""The model catalogue: every shipped file loads, its numbers agree with each other and with mlx-lm, and bad entries are named."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import mlxft  # noqa: F401  (before mlx.core: loads the fast BLAS)
from mlxft.errors import MlxftError, ModelError
from mlxft.llm.catalogue import ModelEntry, catalogue_folder, find_model, load_catalogue
from mlxft.llm.memory import count_parameters

MODELS = Path(__file__).resolve().parents[1] / "models"
ENTRIES = load_catalogue(MODELS)

GOOD_ENTRY = """\
tiny-llama:
  hub_id: someone/tiny-llama
  mlx_4bit_id: null
  architecture: llama
  parameters: 1000000
  context_length: 2048
  license: apache-2.0
  gated: false
  chat_template: ChatML
  lora_targets: all-linear
  hidden_size: 64
  intermediate_size: 128
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 2
  vocab_size: 256
  tie_word_embeddings: true
"""


def test_every_catalogue_file_opens_with_a_comment_and_loads():
    files = sorted(MODELS.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert path.read_text(encoding="utf-8").startswith("# "), f"{path.name} must open with a comment saying what it holds"
        assert load_catalogue(MODELS), path


def test_the_catalogue_has_the_models_we_promise():
    keys = {e.key for e in ENTRIES}
    promised = {
        "smollm2-135m-instruct", "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct",
        "qwen2.5-7b-instruct", "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "llama-3.2-1b-instruct",
        "llama-3.2-3b-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "gemma-2-2b-it",
        "gemma-3-1b-it", "phi-3.5-mini-instruct", "phi-4-mini-instruct", "codellama-13b-instruct",
    }
    assert promised <= keys, promised - keys


def test_the_default_folder_is_the_repository_catalogue(monkeypatch):
    monkeypatch.delenv("MLXFT_MODELS_DIR", raising=False)
    assert catalogue_folder() == MODELS
    assert {e.key for e in load_catalogue()} == {e.key for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_stated_parameter_count_agrees_with_the_config(entry: ModelEntry):
    computed = count_parameters(entry.config())
    assert abs(computed - entry.parameters) / entry.parameters < 0.05, (computed, entry.parameters)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_config_builds_an_mlx_lm_model_of_the_stated_size(entry: ModelEntry):
    # mlx arrays are lazy: building the model allocates nothing, so even a 14B is instant.
    from mlx.utils import tree_flatten
    from mlx_lm.utils import MODEL_REMAPPING

    module = importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(entry.architecture, entry.architecture)}")
    defaults = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "query_pre_attn_scalar": 256, "sliding_window": 512}
    model = module.Model(module.ModelArgs.from_dict({**defaults, **entry.config()}))
    if entry.tie_word_embeddings and "lm_head" in model:
        model.pop("lm_head")  # Gemma 3 drops its lm_head at load time when the checkpoint has none
    built = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert abs(built - entry.parameters) / entry.parameters < 0.05, (built, entry.parameters)


def test_smollm2_135m_matches_its_published_config():
    e = find_model("smollm2-135m-instruct")
    assert (e.hidden_size, e.intermediate_size, e.num_hidden_layers) == (576, 1536, 30)
    assert (e.num_attention_heads, e.num_key_value_heads, e.vocab_size) == (9, 3, 49152)
    assert e.tie_word_embeddings and e.context_length == 8192 and e.license == "apache-2.0"
    assert e.config()["head_dim"] == 64


def test_llama_and_gemma_models_are_gated_and_qwen_is_not():
    for entry in ENTRIES:
        if entry.key.startswith(("llama-", "gemma-")):
            assert entry.gated, entry.key
        if entry.key.startswith(("qwen", "smollm2")):
            assert not entry.gated, entry.key


def test_find_model_matches_key_in_any_case_hub_id_and_mlx_id():
    assert find_model("Qwen2.5-0.5B-Instruct").key == "qwen2.5-0.5b-instruct"
    assert find_model("Qwen/Qwen2.5-0.5B-Instruct").key == "qwen2.5-0.5b-instruct"
    assert find_model("mlx-community/Qwen2.5-0.5B-Instruct-4bit").key == "qwen2.5-0.5b-instruct"
    assert find_model("no-such-model") is None


def test_a_bad_entry_is_reported_with_its_file_entry_and_field(tmp_path):
    (tmp_path / "good.yaml").write_text("# fine\n" + GOOD_ENTRY)
    bad = GOOD_ENTRY.replace("tiny-llama:", "broken-llama:").replace("hidden_size: 64", "hidden_size: wide")
    bad = bad.replace("vocab_size: 256", "vocab_sise: 256")
    (tmp_path / "bad.yaml").write_text("# broken on purpose\n" + bad)
    with pytest.raises(MlxftError) as caught:
        load_catalogue(tmp_path)
    message = str(caught.value)
    assert "bad.yaml" in message and "broken-llama" in message
    assert "'hidden_size'" in message and "'vocab_sise'" in message  # every problem, at once
    assert "'vocab_size'" in message  # the real field is now missing
    assert "good.yaml" not in message


def test_a_key_defined_twice_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("# one\n" + GOOD_ENTRY)
    (tmp_path / "b.yaml").write_text("# two\n" + GOOD_ENTRY)
    with pytest.raises(MlxftError, match="already defined"):
        load_catalogue(tmp_path)


def test_inconsistent_heads_are_rejected(tmp_path):
    (tmp_path / "heads.yaml").write_text("# heads\n" + GOOD_ENTRY.replace("num_key_value_heads: 2", "num_key_value_heads: 3"))
    with pytest.raises(MlxftError, match="tiny-llama"):
        load_catalogue(tmp_path)


def test_the_environment_variable_selects_another_catalogue(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text("# tiny\n" + GOOD_ENTRY)
    monkeypatch.setenv("MLXFT_MODELS_DIR", str(tmp_path))
    assert [e.key for e in load_catalogue()] == ["tiny-llama"]
    assert find_model("TINY-LLAMA").hub_id == "someone/tiny-llama"


def test_a_missing_catalogue_folder_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        load_catalogue(tmp_path / "nowhere")
