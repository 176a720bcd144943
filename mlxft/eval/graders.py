"""Graders that decide whether a model's answer is right: exact, contains, regex, json, one-of, numeric.

`parse_grader("exact", where)` or `parse_grader({"kind": "numeric", "abs_tol": 0.01}, where)` gives a
`GraderSpec`; `grade(answer, expected, spec)` gives a `Grade(passed, score, reason)`.

Rules, per kind:
  exact     normalised answer == normalised expected; also tried with a trailing period removed.
  contains  normalised expected appears in the normalised answer.
  regex     `pattern` (or expected, when no pattern is set) is searched for in the raw answer.
  json      the answer (or the body of a ```json fence in it) parses as JSON; it must match `schema`
            when one is given, and equal expected when expected is given (a JSON string is parsed).
  one-of    the answer names one of `labels` (exact match, else the earliest whole-word label);
            it passes when that label is expected.
  numeric   the first number in the answer ("1,234.5", "-3", "45%") is within `abs_tol` or
            `rel_tol` of expected; a percentage also counts as its fraction, so "45%" matches 0.45.
Normalisation (exact, contains, one-of): casefold unless `case: sensitive`, drop punctuation,
drop English articles when asked, collapse whitespace. A list as expected (except for json) means
any of these answers. Scores are 1.0 or 0.0: a partly right answer is a wrong one.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlxft.errors import DataError

KINDS = ("exact", "contains", "regex", "json", "one-of", "numeric")
KIND_HINT = (
    "a grader is a kind ("
    + ", ".join(KINDS)
    + ") or a mapping such as {kind: numeric, abs_tol: 0.01}"
)

# Which options each kind reads; an option set for a kind that ignores it is a mistake worth naming.
_NORMALISATION = ("case", "strip_punctuation", "collapse_whitespace", "strip_articles")
_OPTIONS = {
    "exact": _NORMALISATION,
    "contains": _NORMALISATION,
    "one-of": _NORMALISATION + ("labels",),
    "regex": ("pattern", "ignorecase"),
    "json": ("json_schema",),
    "numeric": ("abs_tol", "rel_tol"),
}

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)"
    r"(?P<digits>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exponent>[eE][-+]?\d+)?"
    r"(?P<percent>\s*%)?"
)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Grade:
    """The verdict on one answer: passed, a score in [0, 1], and a short reason a person can read."""

    passed: bool
    score: float
    reason: str


class GraderSpec(BaseModel):
    """How to grade: a kind plus the options that kind reads. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    kind: Literal["exact", "contains", "regex", "json", "one-of", "numeric"]
    case: Literal["insensitive", "sensitive"] = "insensitive"
    strip_punctuation: bool = True
    collapse_whitespace: bool = True
    strip_articles: bool = False
    pattern: str | None = None
    ignorecase: bool = False
    # `schema` would shadow a BaseModel attribute; users still write `schema:`.
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    labels: list[str] | None = None
    abs_tol: float = Field(1e-6, ge=0)
    rel_tol: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> GraderSpec:
        problems = []
        allowed = _OPTIONS[self.kind]
        for name in sorted(self.model_fields_set - {"kind"} - set(allowed)):
            shown = "schema" if name == "json_schema" else name
            problems.append(f"{shown}: not an option of the {self.kind} grader")
        if self.kind == "one-of":
            if not self.labels:
                problems.append(
                    "labels: the one-of grader needs a non-empty list of labels"
                )
            elif len({_normalise(label, self) for label in self.labels}) < len(
                self.labels
            ):
                problems.append("labels: two labels are the same after normalisation")
        if self.kind == "regex" and self.pattern is not None:
            reason = _regex_problem(self.pattern)
            if reason:
                problems.append(f"pattern: {reason}")
        if self.kind == "json" and self.json_schema is not None:
            validator = _jsonschema().validators.validator_for(self.json_schema)
            try:
                validator.check_schema(self.json_schema)
            except _jsonschema().SchemaError as err:
                problems.append(f"schema: not a valid JSON schema: {err.message}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_grader(value: Any, where: str) -> GraderSpec:
    """Read a grader from a kind name or a mapping; a bad one raises DataError naming `where`."""
    if isinstance(value, GraderSpec):
        return value
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise DataError(
            f"{where}: grader: expected a kind or a mapping, got {type(value).__name__}",
            hint=KIND_HINT,
        )
    if "kind" not in value:
        raise DataError(f"{where}: grader: no kind", hint=KIND_HINT)
    try:
        return GraderSpec.model_validate(value)
    except DataError as err:  # jsonschema missing: still say which grader asked for it
        raise DataError(f"{where}: grader: {err.message}", hint=err.hint) from None
    except ValidationError as err:
        reasons = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            reasons.append(f"{loc}: {msg}" if loc else msg)
        raise DataError(
            f"{where}: grader: " + "; ".join(reasons), hint=KIND_HINT
        ) from None


def check_expected(expected: Any, spec: GraderSpec) -> str | None:
    """Why `expected` cannot be graded by `spec` (None if it can): caught when a benchmark is read, not mid-run."""
    if expected is None:
        if spec.kind == "json" or (spec.kind == "regex" and spec.pattern is not None):
            return None
        return f"null, but the {spec.kind} grader needs an answer to compare with"
    if spec.kind == "json":
        return None
    alternatives = expected if isinstance(expected, list) else [expected]
    if not alternatives:
        return "an empty list of acceptable answers"
    for one in alternatives:
        if isinstance(one, (dict, list)):
            return f"a {type(one).__name__}, but the {spec.kind} grader compares text"
        if spec.kind == "numeric" and _expected_values(one) is None:
            return f"{one!r} is not a number"
        if spec.kind == "regex" and spec.pattern is None:
            reason = _regex_problem(str(one))
            if reason:
                return reason
        if spec.kind == "one-of" and _normalise(str(one), spec) not in {
            _normalise(lb, spec) for lb in spec.labels or []
        }:
            return f"{one!r} is not one of the labels {spec.labels}"
    return None


def grade(answer: str, expected: Any, spec: GraderSpec | str | dict) -> Grade:
    """Decide whether `answer` is right. Raises DataError when `expected` does not suit the grader."""
    spec = parse_grader(spec, "grade")
    problem = check_expected(expected, spec)
    if problem:
        raise DataError(f"expected: {problem}", hint=KIND_HINT)
    if spec.kind != "json" and isinstance(expected, list):
        grades = [_GRADERS[spec.kind](answer, one, spec) for one in expected]
        return next((g for g in grades if g.passed), grades[0])
    return _GRADERS[spec.kind](answer, expected, spec)


def extract_label(
    answer: str, labels: list[str], spec: GraderSpec | None = None
) -> str | None:
    """The label the answer names: an exact (normalised) match, else the earliest label found as a whole word."""
    spec = spec or GraderSpec(kind="one-of", labels=labels)
    said = _normalise(answer, spec)
    normalised = {label: _normalise(label, spec) for label in labels}
    for label, norm in normalised.items():
        if said == norm:
            return label
    found = []
    for label, norm in normalised.items():
        if not norm:
            continue
        hit = re.search(rf"(?<!\w){re.escape(norm)}(?!\w)", said)
        if hit:
            # Earliest wins; at the same place the longer label ("very good" over "very").
            found.append((hit.start(), -len(norm), label))
    return min(found)[2] if found else None


def _normalise(text: str, spec: GraderSpec) -> str:
    if spec.case == "insensitive":
        text = text.casefold()
    if spec.strip_punctuation:
        text = "".join(
            ch for ch in text if not unicodedata.category(ch).startswith("P")
        )
    if spec.strip_articles:
        text = _ARTICLES.sub(" ", text)
    if spec.collapse_whitespace:
        text = " ".join(text.split())
    return text.strip()


def _without_trailing_period(text: str) -> str:
    text = text.rstrip()
    return text.removesuffix(".")


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _grade_exact(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    want, got = str(expected), answer
    pairs = [
        (got, want),
        (_without_trailing_period(got), _without_trailing_period(want)),
    ]
    if any(_normalise(a, spec) == _normalise(e, spec) for a, e in pairs):
        return Grade(True, 1.0, "exact match")
    return Grade(
        False,
        0.0,
        f"expected {_shorten(_normalise(want, spec))!r}, got {_shorten(_normalise(got, spec))!r}",
    )


def _grade_contains(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    want = _normalise(str(expected), spec)
    if want in _normalise(answer, spec):
        return Grade(True, 1.0, f"contains {_shorten(want)!r}")
    return Grade(False, 0.0, f"does not contain {_shorten(want)!r}")


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as err:
        return f"not a regular expression: {err}"
    return None


def _grade_regex(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    pattern = spec.pattern if spec.pattern is not None else str(expected)
    hit = re.search(pattern, answer, re.IGNORECASE if spec.ignorecase else 0)
    if hit:
        return Grade(
            True, 1.0, f"matches /{_shorten(pattern)}/ at {_shorten(hit.group(0))!r}"
        )
    return Grade(False, 0.0, f"no match for /{_shorten(pattern)}/")


def _jsonschema():
    try:
        import jsonschema
    except ImportError:
        raise DataError(
            "the json grader's schema option needs the jsonschema package",
            hint="pip install jsonschema",
        ) from None
    return jsonschema


def _parse_json_answer(answer: str) -> tuple[Any, str | None]:
    """The JSON the answer holds, bare or inside a ``` fence; or None and why not."""
    try:
        return json.loads(answer.strip()), None
    except json.JSONDecodeError as err:
        first_error = f"not JSON: {err.msg} at line {err.lineno} column {err.colno}"
    except RecursionError:  # a model can answer with thousands of nested brackets
        return None, "nested too deeply to be read as JSON"
    for fenced in _FENCE.finditer(answer):
        try:
            return json.loads(fenced.group(1).strip()), None
        except RecursionError:
            return None, "fenced block is nested too deeply to be read as JSON"
        except json.JSONDecodeError as err:
            return (
                None,
                f"fenced block is not JSON: {err.msg} at line {err.lineno} column {err.colno}",
            )
    return None, first_error


def _grade_json(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    value, problem = _parse_json_answer(answer)
    if problem:
        return Grade(False, 0.0, problem)
    if spec.json_schema is not None:
        jsonschema = _jsonschema()
        validator = jsonschema.validators.validator_for(spec.json_schema)(
            spec.json_schema
        )
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return Grade(False, 0.0, f"schema: {path}: {_shorten(error.message, 120)}")
    if expected is not None:
        if isinstance(expected, str):
            try:
                expected = json.loads(expected)
            except (json.JSONDecodeError, RecursionError):
                pass  # a plain string: the answer must be that JSON string
        if value != expected:
            return Grade(
                False,
                0.0,
                f"JSON differs from expected: got {_shorten(json.dumps(value))}",
            )
    return Grade(
        True,
        1.0,
        "valid JSON"
        + (", matches schema" if spec.json_schema is not None else "")
        + (", equals expected" if expected is not None else ""),
    )


def _numbers(match: re.Match) -> list[float]:
    """The values a number can mean: as written, and its fraction when it is a percentage."""
    text = match.group("digits").replace(",", "") + (match.group("exponent") or "")
    value = float(text) * (-1.0 if match.group("sign") in ("-", "\u2212") else 1.0)
    return [value, value / 100] if match.group("percent") else [value]


def _expected_values(expected: Any) -> list[float] | None:
    if isinstance(expected, bool):
        return None
    if isinstance(expected, (int, float)):
        return [float(expected)]
    match = _NUMBER.search(str(expected))
    if match is None or str(expected).strip() != match.group(0).strip():
        return None
    return _numbers(match)


def _grade_numeric(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    want = _expected_values(expected)
    match = _NUMBER.search(answer)
    if match is None:
        return Grade(False, 0.0, "no number in the answer")
    got = _numbers(match)
    close = any(
        math.isclose(g, w, rel_tol=spec.rel_tol, abs_tol=spec.abs_tol)
        for g in got
        for w in want
    )
    if close:
        return Grade(
            True, 1.0, f"{match.group(0).strip()} is within tolerance of {expected}"
        )
    return Grade(False, 0.0, f"got {match.group(0).strip()}, expected {expected}")


def _grade_one_of(answer: str, expected: Any, spec: GraderSpec) -> Grade:
    labels = spec.labels or []
    predicted = extract_label(answer, labels, spec)
    if predicted is None:
        return Grade(
            False,
            0.0,
            f"not a label: {_shorten(answer.strip())!r} (labels: {', '.join(labels)})",
        )
    if _normalise(predicted, spec) == _normalise(str(expected), spec):
        return Grade(True, 1.0, f"predicted {predicted!r}")
    return Grade(False, 0.0, f"predicted {predicted!r}, expected {str(expected)!r}")


_GRADERS = {
    "exact": _grade_exact,
    "contains": _grade_contains,
    "regex": _grade_regex,
    "json": _grade_json,
    "one-of": _grade_one_of,
    "numeric": _grade_numeric,
}
