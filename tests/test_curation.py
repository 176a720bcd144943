"""The failure-cluster workflow: eval log -> clusters -> review file -> corrections -> SFT and preference sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxft.data.curation import (
    UNLABELLED,
    build_training_sets,
    export_review,
    failure_clusters,
    format_clusters,
    read_eval_log,
    read_review,
)
from mlxft.errors import DataError


def write_lines(path: Path, lines: list) -> Path:
    """Each entry is a dict (written as JSON) or a raw string (written as is, to make bad lines)."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def eval_rows() -> list[dict]:
    rows = []
    for i in range(6):
        rows.append({"id": f"m{i}", "prompt": f"What is {i} + {i}?", "answer": "I think 5", "expected": str(2 * i), "grade": False, "failure": "arithmetic"})
    for i in range(3):
        rows.append({"id": f"d{i}", "prompt": f"Which year did event {i} happen?", "answer": "1066", "expected": f"19{i}0", "grade": "fail", "failure_label": "dates"})
    rows.append({"id": "u0", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}], "answer": "9", "expected": "7", "grade": 0.0})
    for i in range(8):
        rows.append({"id": f"p{i}", "prompt": f"Say {i}.", "answer": str(i), "expected": str(i), "grade": 1})
    return rows


@pytest.fixture
def eval_log(tmp_path) -> Path:
    return write_lines(tmp_path / "eval.jsonl", eval_rows())


def test_a_good_eval_log_reads_every_row_with_its_grade(eval_log):
    rows = read_eval_log(eval_log)
    assert len(rows) == 18
    assert sum(not r.passed for r in rows) == 10
    prime = next(r for r in rows if r.id == "u0")
    assert prime.messages[-1] == {"role": "user", "content": "Name a prime."} and prime.question == "Name a prime."
    assert prime.failure == UNLABELLED and prime.score == 0.0
    assert (prime.source, prime.line) == (str(eval_log), 10)


def test_every_bad_line_is_reported_with_its_line_number_and_field(tmp_path):
    path = write_lines(tmp_path / "eval.jsonl", [
        {"id": 1, "prompt": "ok", "answer": "a", "grade": True},                      # 1 good
        "{not json",                                                                 # 2
        {"id": 2, "answer": "a", "grade": True},                                     # 3 no prompt
        {"id": 3, "prompt": "q", "grade": True},                                     # 4 no answer
        {"id": 4, "prompt": "q", "answer": "a", "grade": "maybe"},                   # 5 bad grade
        {"id": 1, "prompt": "q", "answer": "a", "grade": False},                     # 6 duplicate id
        {"id": 6, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a", "grade": 1},  # 7
        "",                                                                          # 8 blank: skipped
        {"id": 7, "prompt": "q", "answer": 5, "grade": True, "failure": ["x"]},      # 9 two bad fields
        "[1, 2]",                                                                    # 10
    ])
    with pytest.raises(DataError) as err:
        read_eval_log(path)
    message = str(err.value)
    for expected in [":2: not valid JSON", ":3: prompt:", ":4: answer: missing", ":5: grade: 'maybe'",
                     ":6: id: '1' is already used on line 1", ":7: messages: the last turn is the assistant's",
                     ":9: answer: must be a string", ":9: failure: must be a string", ":10: expected a JSON object"]:
        assert f"{path}{expected}" in message, expected
    assert "9 problem(s)" in message and ":1:" not in message and ":8:" not in message


@pytest.mark.parametrize("grade, threshold, passed", [
    (True, 1.0, True), ("PASS", 1.0, True), ("failed", 1.0, False), (1, 1.0, True),
    (0.99, 1.0, False), (0.7, 0.5, True), (0, 0.0, True),
])
def test_grades_follow_one_rule(tmp_path, grade, threshold, passed):
    path = write_lines(tmp_path / "eval.jsonl", [{"id": "a", "prompt": "q", "answer": "a", "grade": grade}])
    assert read_eval_log(path, pass_threshold=threshold)[0].passed is passed


def test_the_answer_falls_back_to_the_tuned_then_the_base_answer(tmp_path):
    path = write_lines(tmp_path / "eval.jsonl", [
        {"id": "a", "prompt": "q", "answer": "plain", "tuned_answer": "tuned", "grade": False},
        {"id": "b", "prompt": "q", "base_answer": "base", "tuned_answer": "tuned", "grade": False},
        {"id": "c", "prompt": "q", "base_answer": "base", "grade": False, "cluster": "geo"},
    ])
    rows = read_eval_log(path)
    assert [r.answer for r in rows] == ["plain", "tuned", "base"]
    assert rows[2].failure == "geo"  # no failure label: the benchmark cluster groups it


def test_failures_cluster_by_label_largest_first(eval_log):
    clusters = failure_clusters(read_eval_log(eval_log))
    assert [(c.label, c.count) for c in clusters] == [("arithmetic", 6), ("dates", 3), (UNLABELLED, 1)]
    assert clusters[0].share == pytest.approx(0.6)
    assert len(clusters[0].examples) == 3 and all(not r.passed for c in clusters for r in c.rows)


def test_the_cluster_view_shows_counts_shares_and_clipped_examples(tmp_path):
    long = "word " * 100
    path = write_lines(tmp_path / "eval.jsonl", [
        {"id": f"x{i}", "prompt": long + "\nsecond line", "answer": "no", "expected": "yes", "grade": False, "failure": "verbose"}
        for i in range(3)
    ])
    text = format_clusters(failure_clusters(read_eval_log(path)), examples=2, width=60)
    assert "3 failure(s) in 1 cluster(s)" in text and "verbose" in text and "100.0%" in text
    assert "[x0] prompt:" in text and "[x2]" not in text and "... and 1 more" in text
    assert all(len(line) < 100 for line in text.splitlines())
    assert format_clusters([]) == "No failures: every item passed."


def fill_corrections(path: Path, corrections: dict[str, str]) -> None:
    rows = read_jsonl(path)
    for row in rows:
        row["corrected"] = corrections.get(row["id"], row["corrected"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_export_then_fill_some_corrections_then_read_back(eval_log, tmp_path):
    cluster = failure_clusters(read_eval_log(eval_log))[0]
    review_path = export_review(cluster, tmp_path / "review.jsonl")
    exported = read_jsonl(review_path)
    assert [r["id"] for r in exported] == [f"m{i}" for i in range(6)]
    assert exported[2] == {"id": "m2", "prompt": "What is 2 + 2?", "model_answer": "I think 5", "expected": "4", "failure": "arithmetic", "corrected": ""}

    fill_corrections(review_path, {"m0": "0", "m2": "4", "m5": "10", "m3": "   "})
    review = read_review(review_path)
    assert (review.used, review.discarded) == (3, 3)
    assert [(i.id, i.corrected, i.model_answer) for i in review.items] == [("m0", "0", "I think 5"), ("m2", "4", "I think 5"), ("m5", "10", "I think 5")]
    assert set(review.discarded_ids) == {"m1", "m3", "m4"}
    assert "3 correction(s) used, 3 left empty" in review.summary()


def test_bad_review_lines_are_all_reported(tmp_path):
    path = write_lines(tmp_path / "review.jsonl", [
        {"id": "a", "prompt": "q", "model_answer": "x", "corrected": "y"},
        {"id": "b", "prompt": "q", "model_answer": "x", "corrected": 3},
        {"id": "c", "model_answer": "x", "corrected": "y"},
        "oops",
    ])
    with pytest.raises(DataError) as err:
        read_review(path)
    assert all(f"{path}:{n}:" in str(err.value) for n in (2, 3, 4)) and f"{path}:1:" not in str(err.value)


def test_a_review_with_corrections_is_never_replaced(eval_log, tmp_path):
    rows = read_eval_log(eval_log)
    path = export_review(failure_clusters(rows)[1], tmp_path / "review.jsonl")
    export_review(failure_clusters(rows)[1], path)  # still blank: replacing it loses nothing
    fill_corrections(path, {"d1": "1910"})
    before = path.read_text()
    for overwrite in (False, True):
        with pytest.raises(DataError, match="already holds 1 correction") as err:
            export_review(failure_clusters(rows)[1], path, overwrite=overwrite)
        assert "another file" in err.value.hint
    assert path.read_text() == before


def test_another_existing_file_is_replaced_only_when_asked(eval_log, tmp_path):
    other = tmp_path / "notes.jsonl"
    other.write_text('{"mine": true}\n')
    cluster = failure_clusters(read_eval_log(eval_log))[0]
    with pytest.raises(DataError, match="not an empty review file"):
        export_review(cluster, other)
    assert other.read_text() == '{"mine": true}\n'
    export_review(cluster, other, overwrite=True)
    assert len(read_jsonl(other)) == 6


@pytest.fixture
def filled_review(eval_log, tmp_path):
    rows = read_eval_log(eval_log)
    failures = [r for c in failure_clusters(rows) for r in c.rows]
    path = export_review(failures, tmp_path / "review.jsonl")
    fill_corrections(path, {"m0": "0", "m1": "2", "m2": "4", "m3": "6", "d0": "1900", "d1": "1910", "u0": "7", "m4": "I think 5"})
    return rows, path


def test_build_writes_sft_rows_with_the_corrections_and_preference_pairs(filled_review, tmp_path):
    result = build_training_sets(read_review(filled_review[1]), out_dir=tmp_path / "sets", valid_fraction=0.25)
    assert result.corrections == 8 and result.passing_kept == 0 and result.pairs_skipped == 1
    sft = read_jsonl(result.paths["sft/train"]) + read_jsonl(result.paths["sft/valid"])
    assert (result.sft_train, result.sft_valid) == (6, 2)
    targets = {r["messages"][-2]["content"]: r["messages"][-1] for r in sft}
    assert targets["What is 3 + 3?"] == {"role": "assistant", "content": "6"}
    assert targets["Name a prime."] == {"role": "assistant", "content": "7"}
    prime = next(r for r in sft if r["messages"][-2]["content"] == "Name a prime.")
    assert prime["messages"][0] == {"role": "system", "content": "Be brief."}

    pairs = read_jsonl(result.paths["preference/train"]) + read_jsonl(result.paths["preference/valid"])
    assert len(pairs) == 7 == result.preference_train + result.preference_valid  # m4's correction equals its answer
    dates = next(p for p in pairs if p["prompt"][-1]["content"] == "Which year did event 1 happen?")
    assert dates["chosen"] == [{"role": "assistant", "content": "1910"}]
    assert dates["rejected"] == [{"role": "assistant", "content": "1066"}]


def test_build_in_completion_format_gives_prompt_completion_and_string_pairs(tmp_path):
    path = write_lines(tmp_path / "review.jsonl", [
        {"id": f"q{i}", "prompt": f"q{i}?", "model_answer": "wrong", "expected": None, "failure": "f", "corrected": f"right {i}"} for i in range(10)
    ])
    result = build_training_sets(path, out_dir=tmp_path / "sets", sft_format="completion")
    sft = read_jsonl(result.paths["sft/train"]) + read_jsonl(result.paths["sft/valid"])
    assert min(sft, key=lambda r: r["prompt"]) == {"prompt": "q0?", "completion": "right 0"}
    assert (result.sft_train, result.sft_valid) == (9, 1)
    pair = read_jsonl(result.paths["preference/valid"])[0]
    assert set(pair) == {"prompt", "chosen", "rejected"} and pair["rejected"] == "wrong" and pair["chosen"].startswith("right")


def test_conversations_cannot_go_into_the_completion_format(filled_review, tmp_path):
    with pytest.raises(DataError, match="conversations") as err:
        build_training_sets(filled_review[1], out_dir=tmp_path / "sets", sft_format="completion")
    assert "chat" in err.value.hint and not (tmp_path / "sets").exists()


def test_passing_examples_are_mixed_in_with_their_own_answers(filled_review, tmp_path):
    rows, review_path = filled_review
    result = build_training_sets(review_path, out_dir=tmp_path / "sets", keep_passing=rows, keep_ratio=0.5, seed=1)
    assert result.passing_kept == 4  # half a passing example per correction, only from the passing rows
    sft = read_jsonl(result.paths["sft/train"]) + read_jsonl(result.paths["sft/valid"])
    assert len(sft) == result.sft_train + result.sft_valid == 12
    kept = [r for r in sft if r["messages"][-2]["content"].startswith("Say ")]
    assert len(kept) == 4
    assert all(r["messages"][-1]["content"] == r["messages"][-2]["content"][4:-1] for r in kept)
    assert result.preference_train + result.preference_valid == 7  # kept examples have no rejected answer


def test_build_refuses_a_folder_that_already_holds_files(filled_review, tmp_path):
    out = tmp_path / "sets"
    build_training_sets(filled_review[1], out_dir=out)
    with pytest.raises(DataError, match="not empty") as err:
        build_training_sets(filled_review[1], out_dir=out)
    assert "overwrite=True" in err.value.hint
    again = build_training_sets(filled_review[1], out_dir=out, overwrite=True)
    assert again.sft_train + again.sft_valid == 8


def test_build_needs_at_least_one_correction(eval_log, tmp_path):
    path = export_review(failure_clusters(read_eval_log(eval_log))[0], tmp_path / "review.jsonl")
    with pytest.raises(DataError, match="no corrections filled in"):
        build_training_sets(path, out_dir=tmp_path / "sets")


def test_a_hostile_eval_log_line_is_a_problem_naming_its_line_not_a_crash(tmp_path):
    path = write_lines(tmp_path / "eval.jsonl", [
        {"id": 1, "prompt": "ok", "answer": "a", "grade": True},
        '{"id": 2, "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ])
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not text\n")  # line 3 is not UTF-8
    with pytest.raises(DataError) as err:
        read_eval_log(path)
    assert f"{path}:2: nested more than" in err.value.message and f"{path}:3: not valid UTF-8" in err.value.message


def test_a_pass_threshold_that_is_not_a_number_is_refused_rather_than_failing_every_item(tmp_path):
    path = write_lines(tmp_path / "eval.jsonl", [{"id": 1, "prompt": "q", "answer": "a", "grade": 0.9}])
    with pytest.raises(DataError, match="--pass-threshold"):
        read_eval_log(path, pass_threshold=float("nan"))
