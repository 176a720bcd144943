"""The eval verdict over every branch, from graded items alone (no model): key and wording match the numbers."""

import json

import pytest

from conftest import write_jsonl
from mlxft.errors import MlxftError
from mlxft.eval.compare import (Comparison, ItemResult, choose_targets, compare, decide_verdict, format_markdown,
                                format_terminal, score_items, write_reports)

RR, RW, WR, WW = (True, True), (True, False), (False, True), (False, False)  # (base right, tuned right)


def graded(*groups) -> list[ItemResult]:
    """Items from (count, (base, tuned), cluster) groups."""
    items = []
    for count, (base, tuned), cluster in groups:
        for _ in range(count):
            i = len(items)
            items.append(ItemResult(f"q{i}", f"question {i}", None, "yes", cluster, "yes" if base else "no", "yes" if tuned else "no",
                                    base, tuned, "", ""))
    return items


# The case: a plain benchmark (no cluster column), 40.3% -> 88.4%, 450 fixes, 30 regressions.
SST2_LIKE = graded((322, RR, None), (30, RW, None), (450, WR, None), (71, WW, None))

VERDICTS = [
    # (case, items, --target, verdict key, phrases the verdict text must hold)
    ("no clusters: a big gain with some regressions is judged on the whole benchmark", SST2_LIKE, None, "investigate",
     ["+48.1 pts on the whole benchmark (40.3% -> 88.4%, 450 fixes, 30 regressions)", "read the 30 regressions before shipping"]),
    ("no clusters: a gain that breaks nothing ships", graded((5, RR, None), (3, WR, None), (2, WW, None)), None, "ship",
     ["+30.0 pts on the whole benchmark (50.0% -> 80.0%, 3 fixes, 0 regressions)", "ship it"]),
    ("one cluster: a gain on it, the rest untouched", graded((2, WR, "refunds"), (1, RR, "refunds"), (3, RR, None)), None, "ship",
     ["+66.7 pts on the target refunds (33.3% -> 100.0%, 2 fixes, 0 regressions)", "no net change on the rest (100.0% -> 100.0%, 0 fixes, 0 regressions)"]),
    ("several clusters: every labelled one is the target, unlabelled items are the rest",
     graded((2, WR, "a"), (2, RR, "b"), (1, RW, None), (3, RR, None)), None, "investigate",
     ["+50.0 pts on the targets a, b (50.0% -> 100.0%, 2 fixes, 0 regressions)", "-25.0 pts on the rest (100.0% -> 75.0%, 0 fixes, 1 regression)",
      "read the regression before shipping"]),
    ("several clusters, one asked for: the others are the rest", graded((2, WR, "a"), (2, WR, "b"), (2, RR, None)), ["a"], "ship",
     ["+100.0 pts on the target a (0.0% -> 100.0%, 2 fixes, 0 regressions)", "+50.0 pts on the rest (50.0% -> 100.0%, 2 fixes, 0 regressions)"]),
    ("no change at all: look at the training data", graded((2, RR, None), (2, WW, None)), None, "look at the training data",
     ["no net change on the whole benchmark (50.0% -> 50.0%, 0 fixes, 0 regressions)", "nothing broke; look at the training data"]),
    ("a tie made of fixes and regressions is no gain", graded((2, WR, None), (2, RW, None)), None, "stop",
     ["no net change on the whole benchmark (50.0% -> 50.0%, 2 fixes, 2 regressions)", "no gain on the whole benchmark, and 2 items broke"]),
    ("all regress", graded((4, RW, None)), None, "stop",
     ["-100.0 pts on the whole benchmark (100.0% -> 0.0%, 0 fixes, 4 regressions)", "makes the model worse on the whole benchmark"]),
    ("improvement with regressions, the rest holding up overall", graded((3, WR, "t"), (1, RW, None), (1, WR, None), (2, RR, None)), None, "investigate",
     ["+100.0 pts on the target t", "no net change on the rest (75.0% -> 75.0%, 1 fix, 1 regression)"]),
    ("a gain on the target, but the rest regresses heavily", graded((2, WR, "t"), (8, RW, None), (2, RR, None)), None, "stop",
     ["+100.0 pts on the target t", "-80.0 pts on the rest (100.0% -> 20.0%, 0 fixes, 8 regressions)", "breaks more than it fixes (-6 items"]),
    ("the target unchanged while the rest improves: the target was not learned", graded((2, WW, "t"), (2, WR, None)), None,
     "look at the training data", ["no net change on the target t", "+100.0 pts on the rest"]),
]


@pytest.mark.parametrize("case, items, requested, key, phrases", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_every_verdict_branch_says_what_the_numbers_say(case, items, requested, key, phrases):
    targets = choose_targets([r.cluster for r in items], requested, "bench.jsonl")
    verdict = decide_verdict(*score_items(items, targets), targets)
    assert verdict.key == key, verdict.text
    for phrase in phrases:
        assert phrase in verdict.text


def test_without_clusters_the_whole_benchmark_is_the_target_and_there_is_no_rest():
    target, rest = score_items(SST2_LIKE, choose_targets([None] * len(SST2_LIKE), None, "bench.jsonl"))
    assert (target.size, target.base_correct, target.tuned_correct, target.fixes, target.regressions) == (873, 352, 772, 450, 30)
    assert rest.size == 0


def test_a_target_absent_from_the_benchmark_is_an_error_naming_what_is_there():
    with pytest.raises(MlxftError) as err:
        choose_targets(["a", None, "b"], ["c", "a"], "bench.jsonl")
    assert "bench.jsonl: no items in cluster(s) ['c']" in err.value.message
    assert "clusters in this benchmark: a, b" in err.value.hint
    with pytest.raises(MlxftError) as err:
        choose_targets([None, None], ["refunds"], "bench.jsonl")
    assert "no `cluster` column" in err.value.hint and "leave out --target" in err.value.hint


def test_a_missing_target_is_refused_before_any_model_is_loaded(tmp_path):
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": 1, "prompt": "2+2?", "expected": "4"}])
    with pytest.raises(MlxftError) as err:
        compare(str(tmp_path / "no-such-model"), tmp_path / "no-such-adapter", bench, targets=["arithmetic"])
    assert "no items in cluster(s) ['arithmetic']" in err.value.message


def comparison(items, targets) -> Comparison:
    target, rest = score_items(items, targets)
    verdict = decide_verdict(target, rest, targets)
    return Comparison(model="m", adapter="runs/x/adapter", bench="bench.jsonl", targets=targets, target=target, rest=rest, items=items,
                      verdict=verdict.key, verdict_text=verdict.text, seed=0, settings={"max_tokens": 8})


def test_terminal_summary_and_report_carry_the_same_verdict(tmp_path):
    c = comparison(SST2_LIKE, [])
    paths = write_reports(c, tmp_path)
    summary = json.loads(paths["summary"].read_text(), parse_constant=lambda name: pytest.fail(f"{name} in summary.json is not JSON"))
    assert summary["verdict"] == "investigate" and summary["verdict_text"] == c.verdict_text
    assert summary["target_name"] == "whole benchmark" and summary["target"]["fixes"] == 450 and summary["rest"]["size"] == 0
    terminal = format_terminal(c)
    assert terminal.splitlines()[0] == "whole benchmark (873 items): 40.3% -> 88.4% (+48.1 pts)"
    assert "rest" not in terminal.splitlines()[1] and f"verdict: investigate - {c.verdict_text}" in terminal
    report = paths["report"].read_text()
    assert c.verdict_text in report and "| whole benchmark | 873 | 40.3% | 88.4% | +48.1 pts | 450 | 30 |" in report
    assert "| rest |" not in report and "cluster targeted: none: the whole benchmark is the target" in report
    assert "| target (none)" not in format_markdown(c)
