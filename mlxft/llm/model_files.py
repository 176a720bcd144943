"""Checked readers for the files a model, adapter or checkpoint is made of: JSON, safetensors, configs, tokenizers.

Each one validates what it can cheaply (a safetensors header and its offsets against the file size, a config's
fields against the mlx-lm class that will read them) before MLX or mlx-lm touches the file, and raises
`BrokenFileError` / `ModelError` naming the file, the field or tensor, and what to do.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import struct
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from mlxft.errors import BrokenFileError, ModelError

REDOWNLOAD = "the file is incomplete or damaged (an interrupted download or copy?): download or copy it again"
# The safetensors format caps its JSON header at 100 MB; a larger length means the file is something else.
MAX_HEADER = 100_000_000
_ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}
_SHARD = re.compile(r"^model-(\d+)-of-(\d+)\.safetensors$")
MODEL_CONFIG_HINT = "restore the model's original config.json (download it again)"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a safetensors header declares it (nothing is read from its data)."""

    dtype: str
    shape: tuple[int, ...]


def read_json_file(path: str | Path, what: str, *, hint: str | None = None) -> dict:
    """The JSON object in `path` (`what` says what the file is, e.g. "the model's config"); BrokenFileError if not."""
    path = Path(path)
    if not path.is_file():
        raise BrokenFileError(path, f"{what} is missing" if not path.exists() else f"{what} should be a file", hint)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise BrokenFileError(path, f"{what} cannot be read ({exc.strerror or exc})", hint or "check the file's permissions") from None
    except UnicodeDecodeError:
        raise BrokenFileError(path, f"{what} is not text (not UTF-8): is it the right file?", hint) from None
    except json.JSONDecodeError as exc:
        raise BrokenFileError(path, f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", hint or REDOWNLOAD) from None
    except RecursionError:
        raise BrokenFileError(path, f"{what} is nested too deeply to read", hint) from None
    if not isinstance(value, dict):
        raise BrokenFileError(path, f"{what} should be a JSON object, not a {type(value).__name__}", hint)
    return value


def check_safetensors(path: str | Path, what: str, *, hint: str | None = None) -> dict[str, TensorInfo]:
    """Every tensor a safetensors file declares, after checking its header and that each tensor's bytes are in the file.

    Reads only the header (no tensor data), so it is cheap enough to run before every load.
    """
    path = Path(path)
    hint = hint or REDOWNLOAD
    if not path.is_file():
        raise BrokenFileError(path, f"{what} is missing" if not path.exists() else f"{what} should be a file", hint)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = fh.read(length) if length is not None and length <= min(MAX_HEADER, size - 8) else b""
    except OSError as exc:
        raise BrokenFileError(path, f"{what} cannot be read ({exc.strerror or exc})", "check the file's permissions") from None
    if length is None:
        raise BrokenFileError(path, f"{what} is truncated: {size} bytes, too short for a safetensors header", hint)
    if length > MAX_HEADER:
        raise BrokenFileError(path, f"{what} is not a safetensors file (its first 8 bytes are not a header length)", hint)
    if 8 + length > size:
        raise BrokenFileError(path, f"{what} is truncated: its header needs {8 + length} bytes but the file has {size}", hint)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BrokenFileError(path, f"{what} is damaged: its safetensors header is not valid JSON", hint) from None
    if not isinstance(header, dict):
        raise BrokenFileError(path, f"{what} is damaged: its safetensors header is not a JSON object", hint)
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info, end = _tensor_entry(entry)
        if info is None:
            raise BrokenFileError(path, f"{what} is damaged: the header entry of tensor {name!r} is malformed", hint)
        if end > data_size:
            raise BrokenFileError(
                path, f"{what} is truncated: tensor {name!r} needs {8 + length + end} bytes but the file has {size}", hint
            )
        tensors[name] = info
    return tensors


def _tensor_entry(entry) -> tuple[TensorInfo | None, int]:
    """(TensorInfo, end offset) of one header entry, or (None, 0) when it is not a well-formed one."""
    if not isinstance(entry, dict):
        return None, 0
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    ints = (lambda xs, n=None: isinstance(xs, list) and (n is None or len(xs) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs))
    if not isinstance(dtype, str) or not ints(shape) or not ints(offsets, 2) or offsets[0] > offsets[1]:
        return None, 0
    item = _ITEM_BYTES.get(dtype)
    if item is not None and offsets[1] - offsets[0] != math.prod(shape) * item:
        return None, 0  # sub-byte dtypes (F4, F6) are not sized here; MLX checks them when it reads
    return TensorInfo(dtype, tuple(shape)), offsets[1]


def load_safetensors_checked(path: str | Path, what: str, *, hint: str | None = None) -> dict:
    """The arrays of a safetensors file (mx.load), once `check_safetensors` has found it whole."""
    import mlx.core as mx

    check_safetensors(path, what, hint=hint)
    try:
        return mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError) as exc:  # e.g. a dtype this MLX cannot read
        raise BrokenFileError(path, f"{what} cannot be read by MLX ({exc})", hint or REDOWNLOAD) from None


def check_model_weights(folder: Path) -> dict[str, TensorInfo]:
    """Every weight of a model folder, after checking each model*.safetensors and, when sharded, that no shard is missing.

    A sharded model's index (model.safetensors.index.json) and its model-0000i-of-0000n names both say which shards
    must be there; mlx-lm reads whatever model*.safetensors it finds, so a missing shard would surface only as
    "missing parameters". Every problem is collected, then raised at once.
    """
    problems: list[str] = []
    tensors: dict[str, TensorInfo] = {}
    files = sorted(p.name for p in folder.glob("model*.safetensors"))
    expected: dict[str, list[str]] = {}  # shard -> tensors the index puts there
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        index = read_json_file(index_path, "the weights index", hint="download the model's model.safetensors.index.json again")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise BrokenFileError(index_path, "weight_map: missing, or not an object of tensor name -> shard file",
                                  hint="download the model's model.safetensors.index.json again")
        for tensor, shard in weight_map.items():
            expected.setdefault(shard, []).append(tensor)
    for name in files:
        match = _SHARD.match(name)
        if match:
            width, total = len(match.group(2)), int(match.group(2))
            for i in range(1, total + 1):
                expected.setdefault(f"model-{i:0{width}d}-of-{match.group(2)}.safetensors", [])
    for shard in sorted(set(expected) - set(files)):
        listed = f" (the index puts {len(expected[shard])} tensors there)" if expected[shard] else ""
        problems.append(f"{folder / shard}: the shard is missing{listed}")
    for name in files:
        try:
            found = check_safetensors(folder / name, "the model weights file")
        except BrokenFileError as exc:
            problems.append(exc.message)
            continue
        tensors.update(found)
        absent = [t for t in expected.get(name, []) if t not in found]
        if absent:
            problems.append(f"{folder / name}: lacks {len(absent)} tensor(s) the index puts there (e.g. {absent[0]!r})")
    if problems:
        raise ModelError(
            problems[0] if len(problems) == 1 else f"{folder}: the model's weights are incomplete or damaged:\n  " + "\n  ".join(problems),
            hint="download the model again (a sharded model needs every shard its index lists)",
        )
    return tensors


def check_model_config(folder: Path, *, trust_remote_code: bool = False) -> dict:
    """config.json, checked against the mlx-lm class that will build the model: every problem named at once.

    A config naming a `model_file` (Python that mlx-lm imports to build the model) is refused unless
    `trust_remote_code`; nothing from the folder is imported here.
    """
    path = folder / "config.json"
    config = read_json_file(path, "the model's config", hint=MODEL_CONFIG_HINT)
    model_file = config.get("model_file")
    if model_file is not None:
        if not trust_remote_code:
            raise ModelError(
                f"{path}: model_file names {model_file!r}, Python code that would be imported and run to build this "
                "model; mlxft runs a model's own code only when trust_remote_code is on, and it is off",
                hint="read that file first; if you trust it, set `trust_remote_code: true` in the recipe "
                "(or call mlxft.load(..., trust_remote_code=True))",
            )
        if not isinstance(model_file, str) or not (folder / model_file).is_file():
            raise BrokenFileError(path, f"model_file: {model_file!r} is not a file in {folder}")
        return config  # the architecture is the folder's own code: its fields cannot be checked here
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise BrokenFileError(
            path, "model_type: missing" if model_type is None else f"model_type: must be a string, got {model_type!r}",
            hint='a Hugging Face config.json names its architecture in model_type, e.g. "llama" or "qwen2"',
        )
    args_class = _model_args_class(config, path)
    problems = _field_problems(config, args_class)
    if problems:
        lines = "\n  ".join(problems)
        raise BrokenFileError(path, f"{len(problems)} problem(s) for mlx-lm's {model_type!r} model:\n  {lines}",
                              hint=MODEL_CONFIG_HINT)
    return config


def _model_args_class(config: dict, path: Path):
    """mlx-lm's ModelArgs class for this config's model_type (only mlx-lm's own modules are imported)."""
    from mlx_lm.utils import _get_classes

    try:
        model_class, args_class = _get_classes(config)
        if not isinstance(model_class, type) or not hasattr(args_class, "from_dict"):
            raise ValueError
    except SystemExit:  # some mlx-lm model modules exit when an optional package is missing (olmo)
        module = f"mlx_lm.models.{config['model_type']}"
        raise ModelError(f"{path}: mlx-lm's {config['model_type']!r} model needs a package that is not installed",
                         hint=f"`python -c 'import {module}'` says which; install it, then try again") from None
    except (ValueError, ImportError, AttributeError):
        raise ModelError(
            f"{path}: model_type {config['model_type']!r} is not an architecture the installed mlx-lm ({_mlx_lm_version()}) can build",
            hint=_supported_hint(config["model_type"]),
        ) from None
    return args_class


def _supported_hint(model_type: str) -> str:
    from mlxft.llm.inventory import mlx_lm_model_types

    known = sorted(mlx_lm_model_types() or ())
    close = difflib.get_close_matches(model_type, known, n=3)
    near = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (f"{near}mlx-lm builds {len(known)} types (e.g. llama, qwen2, qwen3, gemma3, mistral, phi3); "
            "`mlxft models --local` marks the local folders it cannot load; a newer mlx-lm may know this one: pip install -U mlx-lm")


def _mlx_lm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlx-lm")
    except PackageNotFoundError:
        return "?"


_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _field_problems(config: dict, args_class) -> list[str]:
    """Missing required fields and values of the wrong type, for the ModelArgs that `from_dict` fills from `config`."""
    try:
        params = inspect.signature(args_class).parameters
    except (TypeError, ValueError):
        return []
    try:
        hints = typing.get_type_hints(args_class)
    except Exception:  # a forward reference mlx-lm never resolves: check presence only
        hints = {}
    problems = []
    for name, param in params.items():
        if name not in config:
            if param.default is inspect.Parameter.empty and param.kind is not param.VAR_KEYWORD:
                problems.append(f"{name}: missing (mlx-lm needs it)")
            continue
        kind, optional = _simple_type(hints.get(name, param.annotation))
        value = config[name]
        if kind is None or (value is None and (optional or param.default is not inspect.Parameter.empty)):
            continue  # null where mlx-lm has a default: passed on as it is (a model that loads is not refused)
        if not _is_a(value, kind):
            problems.append(f"{name}: must be {_SIMPLE[kind]}, got {value!r}")
    return problems


def _simple_type(annotation) -> tuple[type | None, bool]:
    """(int/float/str/bool, whether None is allowed) for a plain or Optional annotation; (None, _) for anything else."""
    if annotation in _SIMPLE:
        return annotation, False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return (inner if inner in _SIMPLE else None), True
    return None, False


def _is_a(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool) or value in (0, 1)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_tokenizer_files(folder: Path) -> None:
    """That the folder has tokenizer files, and that its tokenizer JSON files parse (each is named when not)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise ModelError(
            f"{folder}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json + merges.txt, or *.tiktoken)",
            hint="copy the tokenizer files from the model's original repository into this folder",
        )
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            read_json_file(folder / name, "the tokenizer file", hint="copy this file from the model's original repository again")


def tokenizer_code_reference(folder: Path) -> str | None:
    """Where the folder asks transformers to run its own tokenizer code (`auto_map`), or None."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        ref = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else auto_map if isinstance(auto_map, list) else None
        if ref:
            names = " / ".join(str(r) for r in ref if r) if isinstance(ref, list) else str(ref)
            return f"{folder / name}: auto_map.AutoTokenizer names {names}"
    return None
