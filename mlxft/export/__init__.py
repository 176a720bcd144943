"""Exports: a finished run written in a format another tool reads (PEFT, a fused model, GGUF, timm/transformers, ...).

One table, `FORMATS` (in formats.py): a format's name -> the run kinds it takes and the module whose `write(run, recipe, folder,
options) -> list[str]` fills `folder` (and returns notes for the user: what was measured, what to watch). `export_run`
owns the rest for every format: resolving the run, refusing a kind the format cannot take, where the export goes, and
writing it atomically (a complete folder or none), never over something that is not an earlier export.

The arrows: export -> llm | vision | runs. Nothing in llm/, vision/ or train/ imports export/.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.atomic import atomic_write_text, publish_dir, temp_dir_for
from mlxft.errors import MlxftError, RunError, write_error
from mlxft.runs import RunDir

EXPORTS_DIR = "exports"  # RUN/exports/<format>: where an export goes unless told
EXPORT_STAMP = ".mlxft-export.json"  # what an export folder says about itself (format, run, time); push leaves it out

LM_KINDS = ("lm-lora", "lm-qlora", "lm-dora", "lm-full", "lm-dpo", "lm-orpo")
ADAPTER_KINDS = LM_KINDS + ("lm-classify",)


@dataclass
class ExportOptions:
    """What a user may ask of an export; each format reads what applies to it and refuses what cannot apply."""

    dtype: str | None = None        # the weights' type: float16 | bfloat16 | float32 (fused, gguf), or q8_0 (gguf)
    quantize: int | None = None     # fused into a quantized base: re-quantize to this many bits (else: stay dequantized)
    base: str | None = None         # the base model to use instead of the one the run recorded (a folder or Hub id)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExportFormat:
    name: str
    kinds: tuple[str, ...]
    summary: str                    # one line for `mlxft export --help` and the TUI
    module: str                     # imported only when used: its write(run, recipe, folder, options) -> notes
    # The options it reads (the TUI offers these and no others; each writer refuses the rest):
    dtypes: tuple[str, ...] = ()    # --dtype choices; () = it has none
    dtype_default: str = ""         # what it writes without --dtype, in a word or two
    quantize: tuple[int, ...] = ()  # --quantize choices
    base: bool = False              # reads --base (the base model, where the run's recorded one has moved)
    with_base: bool = False         # has --with-base; its --dtype then applies to that base file only


@dataclass
class ExportResult:
    folder: Path
    format: str
    files: list[str]
    notes: list[str]


def all_formats() -> dict[str, ExportFormat]:
    from mlxft.export.formats import FORMATS

    return FORMATS


def formats_for(kind: str) -> list[ExportFormat]:
    return [f for f in all_formats().values() if kind in f.kinds]


def default_folder(run: RunDir, fmt: str) -> Path:
    return run.path / EXPORTS_DIR / fmt


def _refuse_foreign(out: Path, run: RunDir) -> None:
    """An export may replace an earlier export, never anything else: the run itself, a user's folder, a file."""
    out_r, run_r = out.resolve(), run.path.resolve()
    if out_r == run_r or run_r.is_relative_to(out_r):
        raise MlxftError(f"{out}: that is the run directory (or holds it); an export cannot go there",
                         hint=f"leave --out unset ({default_folder(run, 'FORMAT')}) or name a new folder")
    inside = out_r.is_relative_to(run_r) and not out_r.is_relative_to(run_r / EXPORTS_DIR)
    if inside:
        raise MlxftError(f"{out}: inside the run directory but not under {EXPORTS_DIR}/; the run's own files are not written over",
                         hint=f"use {run.path / EXPORTS_DIR}/NAME or a folder outside the run")
    if out.exists() and not (out.is_dir() and (out / EXPORT_STAMP).is_file()):
        what = "a file" if not out.is_dir() else ("a folder that is not an mlxft export" if any(out.iterdir()) else None)
        if what:
            raise MlxftError(f"{out}: already exists and is {what}; nothing is written over it",
                             hint="name a new folder with --out, or remove that one yourself")


def export_run(run_path: str | Path, fmt: str, out: str | Path | None = None, options: ExportOptions | None = None) -> ExportResult:
    """Write the run at `run_path` in format `fmt` into `out` (default RUN/exports/<fmt>), atomically."""
    run = RunDir.containing(run_path)
    if run is None:
        raise RunError(f"{run_path}: not an mlxft run directory (no recipe.yaml and metrics.jsonl)",
                       hint="pass the folder that `mlxft train` printed (see `mlxft runs`)")
    recipe = run.load_recipe()
    if fmt not in all_formats():
        known = ", ".join(f.name for f in formats_for(recipe.kind)) or "none yet"
        raise MlxftError(f"unknown export format {fmt!r}", hint=f"a {recipe.kind} run exports as: {known}")
    spec = all_formats()[fmt]
    if recipe.kind not in spec.kinds:
        known = ", ".join(f.name for f in formats_for(recipe.kind)) or "none yet"
        raise MlxftError(f"{run.path}: a {recipe.kind} run cannot be exported as {fmt} ({spec.summary})",
                         hint=f"a {recipe.kind} run exports as: {known}")
    out = Path(out) if out is not None else default_folder(run, fmt)
    _refuse_foreign(out, run)
    options = options or ExportOptions()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(out)
    except OSError as exc:
        raise write_error(exc, out, "create the export folder") from None
    try:
        notes = importlib.import_module(spec.module).write(run, recipe, tmp, options) or []
        stamp = {"format": fmt, "run": str(run.path.resolve()), "kind": recipe.kind,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "notes": notes}
        atomic_write_text(tmp / EXPORT_STAMP, json.dumps(stamp, indent=2))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name != EXPORT_STAMP)
        publish_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(exc, getattr(exc, "filename", None) or out, "write the export") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(folder=out, format=fmt, files=files, notes=notes)
