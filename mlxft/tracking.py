"""Experiment tracking: a run's events logged to MLflow by the process that supervises the training, never by the loop.

`open_sink(recipe, run)` is what `supervise` hangs on the event stream: a `NullSink` for an untracked recipe, else an
`MlflowSink`, which logs from a thread of its own (the supervisor does no MLX work) so that a slow or dead tracking
server never holds up the events, and so never the training. What it logs: the recipe flattened as params, tags, every
StepReport and EvalReport as metrics at their step (`event_metrics`: the one mapping, also used after the fact), and at
the end the result folder, RUN/eval, the recipe, the README and the loss curve as artifacts. A tracker that fails is
warned about once, in the run's log, and then left alone; `mlxft runs --log-mlflow RUN` logs the run again from its
metrics.jsonl (`log_run_dir`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import tempfile
import threading
import time
from pathlib import Path

from mlxft.errors import MlxftError
from mlxft.events import EvalReport, LogMessage, StepReport, event_from_dict
from mlxft.runs import RunDir

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3 refuses a plain file store unless told; a sqlite file needs no server
URI_ENV = "MLFLOW_TRACKING_URI"
RUN_DIR_TAG = "mlxft.run_dir"  # how a resumed run finds its MLflow run again
CLOSE_WAIT_S = 120.0  # after training: how long the supervisor waits for the last metrics and the artifacts
_KEY_UNSAFE = re.compile(r"[^\w\-. /:]")  # MLflow's metric and param names: alphanumerics, _ - . space / (and : in 3.x)


class TrackingError(MlxftError):
    """Tracking that cannot start: mlflow is not installed, or the store cannot be opened (after-the-fact logging)."""


# -- settings ------------------------------------------------------------------------------------------
def tracking_uri(section, cwd: Path | None = None) -> str:
    """The recipe's uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; a relative sqlite path is made absolute
    (against `cwd`, default the current folder) so a resume from another folder logs to the same store."""
    uri = (section.uri if section is not None else None) or os.environ.get(URI_ENV) or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not Path(path).is_absolute():
            uri = "sqlite:///" + str(((cwd or Path.cwd()) / Path(path).expanduser()).resolve())
    return uri


def shown_uri(uri: str) -> str:
    """The uri as messages show it: without a user:password@ part."""
    return re.sub(r"(?<=://)[^/@]*@", "", uri)


def check_tracking(recipe) -> None:
    """Before anything starts: a recipe that asks for MLflow tracking needs mlflow installed."""
    if recipe.tracking.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise TrackingError("the recipe asks for MLflow tracking (tracking.mlflow), but mlflow is not installed",
                            hint="pip install 'mlxft[mlflow]' (or `pip install mlflow`), or remove the tracking section")


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """A nested recipe dict as MLflow params: dotted keys, each value as text (lists and null as JSON)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:6000]  # MLflow's limit on a param's value
    return out


def recipe_params(recipe) -> dict[str, str]:
    data = recipe.to_dict()
    data.pop("tracking", None)  # where the run is logged is not a setting of the run (and a server's uri may carry a password)
    return flatten(data)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_key(name: str) -> str:
    return _KEY_UNSAFE.sub("_", name)


def event_metrics(event) -> dict[str, float]:
    """The metrics an event holds, by MLflow key (at the event's step): train/* for a step, val/* for an evaluation."""
    if isinstance(event, StepReport):
        out = {"train/loss": event.loss, "train/learning_rate": event.learning_rate, "train/tokens_per_second": event.tokens_per_second,
               "train/peak_memory_gb": event.peak_memory_gb, "train/epoch": event.epoch, "train/tokens": event.tokens}
        out.update({metric_key(f"train/{k}"): v for k, v in event.metrics.items() if _number(v) and f"train/{k}" not in out})
    elif isinstance(event, EvalReport):
        out = {"val/loss": event.val_loss, "val/best_loss": event.best_val_loss}
        if event.val_perplexity is not None:
            out["val/perplexity"] = event.val_perplexity
        out.update({metric_key(f"val/{k}"): v for k, v in event.metrics.items() if _number(v) and f"val/{k}" not in out})
    else:
        return {}
    return {k: float(v) for k, v in out.items() if _number(v)}


def final_status(status: str) -> str:
    """An mlxft run's end as an MLflow run status."""
    return {"completed": "FINISHED", "early-stopped": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")


# -- the MLflow side -------------------------------------------------------------------------------------
class MlflowLog:
    """One MLflow run that an mlxft run is logged into, through `MlflowClient` (no global active run, any thread)."""

    def __init__(self, uri: str, experiment: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=_artifact_root(uri))
        self.run_id: str | None = None

    def start(self, run: RunDir, recipe, run_name: str | None, resume: bool, params: bool = True) -> str:
        """Create the MLflow run (or, on a resume, reopen the one this run directory was logged into) with params and tags."""
        import mlxft

        path = str(run.path.resolve())
        if resume:
            earlier = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{_quoted(path)}'",
                                              order_by=["attributes.start_time DESC"], max_results=1)
            if earlier:
                self.run_id = earlier[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return self.run_id
        tags = {RUN_DIR_TAG: path, "mlxft.kind": recipe.kind, "mlxft.method": recipe.method, "mlxft.model": recipe.model,
                "mlxft.version": mlxft.__version__, "mlflow.source.name": "mlxft", "mlflow.source.type": "LOCAL"}
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name or run.path.name, tags=tags).info.run_id
        if params:
            self.log(params=recipe_params(recipe))
        return self.run_id

    def log(self, metrics: list[tuple[str, float, int, int]] = (), params: dict[str, str] | None = None, tags: dict[str, str] | None = None) -> None:
        """metrics as (key, value, timestamp_ms, step); sent in batches within MLflow's limits."""
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(k, v, ts, step) for k, v, ts, step in metrics]
        params = [Param(k, v) for k, v in (params or {}).items()]
        tags = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000], synchronous=True)
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100], synchronous=True)
        for i in range(0, len(tags), 100):
            self.client.log_batch(self.run_id, tags=tags[i:i + 100], synchronous=True)

    def log_artifacts(self, run: RunDir, recipe) -> list[str]:
        """The result folder, RUN/eval, the recipe, the README and the loss curve; returns what was logged."""
        from mlxft.eval.curves import draw_loss_curve, loss_curve

        logged = []
        result = run.result_dir(_artifact_name(recipe))
        for folder, name in ((result, result.name), (run.eval_dir, "eval")):
            if folder.is_dir() and any(folder.iterdir()):
                self.client.log_artifacts(self.run_id, str(folder), artifact_path=name)
                logged.append(name + "/")
        for path in (run.recipe_path, run.readme_path):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
                logged.append(path.name)
        curve = loss_curve(run.events())
        if curve:
            with tempfile.TemporaryDirectory(prefix="mlxft-mlflow-") as tmp:
                png = draw_loss_curve(curve, Path(tmp) / "loss_curve.png", title=f"{run.path.name}: loss")
                self.client.log_artifact(self.run_id, str(png))
            logged.append("loss_curve.png")
        if run.readme_path.is_file():
            self.log(tags={"mlflow.note.content": run.readme_path.read_text(encoding="utf-8", errors="replace")[:5000]})
        return logged

    def end(self, status: str) -> None:
        self.log(tags={"mlxft.status": status})
        self.client.set_terminated(self.run_id, status=final_status(status))


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _artifact_name(recipe) -> str:
    """The run's result folder name, without importing the jobs: that would load MLX, here on a worker thread."""
    from mlxft.recipe import VISION_KINDS
    from mlxft.runs import ADAPTER_DIR

    return "model" if recipe.kind in VISION_KINDS else ADAPTER_DIR


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store go beside its file (mlartifacts/), not into ./mlruns of whatever folder is current."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.is_absolute():
            return (db.parent / "mlartifacts").as_uri()
    return None


# -- the sinks the supervisor hangs on the event stream ----------------------------------------------------
class NullSink:
    """No tracking: takes every event, does nothing (so the supervisor never asks whether there is a tracker)."""

    def event(self, event) -> None:
        pass

    def warnings(self) -> list[LogMessage]:
        return []

    def close(self, status: str) -> list[LogMessage]:
        return []


class MlflowSink:
    """Logs a run's events to MLflow from a worker thread. The first failure stops it and becomes one warning."""

    def __init__(self, recipe, run: RunDir, resume: bool = False, close_wait_s: float = CLOSE_WAIT_S):
        section = recipe.tracking.mlflow
        self.recipe, self.run, self.resume, self.close_wait_s = recipe, run, resume, close_wait_s
        self.uri = tracking_uri(section)
        self.experiment, self.run_name = section.experiment, section.run_name
        self.log: MlflowLog | None = None
        self.step = 0
        self._queue: queue.Queue = queue.Queue()
        self._out: list[LogMessage] = []
        self._lock = threading.Lock()
        self._failed = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"mlxft-mlflow-{run.path.name}", daemon=True)
        self._thread.start()

    def event(self, event) -> None:
        if isinstance(event, StepReport):
            self.step = event.step
        if not self._failed.is_set():
            self._queue.put((event, int(time.time() * 1000)))

    def warnings(self) -> list[LogMessage]:
        """What the worker has to say (its one failure, or where the run was logged), for the supervisor to record."""
        with self._lock:
            out, self._out = self._out, []
        return out

    def close(self, status: str) -> list[LogMessage]:
        """After the training: log what is queued, the artifacts and the end; wait at most close_wait_s."""
        self._queue.put(("end", status))
        self._thread.join(self.close_wait_s)
        if self._thread.is_alive():
            self._fail(f"it did not finish within {self.close_wait_s:.0f} s of the end of training (left behind)")
        return self.warnings()

    def _say(self, level: str, text: str) -> None:
        with self._lock:
            self._out.append(LogMessage(level, text))

    def _fail(self, reason: str) -> None:
        if self._failed.is_set():
            return
        self._failed.set()
        self._say("warning", f"MLflow tracking to {shown_uri(self.uri)} stopped at step {self.step}: {reason}. The training goes on; "
                             f"log the run once it is done with `mlxft runs --log-mlflow {self.run.path}`")

    def _work(self) -> None:
        try:
            self.log = MlflowLog(self.uri, self.experiment)
            run_id = self.log.start(self.run, self.recipe, self.run_name, self.resume)
        except Exception as exc:  # the server is down, the uri is bad, mlflow is broken: warn once, track no more
            self._fail(_reason(exc))
            self._drain()
            return
        while True:
            item = self._queue.get()
            batch = [item]
            while True:  # whatever queued up meanwhile goes in one request
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            end = next((b[1] for b in batch if b[0] == "end"), None)
            metrics = [(k, v, ts, e.step) for e, ts in (b for b in batch if b[0] != "end") for k, v in event_metrics(e).items()]
            try:
                if metrics:
                    self.log.log(metrics)
                if end is not None:
                    self.log.log_artifacts(self.run, self.recipe)
                    self.log.end(end)
                    self._say("info", f"MLflow: logged to run {run_id} of experiment {self.experiment!r} at {shown_uri(self.uri)}")
                    return
            except Exception as exc:
                self._fail(_reason(exc))
                self._drain()
                return

    def _drain(self) -> None:
        """After a failure: take events until the end, so the queue does not grow for the rest of the training."""
        while True:
            item = self._queue.get()
            if item[0] == "end":
                return


def _reason(exc: BaseException) -> str:
    """An exception in a line, without any user:password@ that the uri (and so MLflow's message) may carry."""
    text = re.sub(r"(?<=://)[^/@\s]*@", "", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def open_sink(recipe, run: RunDir, resume: bool = False):
    """The sink for this recipe's tracking: NullSink when there is none; raises TrackingError when mlflow is missing."""
    if recipe.tracking.mlflow is None:
        return NullSink()
    check_tracking(recipe)
    return MlflowSink(recipe, run, resume=resume)


# -- after the fact ------------------------------------------------------------------------------------
def log_run_dir(run_path: str | Path, uri: str | None = None, experiment: str | None = None) -> dict:
    """Log an existing run directory into a new MLflow run, from its recipe and metrics.jsonl (`mlxft runs --log-mlflow`).

    Returns {run_id, experiment, uri, metrics, artifacts, status}. The store is the one named by `uri`, else the recipe's
    tracking.mlflow, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
    """
    from mlxft.recipe import MlflowSection
    from mlxft.runs import summarize_run

    run = RunDir.containing(run_path)
    if run is None:
        raise TrackingError(f"{run_path}: not an mlxft run directory (no recipe.yaml and metrics.jsonl)",
                            hint="pass the folder that `mlxft train` printed (see `mlxft runs`)")
    if importlib.util.find_spec("mlflow") is None:
        raise TrackingError("logging to MLflow needs mlflow, which is not installed", hint="pip install 'mlxft[mlflow]' (or `pip install mlflow`)")
    recipe = run.load_recipe()
    section = recipe.tracking.mlflow or MlflowSection()
    resolved = tracking_uri(MlflowSection(uri=uri) if uri else section)
    name = experiment or section.experiment
    try:
        log = MlflowLog(resolved, name)
        run_id = log.start(run, recipe, section.run_name, resume=False)
        stamped = []
        for raw in run.raw_events():
            try:
                event = event_from_dict(raw)
            except ValueError:  # a line that is not an event of ours: `mlxft runs` names it; nothing to log
                continue
            ts = int(raw["time"] * 1000) if _number(raw.get("time")) else int(time.time() * 1000)
            stamped += [(k, v, ts, event.step) for k, v in event_metrics(event).items()]
        log.log(stamped)
        artifacts = log.log_artifacts(run, recipe)
        status = summarize_run(run).status
        log.end(status)
    except MlxftError:
        raise
    except Exception as exc:
        raise TrackingError(f"cannot log {run.path} to MLflow at {shown_uri(resolved)} ({_reason(exc)})",
                            hint="check --uri (e.g. sqlite:///mlflow.db or http://localhost:5000) and that the server is up") from None
    return {"run_id": run_id, "experiment": name, "uri": shown_uri(resolved), "metrics": len(stamped), "artifacts": artifacts, "status": status}


__all__ = ["DEFAULT_URI", "MlflowLog", "MlflowSink", "NullSink", "TrackingError", "check_tracking", "event_metrics", "flatten",
           "log_run_dir", "open_sink", "recipe_params", "tracking_uri"]
