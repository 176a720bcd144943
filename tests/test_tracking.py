"""MLflow tracking: a sink on the supervisor's event stream, read back through a real local MLflow store (sqlite in tmp_path)
with `mlflow.MlflowClient`; a failing tracker never stops the training; `mlxft runs --log-mlflow` logs a run after the fact."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from conftest import lm_recipe
from mlxft.errors import RecipeError
from mlxft.recipe import recipe_from_dict


def _recipe(tiny_llama, chat_data, out: Path, **tracking) -> dict:
    recipe = lm_recipe(tiny_llama, chat_data, out, train={"steps": 6, "eval_every": 3, "save_every": None})
    if tracking:
        recipe["tracking"] = tracking
    return recipe


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# -- the recipe section (no mlflow needed) ---------------------------------------------------------------
def test_the_tracking_section_is_strict_and_absent_from_untracked_recipes(tiny_llama, chat_data, tmp_path):
    plain = recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path))
    assert plain.tracking.mlflow is None and "tracking" not in plain.to_dict()
    tracked = recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path, mlflow={}))
    assert (tracked.tracking.mlflow.uri, tracked.tracking.mlflow.experiment, tracked.tracking.mlflow.run_name) == (None, "mlxft", None)
    assert recipe_from_dict(tracked.to_dict()) == tracked
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path, mlflow={"url": "http://x"}))
    assert ("tracking.mlflow.url", "unknown key: check the spelling (`mlxft validate` lists the fields)") in err.value.problems
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path, wandb={}))
    assert err.value.problems[0][0] == "tracking.wandb"


def test_a_recipe_asking_for_mlflow_without_mlflow_is_refused_before_a_run_directory_exists(tiny_llama, chat_data, tmp_path, monkeypatch):
    import importlib.util

    from mlxft.api import train
    from mlxft.tracking import TrackingError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(TrackingError, match="mlflow is not installed") as err:
        train(_recipe(tiny_llama, chat_data, tmp_path / "runs", mlflow={}))
    assert "mlxft[mlflow]" in err.value.hint
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_params_are_the_flattened_recipe_without_the_tracking_section(tiny_llama, chat_data, tmp_path):
    from mlxft.tracking import recipe_params

    recipe = recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path, mlflow={"uri": "http://user:secret@host:5000"}))
    params = recipe_params(recipe)
    assert params["lora.rank"] == "4" and params["train.learning_rate"] == "0.01" and params["lora.targets"] == "all-linear"
    assert params["quantize"] == "null" and params["kind"] == "lm-lora" and params["data.mask_prompt"] == "true"
    assert not any(k.startswith("tracking") for k in params) and "secret" not in json.dumps(params)


def test_a_relative_sqlite_uri_is_made_absolute_and_a_password_is_never_shown(tmp_path, monkeypatch):
    from mlxft.recipe import MlflowSection
    from mlxft.tracking import shown_uri, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(MlflowSection(), cwd=tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri(MlflowSection(uri="sqlite:///sub/t.db"), cwd=tmp_path) == f"sqlite:///{tmp_path.resolve()}/sub/t.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri(MlflowSection()) == "http://tracking:5000"
    assert tracking_uri(MlflowSection(uri="sqlite:////abs/x.db")) == "sqlite:////abs/x.db"
    assert shown_uri("https://me:hunter2@mlflow.example.com/x") == "https://mlflow.example.com/x"


def test_event_metrics_name_every_number_of_a_step_and_an_evaluation():
    from mlxft.events import EvalReport, LogMessage, StepReport
    from mlxft.tracking import event_metrics

    step = StepReport(step=3, total_steps=6, epoch=0.5, loss=2.5, learning_rate=1e-3, tokens=100, tokens_per_second=50.0, peak_memory_gb=0.2,
                      elapsed_s=2.0, eta_s=2.0, metrics={"rewards/margins": 0.3, "note": "text", "odd key!": 1})
    assert event_metrics(step) == {"train/loss": 2.5, "train/learning_rate": 1e-3, "train/tokens_per_second": 50.0, "train/peak_memory_gb": 0.2,
                                   "train/epoch": 0.5, "train/tokens": 100.0, "train/rewards/margins": 0.3, "train/odd key_": 1.0}
    val = EvalReport(step=3, val_loss=2.0, val_perplexity=7.4, best_val_loss=2.0, is_best=True, tokens=10, seconds=0.1, metrics={"loss": 2.0, "accuracy": 0.75})
    assert event_metrics(val) == {"val/loss": 2.0, "val/best_loss": 2.0, "val/perplexity": 7.4, "val/accuracy": 0.75}
    assert event_metrics(LogMessage("info", "hi")) == {}


def test_the_result_folder_named_without_loading_the_jobs_is_each_jobs_own():
    """The sink runs on a thread of the supervisor, which must not import MLX: it names the result folder itself."""
    from types import SimpleNamespace

    from mlxft.recipe import KINDS
    from mlxft.tracking import _artifact_name
    from mlxft.train.run import JOBS

    assert {k: _artifact_name(SimpleNamespace(kind=k)) for k in KINDS} == {k: JOBS[k].artifact for k in KINDS}


def test_the_supervisor_side_of_tracking_loads_no_mlx():
    import subprocess
    import sys

    code = "import mlxft, sys, mlxft.tracking, mlxft.train.process, mlxft.eval.curves; print('mlx.core' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- against a real MLflow store -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A sqlite MLflow store with its tables made once (MLflow's migrations take seconds); tests copy it."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(empty_store, tmp_path) -> str:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(empty_store, db)
    return f"sqlite:///{db}"


def _only_run(uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id])
    return client, run


def _expected_metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    """What metrics.jsonl holds, as MLflow should hold it: key -> {step: value} (the last report of a step)."""
    from mlxft.events import event_from_dict
    from mlxft.tracking import event_metrics

    out: dict[str, dict[int, float]] = {}
    for line in _lines(run_dir):
        event = event_from_dict(line)
        for key, value in event_metrics(event).items():
            out.setdefault(key, {})[event.step] = value
    return out


def _history(client, run_id: str, keys) -> dict[str, dict[int, float]]:
    return {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}


@pytest.mark.interop
def test_a_tracked_run_logs_what_metrics_jsonl_holds(tiny_llama, chat_data, tmp_path, store):
    from mlxft.api import train
    from mlxft.recipe import load_recipe
    from mlxft.tracking import recipe_params

    run = train(_recipe(tiny_llama, chat_data, tmp_path / "runs", mlflow={"uri": store, "experiment": "tiny", "run_name": "first"}))
    assert run.ok, run.error
    client, logged = _only_run(store, "tiny")
    expected = _expected_metrics(run.path)
    assert {"train/loss", "train/tokens_per_second", "train/peak_memory_gb", "val/loss", "val/perplexity"} <= set(expected)
    assert set(logged.data.metrics) == set(expected)
    assert _history(client, logged.info.run_id, expected) == expected
    assert len(expected["train/loss"]) == 6 and sorted(expected["val/loss"]) == [0, 3, 6]
    assert logged.data.params == recipe_params(load_recipe(run.path / "recipe.yaml"))
    tags = logged.data.tags
    assert (tags["mlxft.run_dir"], tags["mlxft.kind"], tags["mlxft.status"], tags["mlflow.runName"]) == (str(run.path.resolve()), "lm-lora", "completed", "first")
    assert logged.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {"adapter", "loss_curve.png", "recipe.yaml", "README.md"}
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "adapter")} == {"adapter/adapters.safetensors", "adapter/adapter_config.json"}
    artifact_dir = Path(store[len("sqlite:///"):]).parent / "mlartifacts"
    assert artifact_dir.is_dir() and not Path("mlruns").exists()  # beside the store, not in the current folder
    assert not [e for e in _lines(run.path) if e["event"] == "LogMessage" and "MLflow" in e["message"]]  # success needs no line in the run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.interop
@pytest.mark.parametrize("uri", ["http://me:hunter2@127.0.0.1:{port}", "nosuchscheme://tracking"])
def test_a_failing_tracker_warns_once_in_the_run_log_and_training_completes(tiny_llama, chat_data, tmp_path, monkeypatch, uri):
    pytest.importorskip("mlflow")
    from mlxft.api import train
    from mlxft.events import LogMessage

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a dead server answers at once, instead of after MLflow's backoff
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    seen = []
    run = train(_recipe(tiny_llama, chat_data, tmp_path / "runs", mlflow={"uri": uri.format(port=_closed_port())}), on_event=seen.append)
    assert run.ok and run.status == "completed", run.error
    assert (run.adapter_path / "adapters.safetensors").is_file()
    warnings = [e for e in _lines(run.path) if e["event"] == "LogMessage" and "MLflow" in e["message"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "The training goes on" in warnings[0]["message"] and f"mlxft runs --log-mlflow {run.path}" in warnings[0]["message"]
    assert [e for e in seen if isinstance(e, LogMessage) and "MLflow" in e.message] == [LogMessage(**{k: warnings[0][k] for k in ("level", "message")})]
    assert "hunter2" not in (run.path / "metrics.jsonl").read_text()  # the run log never quotes a password from the uri


@pytest.mark.interop
def test_runs_log_mlflow_logs_an_existing_run_after_the_fact(tiny_llama, chat_data, tmp_path, store, capsys):
    from mlxft.api import train
    from mlxft.cli import main

    run = train(_recipe(tiny_llama, chat_data, tmp_path / "runs"))
    assert run.ok, run.error
    (run.path / "eval" / "test").mkdir(parents=True)
    (run.path / "eval" / "test" / "summary.json").write_text(json.dumps({"split": "test", "accuracy": 0.5}))
    assert main(["runs", "--log-mlflow", str(run.path), "--uri", store, "--experiment", "later", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    client, logged = _only_run(store, "later")
    assert done["run_id"] == logged.info.run_id and done["status"] == "completed"
    expected = _expected_metrics(run.path)
    assert _history(client, logged.info.run_id, expected) == expected
    steps = {json.loads(line)["step"]: json.loads(line)["time"] for line in (run.path / "metrics.jsonl").read_text().splitlines() if '"StepReport"' in line}
    stamps = {m.step: m.timestamp for m in client.get_metric_history(logged.info.run_id, "train/loss")}
    assert stamps == {s: int(t * 1000) for s, t in steps.items()}  # each value at the time metrics.jsonl recorded it
    assert {"adapter", "eval", "loss_curve.png", "recipe.yaml", "README.md"} == {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert logged.info.status == "FINISHED"


@pytest.mark.interop
def test_a_resumed_run_reopens_its_mlflow_run(tiny_llama, chat_data, tmp_path, store):
    pytest.importorskip("mlflow")
    from mlxft.recipe import recipe_from_dict
    from mlxft.runs import RunDir
    from mlxft.tracking import MlflowLog

    recipe = recipe_from_dict(_recipe(tiny_llama, chat_data, tmp_path, mlflow={"uri": store}))
    run = RunDir(tmp_path / "a-run")
    first = MlflowLog(store, "resume")
    run_id = first.start(run, recipe, None, resume=False)
    first.end("stopped")
    again = MlflowLog(store, "resume")
    assert again.start(run, recipe, None, resume=True) == run_id
    assert again.client.get_run(run_id).info.status == "RUNNING"
    other = MlflowLog(store, "resume").start(RunDir(tmp_path / "another-run"), recipe, None, resume=True)
    assert other != run_id  # nothing logged for that run directory yet: a new MLflow run


@pytest.mark.interop
def test_log_mlflow_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, store):
    pytest.importorskip("mlflow")
    from mlxft.tracking import TrackingError, log_run_dir

    with pytest.raises(TrackingError, match="not an mlxft run directory"):
        log_run_dir(tmp_path, uri=store)
