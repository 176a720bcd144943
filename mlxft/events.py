"""The events a run emits: frozen dataclasses of plain values, serialisable to one JSON line each."""

from __future__ import annotations

import time
from dataclasses import MISSING, asdict, dataclass, field, fields


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    model: str
    method: str
    total_steps: int
    trainable_parameters: int
    total_parameters: int
    train_samples: int
    valid_samples: int
    compute_dtype: str
    device: str
    resumed_from_step: int = 0
    pid: int = 0  # the training process, so another terminal (or the TUI) can watch or stop it
    unit: str = "tok"  # what throughput counts: tokens, images, pairs
    charted: list = field(default_factory=list)  # the job's training metrics worth a line on the loss chart (e.g. rewards/margins)


@dataclass(frozen=True)
class StepReport:
    step: int
    total_steps: int
    epoch: float
    loss: float  # a Python float, never an mx.array
    learning_rate: float
    tokens: int  # trained (non-masked, non-pad) tokens in this reporting window
    tokens_per_second: float
    peak_memory_gb: float
    elapsed_s: float
    eta_s: float
    metrics: dict = field(default_factory=dict)  # the job's own training metrics over this window (e.g. rewards/margins)


@dataclass(frozen=True)
class EvalReport:
    step: int
    val_loss: float
    val_perplexity: float | None  # language models only
    best_val_loss: float
    is_best: bool  # best so far on train.best_metric
    tokens: int  # the summed weight of the evaluated batches (tokens, samples or pairs)
    seconds: float
    metrics: dict = field(default_factory=dict)  # every validation metric the job reports, loss included


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str


@dataclass(frozen=True)
class LogMessage:
    level: str  # info | warning
    message: str


@dataclass(frozen=True)
class RunFinished:
    step: int
    status: str  # completed | stopped | early-stopped
    adapter_path: str
    best_val_loss: float | None
    final_train_loss: float | None
    seconds: float


@dataclass(frozen=True)
class RunFailed:
    step: int
    error: str
    hint: str | None
    last_checkpoint: str | None


EVENT_TYPES = {cls.__name__: cls for cls in (RunStarted, StepReport, EvalReport, CheckpointSaved, LogMessage, RunFinished, RunFailed)}


def event_to_dict(event) -> dict:
    return {"event": type(event).__name__, "time": time.time(), **asdict(event)}


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,), "list": (list,)}


def _accepts(annotation: str, value) -> bool:
    """Whether a JSON value fits a field annotated like `int`, `float`, `str | None` (events hold plain values only)."""
    for part in annotation.split("|"):
        part = part.strip()
        if part == "None" and value is None:
            return True
        kinds = _TYPES.get(part)
        if kinds and isinstance(value, kinds) and not (part != "bool" and isinstance(value, bool)):
            return True
    return False


def event_from_dict(data: dict):
    """Rebuild an event from a metrics.jsonl line (unknown keys ignored, for forward compatibility).

    Returns None for an unknown event name; raises ValueError naming the field when a known event
    is missing a field or holds a value of the wrong type (a hand-edited or foreign line).
    """
    cls = EVENT_TYPES.get(data.get("event", "")) if isinstance(data, dict) else None
    if cls is None:
        return None
    values = {}
    for f in fields(cls):
        if f.name in data:
            if not _accepts(f.type, data[f.name]):
                raise ValueError(f"{cls.__name__}.{f.name} is {data[f.name]!r}, not {f.type}")
            values[f.name] = data[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ValueError(f"{cls.__name__} has no {f.name}")
    return cls(**values)
