"""Every model this machine can fine-tune: the catalogue and local model folders, with size on disk and memory needed.

Local models are Hugging Face-layout folders (config.json + safetensors) under ./models-local (where `mlxft import`
writes), GGUF imports in mlxft's cache, and model repositories in the Hugging Face cache. Nothing is downloaded and
no weights are read: sizes come from the file system, memory from config.json through the `mlxft models` table's
own estimate. Folders that cannot be trained are listed with the reason, not hidden.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mlxft.backend import GB
from mlxft.errors import BrokenFileError, ModelError
from mlxft.llm.catalogue import ModelEntry, load_catalogue
from mlxft.llm.memory import FIT_MARKS, ModelFit, count_parameters, estimate_fit, format_parameter_count, table_settings
from mlxft.llm.model_files import check_model_weights, check_tokenizer_files, read_json_file
LOCAL_DIR = Path("models-local")  # `mlxft import` writes here by default, relative to where it runs

SOURCES = {"catalogue": "the model catalogue", "local": "./models-local", "gguf": "GGUF import cache", "hf-cache": "Hugging Face cache"}


@dataclass(frozen=True)
class ModelListing:
    """One row of the models list: what it is, where it is, what it needs, and why not if it cannot be used."""

    name: str  # catalogue key, folder name, or Hub id
    spec: str  # what a recipe's `model:` takes: the catalogue key, the folder path, or the Hub id
    source: str  # a key of SOURCES
    architecture: str | None
    parameters: int | None
    context_length: int | None
    disk_bytes: int | None  # None when not on disk (a catalogue entry that is not downloaded)
    fit: ModelFit | None  # None when config.json cannot be sized
    problem: str | None = None  # why it cannot be trained (None: it can)
    entry: ModelEntry | None = None
    path: Path | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict:
        fit = self.fit

        def gb(estimate) -> float | None:
            return round(estimate.total / GB, 2) if estimate is not None else None

        return {
            "name": self.name, "spec": self.spec, "source": self.source,
            "path": str(self.path) if self.path else None,
            "hub_id": self.entry.hub_id if self.entry else None,
            "mlx_4bit_id": self.entry.mlx_4bit_id if self.entry else None,
            "gated": self.entry.gated if self.entry else None,
            "architecture": self.architecture, "parameters": self.parameters, "context_length": self.context_length,
            "disk_bytes": self.disk_bytes,
            "lora_gb": gb(fit.lora) if fit else None,
            "lora_fits": FIT_MARKS[fit.lora_verdict] if fit and fit.lora_verdict else None,
            "qlora_gb": gb(fit.qlora) if fit else None,
            "qlora_fits": FIT_MARKS[fit.qlora_verdict] if fit else None,
            "problem": self.problem,
        }


def default_local_folders() -> list[tuple[str, Path]]:
    """(source, folder) pairs scanned for model folders: ./models-local and the GGUF import cache."""
    from mlxft.llm.loading import (
        cache_root,  # imports mlx.core (nothing is computed); the TUI has it loaded anyway
    )

    return [("local", LOCAL_DIR), ("gguf", cache_root() / "gguf")]


def default_hf_cache() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def list_models(
    available: int,
    *,
    local: bool = True,
    folders: list[tuple[str, Path]] | None = None,
    hf_cache: Path | None = None,
    settings: dict | None = None,
) -> list[ModelListing]:
    """The catalogue (with disk size when downloaded to the Hugging Face cache), then local models if `local`.

    `folders` are (source, folder) pairs (default: `default_local_folders()`), `hf_cache` the hub cache (default:
    `default_hf_cache()`), `settings` the estimate's settings (default: `table_settings()`).
    """
    settings = table_settings() if settings is None else settings
    entries = load_catalogue()
    cached = scan_hf_cache(default_hf_cache() if hf_cache is None else hf_cache) if local else []
    cached_size = {repo_id.lower(): size for repo_id, size, _ in cached}
    listings = [
        ModelListing(
            name=entry.key, spec=entry.key, source="catalogue", architecture=entry.architecture, parameters=entry.parameters,
            context_length=entry.context_length, disk_bytes=cached_size.get(entry.hub_id.lower()),
            fit=estimate_fit(entry.config(), available, settings), entry=entry,
        )
        for entry in entries
    ]
    if not local:
        return listings
    for source, folder in default_local_folders() if folders is None else folders:
        for path in _model_folders(Path(folder)):
            listings.append(describe_folder(path, path.name, str(path), source, folder_size(path), available, settings))
    # A catalogue model in the cache is its catalogue row (with the disk size); other repositories get their own.
    known = {entry.hub_id.lower() for entry in entries}
    for repo_id, size, snapshot in cached:
        if repo_id.lower() not in known:
            listings.append(describe_folder(snapshot, repo_id, repo_id, "hf-cache", size, available, settings))
    return listings


def _model_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name.lower())


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (links not followed: the Hugging Face cache counts its blobs itself)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def scan_hf_cache(cache_dir: Path) -> list[tuple[str, int, Path]]:
    """(repo id, bytes on disk, snapshot folder) of each model repository in the Hugging Face cache; no network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # The revision `main` points at is what loading by id uses; without refs, the newest.
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        out.append((repo.repo_id, repo.size_on_disk, Path(revision.snapshot_path)))
    return out


def describe_folder(path: Path, name: str, spec: str, source: str, disk_bytes: int | None, available: int, settings: dict) -> ModelListing:
    """A model folder's row: its config.json numbers and estimate, and the first reason it cannot be trained, if any."""
    config, problem = read_config(path)
    fit = parameters = context = architecture = None
    if config is not None:
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
        architecture = config.get("model_type") or text.get("model_type")
        context = config.get("max_position_embeddings") or text.get("max_position_embeddings")
        problem = _architecture_problem(architecture)
        if problem is None and "model_file" in config:
            problem = f"config.json's model_file ({config['model_file']}) is the folder's own code: it loads only with trust_remote_code: true"
        try:
            parameters = count_parameters(config)
            # The estimate models causal LM blocks: for another kind of model it would be a made-up number.
            fit = estimate_fit(config, available, settings) if problem is None else None
        except (ModelError, TypeError, ValueError) as exc:
            problem = problem or (exc.message if isinstance(exc, ModelError) else f"config.json has a bad number ({exc})")
        if problem is None:
            problem = _weights_problem(path)  # sized all the same: the config is sound, the weights are missing
        if problem is None and source == "gguf":
            problem = _gguf_import_problem(path)
    return ModelListing(
        name=name, spec=spec, source=source, architecture=architecture, parameters=parameters,
        context_length=int(context) if isinstance(context, int) else None, disk_bytes=disk_bytes, fit=fit, problem=problem, path=path,
    )


def read_config(path: Path) -> tuple[dict | None, str | None]:
    """(config.json as a dict, None) or (None, what is wrong with it)."""
    config_path = path / "config.json"
    if not config_path.is_file():
        return None, "no config.json: not a Hugging Face-layout model folder"
    try:
        return read_json_file(config_path, "config.json"), None
    except BrokenFileError as exc:  # the row already shows the folder: the reason is enough
        return None, exc.reason


def _weights_problem(path: Path) -> str | None:
    # The same pattern and checks loading uses (mlxft loads safetensors only, never pickles); headers only.
    if glob.glob(str(path / "model*.safetensors")):
        try:
            check_model_weights(path)
            check_tokenizer_files(path)
        except ModelError as exc:
            return exc.message.replace(f"{path}{os.sep}", "").replace(f"{path}: ", "")
        return None
    if glob.glob(str(path / "*.bin")) or glob.glob(str(path / "*.pt")):
        return "pickle weights only (.bin/.pt): convert them to safetensors first"
    return "no model*.safetensors weights"


def _architecture_problem(model_type) -> str | None:
    if not model_type:
        return "config.json has no model_type: not a causal LM mlx-lm can load"
    if not isinstance(model_type, str):
        return f"config.json's model_type must be a string, got {model_type!r}"
    known = mlx_lm_model_types()
    if known is not None and model_type not in known:
        return f"model_type '{model_type}' is not a causal LM architecture mlx-lm supports"
    return None


def _gguf_import_problem(path: Path) -> str | None:
    from mlxft.llm.gguf import MARKER

    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not made by an import (or an older one): judged like any folder
    if isinstance(marker, dict) and marker.get("complete") is False:
        return "the GGUF import did not finish: import the file again"
    return None


@functools.cache
def mlx_lm_model_types() -> frozenset[str] | None:
    """The model_type values the installed mlx-lm can build, found without importing it (that takes seconds).

    A model file per architecture under mlx_lm/models, plus mlx-lm's MODEL_REMAPPING aliases (e.g. mistral -> llama),
    read from its source. None when mlx-lm is not installed or its layout is not recognised: then nothing is refused.
    """
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    files = {p.stem for p in (root / "models").glob("*.py") if not p.stem.startswith("_")}
    if not files:
        return None
    remapping: dict = {}
    try:
        tree = ast.parse((root / "utils.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODEL_REMAPPING" for t in node.targets):
                remapping = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        pass
    return frozenset(files | {alias for alias, target in remapping.items() if target in files})


def format_size(n: int | None, digits: int = 1) -> str:
    """GB (10**9 bytes, as everywhere in mlxft) from 1 GB up, else MB: a 20 MB adapter should not read as 0.0 GB."""
    if n is None:
        return "-"
    if n >= GB:
        return f"{n / GB:.{digits}f} GB"
    return f"{n / 1e6:.0f} MB"


def format_local_table(listings: list[ModelListing]) -> str:
    """The `mlxft models --local` table of local models (the catalogue's table comes first, unchanged)."""
    rows = [listing for listing in listings if listing.source != "catalogue"]
    folders = ", ".join(SOURCES[s] for s in ("local", "gguf", "hf-cache"))
    if not rows:
        return f"Local models: none found (looked in {folders})."
    cols = ("local model", "where", "type", "params", "disk", "LoRA", "fits", "QLoRA", "fits", "problem")
    table = []
    for row in rows:
        fit = row.fit
        table.append((
            row.name, row.source, row.architecture or "?", format_parameter_count(row.parameters) if row.parameters else "-",
            format_size(row.disk_bytes),
            f"{fit.lora.total / GB:.1f} GB" if fit and fit.lora else "-", FIT_MARKS[fit.lora_verdict] if fit and fit.lora_verdict else "-",
            f"{fit.qlora.total / GB:.1f} GB" if fit else "-", FIT_MARKS[fit.qlora_verdict] if fit else "-",
            row.problem or "",
        ))
    widths = [max(len(str(r[i])) for r in (cols, *table)) for i in range(len(cols))]
    right = {3, 4, 5, 6, 7, 8}

    def fmt(row) -> str:
        return "  ".join(str(v).rjust(w) if i in right else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()

    lines = [f"Local models ({folders}), at the same settings; use a row's name (Hub id) or path as `model:`:", ""]
    lines += [fmt(cols), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in table]
    paths = [(row.name, row.spec) for row in rows if row.spec != row.name]
    if paths:
        lines += ["", "paths:"] + [f"  {name}: {spec}" for name, spec in paths]
    return "\n".join(lines)
