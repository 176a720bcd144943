"""Two image classifiers compared on one split, from constructed predictions (no model): regressions, fixes, scores,
the verdict's key and wording, the McNemar note, the reports written, and the errors for splits and labels that differ."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlxft.errors import MlxftError
from mlxft.eval.classification import classification_report
from mlxft.eval.compare import discordant_p_value
from mlxft.vision.compare import KIND, compare_evaluations, format_comparison, format_comparison_markdown, write_comparison
from mlxft.vision.evaluate import ImageEvaluation, roc_auc

LABELS = ["cat", "dog"]


def evaluation(rows: list[tuple[str, str, str, float]], labels=LABELS, split="test") -> ImageEvaluation:
    """An evaluation from (image, true label, predicted label, probability of the prediction) rows."""
    probs = np.zeros((len(rows), len(labels)), np.float32)
    for i, (_, _, pred, p) in enumerate(rows):
        probs[i] = (1 - p) / (len(labels) - 1)
        probs[i, labels.index(pred)] = p
    truth = np.array([labels.index(t) for _, t, _, _ in rows])
    report = classification_report([t for _, t, _, _ in rows], [labels[i] for i in probs.argmax(1)], labels=labels, closed=True)
    return ImageEvaluation(split, list(labels), [r[0] for r in rows], truth, probs, report, roc_auc(truth, probs, labels))


# Ten images. A gets 6 right; B gets 8 right: it fixes c2, c3, d4 and breaks d1 (right under A, wrong under B).
A_ROWS = [("c0", "cat", "cat", .9), ("c1", "cat", "cat", .8), ("c2", "cat", "dog", .7), ("c3", "cat", "dog", .6), ("c4", "cat", "cat", .9),
          ("d0", "dog", "dog", .9), ("d1", "dog", "dog", .8), ("d2", "dog", "cat", .6), ("d3", "dog", "dog", .7), ("d4", "dog", "cat", .55)]
B_PRED = {"c0": ("cat", .95), "c1": ("cat", .9), "c2": ("cat", .8), "c3": ("cat", .7), "c4": ("cat", .9),
          "d0": ("dog", .9), "d1": ("cat", .65), "d2": ("cat", .7), "d3": ("dog", .8), "d4": ("dog", .6)}


def b_rows(order=None):
    rows = [(img, true, *B_PRED[img]) for img, true, _, _ in A_ROWS]
    return [rows[i] for i in order] if order else rows


def test_regressions_fixes_scores_and_verdict_of_a_constructed_pair():
    c = compare_evaluations(evaluation(A_ROWS), evaluation(b_rows()), ("cnn-v1", "cnn-v2"))
    assert [p.image for p in c.regressions] == ["d1"]
    assert [p.image for p in c.fixes] == ["c2", "c3", "d4"]
    r = c.regressions[0]
    assert (r.label, r.before, r.after) == ("dog", "dog", "cat") and r.before_p == pytest.approx(.8) and r.after_p == pytest.approx(.65)
    assert (c.score.size, c.score.base_correct, c.score.tuned_correct) == (10, 6, 8)
    # The LM comparison's verdict, in the words of two image runs: a gain that breaks one image is "investigate".
    assert c.verdict.key == "investigate"
    assert c.verdict.text == "+20.0 pts on the test split (60.0% -> 80.0%, 3 fixes, 1 regression): read the regression before shipping"
    s = c.summary()
    assert s["kind"] == KIND and s["images"] == 10 and s["before"]["accuracy"] == pytest.approx(.6) and s["after"]["accuracy"] == pytest.approx(.8)
    assert s["change"]["accuracy"] == pytest.approx(.2)
    assert s["change"]["macro_f1"] == pytest.approx(s["after"]["macro_f1"] - s["before"]["macro_f1"])
    assert s["mcnemar"]["discordant"] == 4 and s["mcnemar"]["p_value"] == pytest.approx(0.625)  # 3 vs 1 of 4: 2 * (1 + 4) / 16
    assert s["mcnemar"]["note"].startswith("McNemar exact test on the 4 image(s)")
    assert [p["image"] for p in s["predictions"]] == [row[0] for row in A_ROWS]


def test_the_verdict_branches_follow_the_numbers():
    only_fixes = {**B_PRED, "d1": ("dog", .8)}
    c = compare_evaluations(evaluation(A_ROWS), evaluation([(img, t, *only_fixes[img]) for img, t, _, _ in A_ROWS]), ("a", "b"))
    assert c.verdict.key == "ship" and c.verdict.text.endswith("(60.0% -> 90.0%, 3 fixes, 0 regressions): ship it")
    worse = compare_evaluations(evaluation(b_rows()), evaluation(A_ROWS), ("a", "b"))  # the same pair the other way round
    assert worse.verdict.key == "stop" and worse.verdict.text.endswith("1 fix, 3 regressions): b is worse than a on the test split; do not ship it")
    same = compare_evaluations(evaluation(A_ROWS), evaluation(A_ROWS), ("a", "b"))
    assert same.verdict.key == "look at the training data" and not same.regressions and not same.fixes and same.p_value == 1.0
    swap = [("c2", "cat", "dog", .7), ("c3", "cat", "cat", .6)]
    tie = compare_evaluations(evaluation([("c2", "cat", "cat", .7), ("c3", "cat", "dog", .6)]), evaluation(swap), ("a", "b"))
    assert tie.verdict.key == "stop" and "no gain on the test split, and 1 image broke; do not ship b" in tie.verdict.text


def test_images_are_matched_by_path_and_labels_by_name_whatever_their_order():
    order = [9, 3, 0, 5, 1, 8, 2, 7, 4, 6]
    flipped = ["dog", "cat"]  # B's classifier numbers its labels the other way round
    c = compare_evaluations(evaluation(A_ROWS), evaluation(b_rows(order), labels=flipped), ("a", "b"))
    assert sorted(p.image for p in c.regressions) == ["d1"] and sorted(p.image for p in c.fixes) == ["c2", "c3", "d4"]
    assert [p.image for p in c.pairs] == [A_ROWS[i][0] for i in order]  # B's order
    assert c.verdict.key == "investigate"


def test_mcnemar_exact_p_values():
    assert discordant_p_value(0, 0) == 1.0
    assert discordant_p_value(5, 0) == pytest.approx(2 / 32)
    assert discordant_p_value(1, 3) == discordant_p_value(3, 1) == pytest.approx(0.625)
    assert discordant_p_value(10, 0) < 0.01 and discordant_p_value(2, 2) == 1.0


def test_different_splits_are_refused_by_name():
    with pytest.raises(MlxftError) as err:
        compare_evaluations(evaluation(A_ROWS, split="valid"), evaluation(b_rows()), ("cnn-v1", "cnn-v2"))
    assert "cnn-v1 was evaluated on the 'valid' split and cnn-v2 on 'test'" in err.value.message
    assert "--split" in err.value.hint


def test_different_images_are_refused_with_counts_and_an_example():
    other = b_rows()[:8] + [("x0", "cat", "cat", .9), ("x1", "dog", "dog", .9)]
    with pytest.raises(MlxftError) as err:
        compare_evaluations(evaluation(A_ROWS), evaluation(other), ("a", "b"))
    assert "the two 'test' splits are not the same images: 2 only in a's, 2 only in b's (e.g. d3, d4" in err.value.message
    assert "--data IMAGE_FOLDER" in err.value.hint


def test_different_label_sets_are_refused_naming_what_each_lacks():
    three = [(img, t, p, q) for img, t, p, q in b_rows()]
    with pytest.raises(MlxftError) as err:
        compare_evaluations(evaluation(A_ROWS), evaluation(three, labels=["cat", "dog", "fox"]), ("a", "b"))
    assert "a and b classify into different labels (only b has 'fox')" in err.value.message
    assert "same classes" in err.value.hint


def test_a_true_label_that_differs_between_the_evaluations_is_refused():
    relabelled = [("c0", "dog", "cat", .95)] + b_rows()[1:]
    with pytest.raises(MlxftError, match=r"1 image\(s\) have a different true label in the two evaluations \(e.g. c0\)"):
        compare_evaluations(evaluation(A_ROWS), evaluation(relabelled), ("a", "b"))


def test_reports_are_written_atomically_and_list_every_change(tmp_path):
    c = compare_evaluations(evaluation(A_ROWS), evaluation(b_rows()), ("cnn-v1", "cnn-v2"), data="images")
    paths = write_comparison(c, tmp_path / "eval" / "test")
    assert paths["comparison"].name == "compare-cnn-v1.json" and paths["comparison_report"].name == "compare-cnn-v1.md"
    summary = json.loads(paths["comparison"].read_text())
    assert summary["verdict"] == "investigate" and [r["image"] for r in summary["regressions"]] == ["d1"]
    assert summary["before"]["classification"]["confusion"] == [[3, 2], [2, 3]]
    assert summary["after"]["classification"]["confusion"] == [[5, 0], [2, 3]]
    md = paths["comparison_report"].read_text()
    assert "| accuracy | 60.0% | 80.0% | +20.0 pts |" in md and "## Verdict: investigate" in md
    assert "## Regressions (1): right under A, wrong under B" in md and "- `d1` true **dog**: A dog (0.80), B cat (0.65)" in md
    assert "## Fixes (3): wrong under A, right under B" in md and "`d4`" in md
    assert "| cat | 5 | 0.600 | 0.600 | 0.600 | 0.714 | 1.000 | 0.833 |" in md
    assert not [p for p in paths["comparison"].parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_terminal_text_shows_scores_classes_changes_and_verdict():
    c = compare_evaluations(evaluation(A_ROWS), evaluation(b_rows()), ("cnn-v1", "cnn-v2"))
    text = format_comparison(c, shown=2)
    assert "A = cnn-v1, B = cnn-v2: the same 10 images of the 'test' split" in text
    assert "accuracy: 60.0% -> 80.0% (+20.0 pts); macro F1: 0.600 -> 0.792 (+0.192)" in text
    assert "d1  true dog: A dog 0.80, B cat 0.65" in text and "... and 1 more in the report" in text
    assert "McNemar exact test on the 4 image(s) where A and B differ (3 fixed, 1 broken): p = 0.625; chance alone" in text
    assert text.splitlines()[-1].startswith("verdict: investigate - +20.0 pts on the test split")


def test_paths_with_terminal_escapes_are_shown_escaped():
    pwn = "\x1b]0;pwned\x07"
    rows = [(f"{img}{pwn}", t, p, q) for img, t, p, q in A_ROWS]
    brow = [(f"{img}{pwn}", t, p, q) for img, t, p, q in b_rows()]
    c = compare_evaluations(evaluation(rows), evaluation(brow), (f"a{pwn}", "b"))
    for text in (format_comparison(c), format_comparison_markdown(c)):
        assert "\x1b" not in text and "\x07" not in text and "d1\\x1b]0;pwned\\x07" in text
