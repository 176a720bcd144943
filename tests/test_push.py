"""`mlxft push` and the model card: the folder that goes up, the card the Hub parses, and the upload through huggingface_hub's
real client served by a mock transport that records every request (no network)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx2 as httpx  # huggingface_hub 2.x speaks httpx2
import pytest

from conftest import lm_recipe
from mlxft.errors import MlxftError

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_mlxftTestTokenThatMustNeverBeWrittenAnywhere42"


@pytest.fixture(scope="session")
def lora_run(tiny_llama, chat_data, tmp_path_factory) -> Path:
    from mlxft.api import train

    run = train(lm_recipe(tiny_llama, chat_data, tmp_path_factory.mktemp("push-runs"), name="tiny-lora",
                          train={"steps": 6, "eval_every": 3, "save_every": None}))
    assert run.ok, run.error
    return run.path


@pytest.fixture
def run_copy(lora_run, tmp_path) -> Path:
    """A copy of the trained run that a test may change (an eval folder, a recipe edit)."""
    import shutil

    dest = tmp_path / "runs" / lora_run.name
    shutil.copytree(lora_run, dest, ignore=shutil.ignore_patterns("exports", ".lock"))
    return dest


class MockHub:
    """The Hub endpoints a push uses: create a repo, preupload, commit. `fail` maps an endpoint to a status to answer."""

    def __init__(self, repo: str):
        self.repo = repo
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.created: list[dict] = []
        self.commits: list[dict] = []   # {"header": ..., "files": {path: bytes}}
        self.validated: list[str] = []  # README.md texts sent to /api/validate-yaml
        self.fail: dict[str, int] = {}
        self.unreachable = False
        self.role = "write"

    def files(self) -> dict[str, bytes]:
        out = {}
        for commit in self.commits:
            out.update(commit["files"])
        return out

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        self.requests.append((request.method, path, request.headers.get("authorization")))
        for endpoint, status in self.fail.items():
            if endpoint in path:
                return httpx.Response(status, headers={"X-Error-Message": f"refused by the mock ({status})"}, json={"error": f"refused ({status})"})
        if path == "/api/whoami-v2":
            return httpx.Response(200, json={"type": "user", "name": "acme", "auth": {"type": "access_token", "accessToken": {"role": self.role}}})
        if path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            return httpx.Response(200, json={"url": f"https://huggingface.co/{body.get('organization')}/{body['name']}", "name": body["name"]})
        if path == "/api/validate-yaml":  # upload_folder asks the Hub to check README.md's metadata first
            self.validated.append(json.loads(request.content)["content"])
            return httpx.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/agent-harnesses":  # huggingface_hub's own telemetry registry
            return httpx.Response(200, json={"standardEnvVars": [], "harnesses": {}})
        if path == f"/api/models/{self.repo}/preupload/main":
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
        if path == f"/api/models/{self.repo}/commit/main":
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.commits.append({"header": header, "files": files, "other": [x["key"] for x in lines if x["key"] not in ("header", "file")]})
            return httpx.Response(200, json={"commitUrl": f"https://huggingface.co/{self.repo}/commit/{SHA}", "commitOid": SHA, "pullRequestUrl": None})
        return httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "not in the mock"})


@pytest.fixture
def hub(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.utils import _http

    mock = MockHub("acme/tiny-lora")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(mock)))
    yield mock
    huggingface_hub.set_client_factory(_http.default_client_factory)


def _cli(*argv) -> int:
    from mlxft.cli import main

    return main(list(argv))


# -- the model card ------------------------------------------------------------------------------------
def test_a_dry_run_writes_the_folder_with_a_card_the_hub_parses(run_copy, capsys):
    from huggingface_hub import ModelCard, metadata_load

    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    out = capsys.readouterr().out
    folder = run_copy / "exports" / "hub-mlx"
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".mlxft-export.json")
    assert listed == on_disk == ["README.md", "adapter_config.json", "adapters.safetensors", "loss_curve.png", "recipe.yaml"]
    meta = metadata_load(folder / "README.md")
    assert meta["library_name"] == "mlx" and meta["pipeline_tag"] == "text-generation"
    assert "base_model" not in meta  # a local folder as the base: no Hub id to claim
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    assert "## How to use it" in card.text and "mlx_lm.generate" in card.text and "adapter-path" in card.text
    assert "PeftModel" not in card.text and "ollama" not in card.text.lower()  # only the tools that read this format
    from PIL import Image

    assert Image.open(folder / "loss_curve.png").size == (720, 420)


def test_the_card_states_the_losses_from_metrics_jsonl(run_copy):
    from mlxft.export.card import gather_facts
    from mlxft.runs import RunDir

    run = RunDir(run_copy)
    evals = [json.loads(line) for line in run.metrics_path.read_text().splitlines() if '"EvalReport"' in line]
    steps = [json.loads(line) for line in run.metrics_path.read_text().splitlines() if '"StepReport"' in line]
    facts = gather_facts(run, run.load_recipe())
    assert facts.final_val_loss == evals[-1]["val_loss"]
    assert facts.best_val_loss == min(e["val_loss"] for e in evals)
    assert facts.final_train_loss == pytest.approx(steps[-1]["loss"])
    assert facts.seconds == steps[-1]["elapsed_s"] and facts.steps == 6
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    text = (run_copy / "exports" / "hub-mlx" / "README.md").read_text()
    assert f"| final validation loss | {evals[-1]['val_loss']:.4f} |" in text
    assert f"| best validation loss | {facts.best_val_loss:.4f} (step {facts.best_step}) |" in text
    assert "```yaml\nkind: lm-lora\n" in text and "Hardware: MLX CPU backend" in text


def test_a_hub_base_gives_base_model_the_adapter_tag_and_its_licence(run_copy, tmp_path):
    """A base from huggingface_hub's cache is named by its Hub id; its own card's licence is the card's."""
    import shutil

    from huggingface_hub import metadata_load

    from mlxft.recipe import load_recipe

    recipe = load_recipe(run_copy / "recipe.yaml")
    snapshot = tmp_path / "hub" / "models--acme--tiny-base" / "snapshots" / SHA
    shutil.copytree(recipe.model, snapshot)
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny base\n")
    text = (run_copy / "recipe.yaml").read_text().replace(recipe.model, str(snapshot))
    (run_copy / "recipe.yaml").write_text(text)
    (run_copy / "model.json").write_text(json.dumps({"model": str(snapshot), "model_path": str(snapshot)}))
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    meta = metadata_load(run_copy / "exports" / "hub-mlx" / "README.md")
    assert meta["base_model"] == "acme/tiny-base"
    assert "base_model:adapter:acme/tiny-base" in meta["tags"]
    assert meta["license"] == "apache-2.0"
    assert 'load("acme/tiny-base", adapter_path=snapshot_download("acme/tiny-lora"))' in (run_copy / "exports" / "hub-mlx" / "README.md").read_text()


def test_catalogue_keys_hub_ids_and_hub_datasets_are_named(tmp_path):
    from mlxft.export.card import base_license, base_model_id, dataset_ids

    assert base_model_id("smollm2-135m-instruct", "lm-lora") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_license("smollm2-135m-instruct", "lm-lora", None) == "apache-2.0"
    assert base_model_id("Qwen/Qwen2.5-0.5B-Instruct", "lm-lora") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_id(str(tmp_path), "lm-lora") is None and base_model_id("model.gguf", "lm-lora") is None
    assert dataset_ids("HuggingFaceH4/no_robots") == ["HuggingFaceH4/no_robots"]
    assert dataset_ids("hf://datasets/acme/support") == ["acme/support"]
    assert dataset_ids(str(tmp_path)) == []


def _write_eval(run: Path) -> dict:
    summary = {
        "model": "tiny", "adapter": str(run / "adapter"), "bench": str(run / "bench.jsonl"), "targets": ["colors"], "target_name": "target (colors)",
        "target": {"size": 10, "base_accuracy": 0.2, "tuned_accuracy": 0.7, "change": 0.5, "fixes": 5, "regressions": 0},
        "rest": {"size": 6, "base_accuracy": 0.5, "tuned_accuracy": 0.5, "change": 0.0, "fixes": 0, "regressions": 0},
        "regressions": 0, "fixes": 5, "verdict": "improved", "verdict_text": "the target improved by 50 points and nothing regressed",
        "heldout": None, "seed": 0, "settings": {"max_tokens": 16}, "seconds": 1.0,
    }
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    return summary


def test_the_eval_summary_and_verdict_go_into_eval_results_that_validate(run_copy):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    _write_eval(run_copy)
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    card = ModelCard.load(run_copy / "exports" / "hub-mlx" / "README.md", ignore_metadata_errors=False)
    assert "**Verdict: improved**" in card.text and "| target (colors) | 10 | 20.0% | 70.0% | +50.0 pts | 5 | 0 |" in card.text
    index = card.data.to_dict()["model-index"]
    name, results = model_index_to_eval_results(index)
    assert name == "tiny-lora"
    assert [(r.metric_type, r.metric_value, r.task_type, r.dataset_name) for r in results] == [
        ("accuracy", 0.7, "text-generation", "bench.jsonl"), ("accuracy", 0.5, "text-generation", "bench.jsonl")]
    assert eval_results_to_model_index(name, results) == index  # what the Hub parses round-trips


def test_the_card_reads_what_mlxft_eval_wrote(run_copy, tiny_llama, tmp_path, capsys):
    """A real `mlxft eval` of the run (base vs tuned on a benchmark): its summary's verdict and accuracies are in the card."""
    from huggingface_hub import ModelCard

    from conftest import write_jsonl

    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": f"c{i}", "prompt": f"What color is the {a}?", "expected": f"The {a} is red.", "cluster": "colors"}
                                                   for i, a in enumerate(["cat", "dog", "bird"])] + [{"id": "n1", "prompt": "Count?", "expected": "one"}])
    assert _cli("eval", "--model", str(tiny_llama), "--adapter", str(run_copy), "--bench", str(bench), "--max-tokens", "4") == 0
    summary = json.loads((run_copy / "eval" / "summary.json").read_text())
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    card = ModelCard.load(run_copy / "exports" / "hub-mlx" / "README.md", ignore_metadata_errors=False)
    assert f"**Verdict: {summary['verdict']}**" in card.text
    values = [r.metric_value for r in card.data.eval_results]
    assert values == [round(summary["target"]["tuned_accuracy"], 4), round(summary["rest"]["tuned_accuracy"], 4)]


def test_an_image_classifier_card_after_mlxft_eval(tmp_path):
    from huggingface_hub import ModelCard

    from tests.image_runs import train_image_runs

    runs = train_image_runs(tmp_path, which=("weak",))
    run = runs["weak"]
    assert _cli("eval", str(run), "--split", "test") == 0
    summary = json.loads((run / "eval" / "test" / "summary.json").read_text())
    assert _cli("push", str(run), "--repo", "acme/tiny-images", "--dry-run") == 0
    folder = run / "exports" / "hub-mlx"
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    assert (card.data.pipeline_tag, card.data.library_name) == ("image-classification", "mlx")
    [accuracy, f1] = card.data.eval_results
    assert (accuracy.task_type, accuracy.metric_type, accuracy.metric_value, accuracy.dataset_split) == \
        ("image-classification", "accuracy", round(summary["accuracy"], 4), "test")
    assert f1.metric_value == round(summary["macro_f1"], 4)
    assert "mlxft predict tiny-images image.jpg" in card.text and "mlx_lm" not in card.text
    assert (folder / "model.safetensors").is_file() and (folder / "loss_curve.png").is_file()


def test_a_text_classifier_card_after_mlxft_eval(tiny_llama, tmp_path):
    import random

    from huggingface_hub import ModelCard

    from conftest import write_jsonl
    from mlxft.api import train
    from test_lm_classify import classify_recipe, colour_row

    rng = random.Random(0)
    for split, n in (("train", 32), ("valid", 8), ("test", 8)):
        write_jsonl(tmp_path / "colours" / f"{split}.jsonl", [colour_row(rng) for _ in range(n)])
    run = train(classify_recipe(tiny_llama, tmp_path / "colours", tmp_path / "runs", train={"steps": 4, "eval_every": 2, "save_every": None}))
    assert run.ok, run.error
    assert _cli("eval", str(run.path), "--split", "test") == 0
    summary = json.loads((run.path / "eval" / "test" / "summary.json").read_text())
    assert _cli("push", str(run.path), "--repo", "acme/tiny-colours", "--dry-run") == 0
    card = ModelCard.load(run.path / "exports" / "hub-mlx" / "README.md", ignore_metadata_errors=False)
    assert (card.data.pipeline_tag, card.data.library_name) == ("text-classification", "mlx")
    assert [(r.task_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("text-classification", "accuracy", round(summary["accuracy"], 4)), ("text-classification", "f1", round(summary["macro_f1"], 4))]
    assert f"(8 texts): accuracy {summary['accuracy']:.1%}, macro F1 {summary['macro_f1']:.3f}" in card.text
    assert 'mlxft predict tiny-colours "some text"' in card.text


def test_a_broken_eval_summary_is_named_and_left_out(run_copy, capsys):
    (run_copy / "eval" / "test").mkdir(parents=True)
    (run_copy / "eval" / "test" / "summary.json").write_text(json.dumps({"accuracy": "high"}))
    (run_copy / "eval" / "summary.json").write_text(json.dumps({"verdict": "improved", "target": 3}))
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "eval/summary.json: not a summary mlxft eval writes" in out
    assert "## Evaluation" not in (run_copy / "exports" / "hub-mlx" / "README.md").read_text()


def test_folder_layouts_name_their_library(tmp_path):
    from mlxft.export.card import read_layout

    def folder(name, files):
        f = tmp_path / name
        f.mkdir()
        for file, text in files.items():
            (f / file).write_text(text)
        return f

    peft = read_layout(folder("peft", {"adapter_config.json": json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS"}), "adapter_model.safetensors": ""}), "peft")
    assert (peft.library, peft.adapter, peft.task) == ("peft", True, "SEQ_CLS")
    gguf = read_layout(folder("gguf", {"adapter.gguf": "", "Modelfile": "FROM llama3.2\nADAPTER ./adapter.gguf\n"}), "gguf")
    assert (gguf.kind, gguf.adapter, gguf.library) == ("gguf", True, None)
    fused = read_layout(folder("fused", {"config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}), "model.safetensors": ""}), "fused")
    assert (fused.library, fused.adapter) == ("transformers", False)
    timm = read_layout(folder("timm", {"config.json": json.dumps({"architecture": "resnet50", "num_classes": 3, "pretrained_cfg": {}}), "model.safetensors": ""}), "timm")
    assert timm.library == "timm"
    full = read_layout(folder("full", {"adapter_config.json": json.dumps({"fine_tune_type": "full"}), "adapters.safetensors": ""}), "mlx")
    assert (full.library, full.adapter) == ("mlx", False)


def test_a_peft_export_gets_a_peft_card(run_copy, tmp_path):
    """Formats land from other modules: the card follows the folder's files, here a PEFT adapter with a Hub base."""
    from huggingface_hub import metadata_load

    from mlxft.export.card import write_card
    from mlxft.runs import RunDir

    folder = tmp_path / "peft-export"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "acme/base"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    run = RunDir(run_copy)
    write_card(run, run.load_recipe(), folder, "peft", "acme/tiny-lora-peft",  # the base: what adapter_config.json records
               export_notes=["logits of the PEFT model match mlxft's within 3.1e-06"])
    meta = metadata_load(folder / "README.md")
    text = (folder / "README.md").read_text()
    assert "## About this export\n\n- logits of the PEFT model match mlxft's within 3.1e-06\n" in text
    assert meta["library_name"] == "peft" and meta["base_model"] == "acme/base" and "base_model:adapter:acme/base" in meta["tags"]
    assert 'AutoPeftModelForCausalLM.from_pretrained("acme/tiny-lora-peft")' in text and "mlx_lm.generate" not in text


def test_a_real_peft_export_pushes_with_a_peft_card(run_copy, capsys):
    """`--format peft` through the export seam: the card follows what the PEFT export wrote."""
    from huggingface_hub import ModelCard

    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora-peft", "--format", "peft", "--dry-run", "--base", "acme/tiny-base") == 0
    folder = run_copy / "exports" / "hub-peft"
    config = json.loads((folder / "adapter_config.json").read_text())
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    assert (card.data.library_name, card.data.base_model, config["base_model_name_or_path"]) == ("peft", "acme/tiny-base", "acme/tiny-base")
    assert "base_model:adapter:acme/tiny-base" in card.data.tags and "adapter_model.safetensors" in capsys.readouterr().out
    assert 'AutoPeftModelForCausalLM.from_pretrained("acme/tiny-lora-peft")' in card.text and "mlx_lm.generate" not in card.text


# -- the upload ----------------------------------------------------------------------------------------
def test_push_creates_the_repo_and_uploads_the_folder_but_not_the_stamp(run_copy, hub, capsys):
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--private") == 0
    out = capsys.readouterr().out
    [created] = hub.created
    assert (created["organization"], created["name"], created["type"]) == ("acme", "tiny-lora", "model")
    assert created.get("visibility") == "private" or created.get("private") is True  # 2.x sends visibility; early 2.x private
    folder = run_copy / "exports" / "hub-mlx"
    sent = hub.files()
    assert sorted(sent) == ["README.md", "adapter_config.json", "adapters.safetensors", "loss_curve.png", "recipe.yaml"]
    for name, data in sent.items():
        assert data == (folder / name).read_bytes(), name
    assert ".mlxft-export.json" not in sent and (folder / ".mlxft-export.json").is_file()
    assert b"library_name: mlx" in sent["README.md"] and b"tracking" not in sent["recipe.yaml"]
    assert hub.validated == [sent["README.md"].decode()]
    assert "tiny-lora" in hub.commits[0]["header"]["summary"]
    assert f"https://huggingface.co/acme/tiny-lora/commit/{SHA}" in out
    assert {auth for _, _, auth in hub.requests} == {f"Bearer {TOKEN}"}  # huggingface_hub's own lookup found HF_TOKEN


def test_the_token_appears_in_no_output_and_no_file(run_copy, hub, capsys, tmp_path):
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora", "--json") == 0
    hub.fail["/commit/"] = 403
    assert _cli("push", str(run_copy), "--repo", "acme/tiny-lora") == 1
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("status, words", [(401, "refused the token"), (403, "cannot write to acme/tiny-lora")])
def test_a_repo_you_cannot_write_is_a_clear_error(run_copy, hub, status, words):
    from mlxft.export.push import HubError, push_run

    hub.fail["/api/repos/create"] = status
    with pytest.raises(HubError) as err:
        push_run(run_copy, "acme/tiny-lora")
    assert words in err.value.message and err.value.hint


def test_no_token_no_network_offline_mode_and_a_read_token_are_clear_errors_before_anything_is_written(run_copy, hub, monkeypatch):
    from mlxft.export.push import HubError, push_run

    hub.unreachable = True
    with pytest.raises(HubError, match="cannot reach the Hugging Face Hub"):
        push_run(run_copy, "acme/tiny-lora")
    hub.unreachable = False
    hub.role = "read"
    with pytest.raises(HubError, match="read-only"):
        push_run(run_copy, "acme/tiny-lora")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push_run(run_copy, "acme/tiny-lora")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token") as err:
        push_run(run_copy, "acme/tiny-lora")
    assert "hf auth login" in err.value.hint
    assert not (run_copy / "exports").exists()  # each was refused before anything was written
    assert push_run(run_copy, "acme/tiny-lora", dry_run=True).dry_run  # a dry run needs neither token nor network


def test_the_network_failing_mid_upload_is_a_clear_error(run_copy, hub, monkeypatch):
    from mlxft.export.push import HubError, push_run

    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda s: None)  # its retries, without the waits
    hub.fail["/preupload/"] = 503
    with pytest.raises(HubError, match="answered 503"):
        push_run(run_copy, "acme/tiny-lora")
    hub.fail.clear()
    original = hub.__call__

    def drop_commits(request):
        if "/commit/" in request.url.path:
            raise httpx.ReadTimeout("timed out", request=request)
        return original(request)

    import huggingface_hub

    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(drop_commits)))
    with pytest.raises(HubError, match="cannot reach the Hugging Face Hub to upload the files"):
        push_run(run_copy, "acme/tiny-lora")


@pytest.mark.parametrize("repo", ["tiny-lora", "acme/tiny lora", "acme/tiny/lora", "acme/-tiny--lora", ""])
def test_a_bad_repo_id_is_refused_before_anything_is_written(run_copy, repo):
    from mlxft.export.push import HubError, push_run

    with pytest.raises(HubError, match="--repo"):
        push_run(run_copy, repo, dry_run=True)
    assert not (run_copy / "exports").exists()


def test_push_never_writes_over_a_folder_that_is_not_an_export(run_copy, tmp_path):
    from mlxft.export.push import push_run

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(MlxftError, match="not an mlxft export"):
        push_run(run_copy, "acme/tiny-lora", out=mine, dry_run=True)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(os.listdir(mine)) == ["notes.txt"]
    first = push_run(run_copy, "acme/tiny-lora", out=tmp_path / "up", dry_run=True)
    again = push_run(run_copy, "acme/tiny-lora", out=tmp_path / "up", dry_run=True)  # an earlier push folder is replaced
    assert first.files == again.files and not [p for p in tmp_path.iterdir() if p.name.startswith(".up")]


def test_an_unknown_format_names_the_ones_the_kind_takes(run_copy):
    from mlxft.export.push import push_run

    with pytest.raises(MlxftError, match="unknown export format 'onnx'") as err:
        push_run(run_copy, "acme/tiny-lora", fmt="onnx", dry_run=True)
    assert "mlx" in err.value.hint


@pytest.mark.hub
def test_a_real_push_to_the_hub(lora_run, tmp_path):
    """Needs HF_TOKEN with write access and MLXFT_TEST_REPO (OWNER/NAME, a scratch repo): pushes, then reads the card back."""
    from huggingface_hub import HfApi, ModelCard

    from mlxft.export.push import push_run

    repo = os.environ.get("MLXFT_TEST_REPO")
    if not repo or not os.environ.get("HF_TOKEN"):
        pytest.skip("set HF_TOKEN and MLXFT_TEST_REPO=OWNER/NAME (a scratch repo) to push for real")
    result = push_run(lora_run, repo, out=tmp_path / "up", private=True)
    assert set(result.files) <= set(HfApi().list_repo_files(repo))
    assert ModelCard.load(repo).data.library_name == "mlx"
