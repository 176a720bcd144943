"""Graders over a table of (answer, expected, spec, passed), bad grader specs, and benchmark files good and bad."""

from __future__ import annotations

import json

import pytest

from mlxft.errors import DataError
from mlxft.eval.bench import BenchItem, read_bench
from mlxft.eval.graders import Grade, GraderSpec, extract_label, grade, parse_grader

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name"],
}
SENTIMENT = {"kind": "one-of", "labels": ["positive", "negative", "neutral"]}

CASES = [
    # exact: case, punctuation, whitespace, articles, trailing period
    ("Paris", "paris", "exact", True),
    ("  PARIS!  ", "Paris", "exact", True),
    ("New   York", "new york", "exact", True),
    ("Paris", "Lyon", "exact", False),
    ("The answer is Paris", "Paris", "exact", False),
    ("Paris", "paris", {"kind": "exact", "case": "sensitive"}, False),
    ("Paris.", "Paris", {"kind": "exact", "strip_punctuation": False}, True),
    ("Paris!", "Paris", {"kind": "exact", "strip_punctuation": False}, False),
    ("New  York", "New York", {"kind": "exact", "collapse_whitespace": False}, False),
    (
        "the Eiffel Tower",
        "Eiffel Tower",
        {"kind": "exact", "strip_articles": True},
        True,
    ),
    ("the Eiffel Tower", "Eiffel Tower", "exact", False),
    ("Lyon", ["Paris", "lyon"], "exact", True),
    ("4", 4, "exact", True),
    # contains
    ("I believe it's Paris, France.", "paris", "contains", True),
    ("I believe it's Lyon.", "paris", "contains", False),
    ("It is PARIS", "Paris", {"kind": "contains", "case": "sensitive"}, False),
    # regex: expected is the pattern, or `pattern` wins
    ("Order #12345 shipped", r"#\d{5}\b", "regex", True),
    ("Order #123 shipped", r"#\d{5}\b", "regex", False),
    ("YES", "^yes$", "regex", False),
    ("YES", "^yes$", {"kind": "regex", "ignorecase": True}, True),
    ("ticket ABC-7", None, {"kind": "regex", "pattern": r"[A-Z]{3}-\d+"}, True),
    # json: bare, fenced, schema, equality
    ('{"name": "Ada"}', None, "json", True),
    ("name: Ada", None, "json", False),
    (
        'Here you go:\n```json\n{"name": "Ada", "age": 36}\n```\nanything else?',
        None,
        "json",
        True,
    ),
    ("```\n[1, 2]\n```", [1, 2], "json", True),
    ('{"name": "Ada", "age": 36}', None, {"kind": "json", "schema": SCHEMA}, True),
    ('{"age": "36"}', None, {"kind": "json", "schema": SCHEMA}, False),
    ('{"name": "Ada", "age": 36}', {"age": 36, "name": "Ada"}, "json", True),
    ('{"name": "Ada", "age": 37}', {"age": 36, "name": "Ada"}, "json", False),
    ('{"name": "Ada"}', '{"name": "Ada"}', "json", True),
    # one-of: exact label, extracted label, wrong label, no label
    ("Positive", "positive", SENTIMENT, True),
    ("The sentiment is negative overall.", "negative", SENTIMENT, True),
    ("The sentiment is negative overall.", "positive", SENTIMENT, False),
    ("I cannot tell.", "neutral", SENTIMENT, False),
    # numeric: commas, negatives, percentages, decimals, tolerance
    ("The total is 1,234.5 dollars", 1234.5, "numeric", True),
    ("It dropped to -42 degrees", -42, "numeric", True),
    ("It dropped to −42 degrees", "-42", "numeric", True),
    ("x-5", 5, "numeric", True),
    ("About 45% of users", 0.45, "numeric", True),
    ("About 45% of users", 45, "numeric", True),
    ("About 0.45 of users", "45%", "numeric", True),
    ("3.14159", 3.14, {"kind": "numeric", "abs_tol": 0.01}, True),
    ("3.2", 3.14, {"kind": "numeric", "abs_tol": 0.01}, False),
    ("1010", 1000, {"kind": "numeric", "rel_tol": 0.02}, True),
    ("1100", 1000, {"kind": "numeric", "rel_tol": 0.02}, False),
    ("Step 1: add. The answer is 4", 4, "numeric", False),
    ("no idea", 4, "numeric", False),
    ("12,5", 12, "numeric", True),
]


@pytest.mark.parametrize(("answer", "expected", "spec", "passed"), CASES)
def test_grader_decides_as_the_table_says(answer, expected, spec, passed):
    result = grade(answer, expected, spec)
    assert isinstance(result, Grade)
    assert result.passed is passed, result.reason
    assert result.score == (1.0 if passed else 0.0)
    assert result.reason


@pytest.mark.parametrize(
    ("answer", "expected", "spec", "words"),
    [
        ('{"age": "36"}', None, {"kind": "json", "schema": SCHEMA}, "schema"),
        ("oops {", None, "json", "not JSON"),
        ("```json\n{oops}\n```", None, "json", "fenced block is not JSON"),
        ("I cannot tell.", "neutral", SENTIMENT, "not a label"),
        ("Positive!", "negative", SENTIMENT, "predicted 'positive'"),
        ("no idea", 4, "numeric", "no number"),
    ],
)
def test_failing_grade_says_why(answer, expected, spec, words):
    assert words in grade(answer, expected, spec).reason


@pytest.mark.parametrize(
    ("answer", "labels", "label"),
    [
        ("negative", ["positive", "negative"], "negative"),
        ("  NEGATIVE. ", ["positive", "negative"], "negative"),
        ("mostly negative, some positive", ["positive", "negative"], "negative"),
        ("it is not positive", ["positive", "not positive"], "not positive"),
        ("very good indeed", ["good", "very good"], "very good"),
        ("positively glowing", ["positive", "negative"], None),
        ("", ["positive", "negative"], None),
    ],
)
def test_extract_label_takes_exact_then_earliest_whole_word(answer, labels, label):
    assert extract_label(answer, labels) == label


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("fuzzy", "kind"),
        ({"abs_tol": 0.1}, "no kind"),
        (
            {"kind": "exact", "abs_tol": 0.1},
            "abs_tol: not an option of the exact grader",
        ),
        ({"kind": "exact", "typo": True}, "typo"),
        ({"kind": "numeric", "abs_tol": -1}, "abs_tol"),
        ({"kind": "one-of"}, "labels"),
        ({"kind": "one-of", "labels": ["Yes", "yes!"]}, "same after normalisation"),
        (
            {"kind": "regex", "pattern": "(unclosed"},
            "pattern: not a regular expression",
        ),
        (
            {"kind": "json", "schema": {"type": "nonsense"}},
            "schema: not a valid JSON schema",
        ),
        (7, "expected a kind or a mapping"),
    ],
)
def test_bad_grader_spec_is_named_with_its_place(value, words):
    with pytest.raises(DataError) as err:
        parse_grader(value, "bench.jsonl:3")
    assert err.value.message.startswith("bench.jsonl:3: grader:")
    assert words in err.value.message


def test_grader_spec_reads_kind_names_and_mappings():
    assert parse_grader("exact", "x") == GraderSpec(kind="exact")
    spec = parse_grader({"kind": "numeric", "abs_tol": 0.01}, "x")
    assert (spec.kind, spec.abs_tol) == ("numeric", 0.01)
    assert parse_grader({"kind": "json", "schema": SCHEMA}, "x").json_schema == SCHEMA


@pytest.mark.parametrize(
    ("expected", "spec", "words"),
    [
        (None, "exact", "null"),
        ("many", "numeric", "not a number"),
        ("maybe", SENTIMENT, "not one of the labels"),
    ],
)
def test_expected_that_the_grader_cannot_use_is_refused(expected, spec, words):
    with pytest.raises(DataError, match=words):
        grade("anything", expected, spec)


def _write(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    )
    return path


def test_read_bench_reads_prompts_chats_clusters_and_graders(tmp_path):
    path = _write(
        tmp_path / "bench.jsonl",
        [
            {
                "id": "q1",
                "prompt": "2+2?",
                "expected": 4,
                "grader": "numeric",
                "cluster": "arithmetic",
            },
            "",
            {
                "id": 2,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"},
                ],
                "expected": "Paris",
                "failure": "geography",
            },
            {
                "id": "q3",
                "prompt": "JSON please",
                "expected": None,
                "grader": {"kind": "json", "schema": SCHEMA},
            },
        ],
    )
    items = read_bench(path, default_grader="contains")
    assert [i.id for i in items] == ["q1", "2", "q3"]
    assert [i.line for i in items] == [1, 3, 4]
    assert [i.cluster for i in items] == ["arithmetic", "geography", None]
    assert [i.grader.kind for i in items] == ["numeric", "contains", "json"]
    assert (
        items[1].prompt is None
        and items[1].messages[-1]["content"] == "Capital of France?"
    )
    assert isinstance(items[0], BenchItem) and items[0].expected == 4


def test_read_bench_takes_test_jsonl_from_a_folder(tmp_path):
    _write(tmp_path / "test.jsonl", [{"id": "a", "prompt": "hi", "expected": "hello"}])
    assert read_bench(tmp_path)[0].grader.kind == "exact"


def test_read_bench_reports_every_bad_line_at_once(tmp_path):
    path = _write(
        tmp_path / "bench.jsonl",
        [
            {"id": "a", "prompt": "ok", "expected": "yes"},
            "{not json",
            {"prompt": "no id", "expected": "x"},
            {"id": "b", "expected": "x"},
            {"id": "c", "prompt": "no expected"},
            {"id": "a", "prompt": "again", "expected": "x"},
            {
                "id": "d",
                "prompt": "p",
                "expected": "x",
                "grader": {"kind": "numeric", "abs_tol": "wide"},
            },
            {
                "id": "e",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "expected": "x",
            },
            {"id": "f", "prompt": "p", "expected": "lots", "grader": "numeric"},
            [1, 2],
        ],
    )
    with pytest.raises(DataError) as err:
        read_bench(path)
    message = err.value.message
    expected_lines = [
        f"{path}:2: not JSON",
        f"{path}:3: id: missing",
        f"{path}:4: prompt: missing",
        f"{path}:5: expected: missing",
        f"{path}:6: id: 'a' repeats line 1",
        f"{path}:7: grader: abs_tol",
        f"{path}:8: messages: must end with a user turn",
        f"{path}:9: expected: 'lots' is not a number",
        f"{path}:10: expected a JSON object",
    ]
    for line in expected_lines:
        assert line in message
    assert "9 problem(s)" in message
    assert f"{path}:1:" not in message


def test_read_bench_names_a_missing_file_or_folder_without_test_jsonl(tmp_path):
    with pytest.raises(DataError, match="no such benchmark file"):
        read_bench(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no test.jsonl"):
        read_bench(tmp_path)


def test_read_bench_refuses_a_bad_default_grader(tmp_path):
    path = _write(
        tmp_path / "bench.jsonl", [{"id": "a", "prompt": "p", "expected": "x"}]
    )
    with pytest.raises(DataError, match="default grader"):
        read_bench(path, default_grader="fuzzy")


def test_json_schema_without_jsonschema_asks_to_install_it(monkeypatch):
    monkeypatch.setitem(
        __import__("sys").modules, "jsonschema", None
    )  # import now fails, as when not installed
    with pytest.raises(DataError) as err:
        parse_grader({"kind": "json", "schema": SCHEMA}, "bench.jsonl:2")
    assert (
        err.value.message.startswith("bench.jsonl:2: grader:")
        and "pip install jsonschema" in err.value.hint
    )
