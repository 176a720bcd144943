"""Benchmarks: JSONL files of prompts with expected answers, read and checked with every bad line named.

One row a line:
  {"id": "q1", "prompt": "2+2?", "expected": "4", "grader": "numeric", "cluster": "arithmetic"}
  {"id": "q2", "messages": [{"role": "user", "content": "Capital of France?"}], "expected": "Paris"}
`id` is unique (a string or an integer, kept as a string); `prompt` (a string) or `messages` (a chat
ending with a user turn); `expected` (null only for a json grader, or a regex grader with a pattern);
`cluster` or `failure` names the failure cluster the row targets; `grader` overrides the default.
Other keys are kept out of the way: benchmarks often carry notes or sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxft.errors import DataError
from mlxft.eval.graders import GraderSpec, check_expected, parse_grader

ROLES = ("system", "user", "assistant")
BENCH_HINT = 'each line: {"id": ..., "prompt": "..." or "messages": [...], "expected": ..., "grader": ...}'


@dataclass(frozen=True)
class BenchItem:
    """One benchmark question: exactly one of `prompt` and `messages` is set; `line` is 1-based."""

    id: str
    prompt: str | None
    messages: list[dict] | None
    expected: Any
    cluster: str | None
    grader: GraderSpec
    line: int


def read_bench(path: str | Path, default_grader: Any = "exact") -> list[BenchItem]:
    """Read a benchmark file (or a folder's test.jsonl); every bad line is reported in one DataError."""
    path = Path(path)
    if path.is_dir():
        if not (path / "test.jsonl").is_file():
            raise DataError(
                f"{path}: no test.jsonl in this folder",
                hint="a benchmark is a .jsonl file, or a folder with test.jsonl",
            )
        path = path / "test.jsonl"
    if not path.is_file():
        raise DataError(
            f"{path}: no such benchmark file",
            hint="a benchmark is a .jsonl file, or a folder with test.jsonl",
        )
    default = parse_grader(default_grader, f"{path}: default grader")

    items: list[BenchItem] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    raw = path.read_bytes()
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}:{number}: not UTF-8 text (byte {exc.start + 1}: {line[exc.start:exc.start + 1]!r}); is this a binary file?")
            if len(problems) >= 20:
                break
            continue
        if not text.strip():
            continue
        item, row_problems = _read_row(text, number, default, first_seen)
        problems += [f"{path}:{number}: {p}" for p in row_problems]
        if item is not None:
            items.append(item)
    if problems:
        raise DataError(
            f"{path}: {len(problems)} problem(s) in the benchmark\n"
            + "\n".join(f"  {p}" for p in problems),
            hint=BENCH_HINT,
        )
    if not items:
        raise DataError(f"{path}: the benchmark has no rows", hint=BENCH_HINT)
    return items


def _read_row(
    text: str, number: int, default: GraderSpec, first_seen: dict[str, int]
) -> tuple[BenchItem | None, list[str]]:
    """One line as a BenchItem, or None and the list of `field: reason` problems it has."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        return None, [f"not JSON: {err.msg} at column {err.colno}"]
    except RecursionError:
        return None, ["nested too deeply to be a benchmark row"]
    if not isinstance(row, dict):
        return None, [f"expected a JSON object, got {type(row).__name__}"]
    problems: list[str] = []

    item_id = row.get("id")
    if item_id is None:
        problems.append("id: missing")
    elif (
        isinstance(item_id, bool)
        or not isinstance(item_id, (str, int))
        or not str(item_id).strip()
    ):
        problems.append(
            f"id: must be a non-empty string or an integer, got {item_id!r}"
        )
    else:
        item_id = str(item_id)
        if item_id in first_seen:
            problems.append(f"id: {item_id!r} repeats line {first_seen[item_id]}")
        else:
            first_seen[item_id] = number

    prompt, messages = row.get("prompt"), row.get("messages")
    if prompt is None and messages is None:
        problems.append("prompt: missing (give prompt or messages)")
    elif prompt is not None and messages is not None:
        problems.append("prompt: give prompt or messages, not both")
    elif prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        problems.append("prompt: must be a non-empty string")
    elif messages is not None:
        problems += _message_problems(messages)

    cluster = row.get("cluster")
    failure = row.get("failure")
    if cluster is not None and failure is not None and cluster != failure:
        problems.append(
            f"cluster: {cluster!r} and failure: {failure!r} disagree (they name the same thing)"
        )
    cluster = cluster if cluster is not None else failure
    if cluster is not None and not isinstance(cluster, str):
        problems.append(f"cluster: must be a string, got {type(cluster).__name__}")

    spec = default
    if "grader" in row:
        try:
            spec = parse_grader(row["grader"], "row")
        except DataError as err:
            # The caller prefixes file:line, so drop parse_grader's own `where`.
            problems.append(err.message.removeprefix("row: "))
            spec = None

    if "expected" not in row:
        problems.append("expected: missing")
    elif spec is not None:
        reason = check_expected(row["expected"], spec)
        if reason:
            problems.append(f"expected: {reason}")

    if problems:
        return None, problems
    return BenchItem(
        item_id, prompt, messages, row["expected"], cluster, spec, number
    ), []


def _message_problems(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages: must be a non-empty list of {role, content} turns"]
    problems = []
    for i, turn in enumerate(messages):
        if (
            not isinstance(turn, dict)
            or turn.get("role") not in ROLES
            or not isinstance(turn.get("content"), str)
        ):
            problems.append(
                f"messages[{i}]: must be {{role: {'|'.join(ROLES)}, content: string}}"
            )
    if not problems and messages[-1]["role"] != "user":
        problems.append(
            f"messages: must end with a user turn (the model answers it), ends with {messages[-1]['role']}"
        )
    return problems
