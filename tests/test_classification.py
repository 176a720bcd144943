"""Tests for classification scores: metrics match scikit-learn, unparsed answers are counted, the PNG draws."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from mlxft.errors import MlxftError
from mlxft.eval.classification import (
    OTHER,
    classification_report,
    draw_confusion_matrix,
    errors_for_class,
    format_report,
)

TRUE = ["cat", "cat", "cat", "dog", "dog", "dog", "dog", "bird", "bird", "bird"]
PRED = ["cat", "cat", "dog", "dog", "dog", "dog", "cat", "bird", "cat", "bird"]


def test_metrics_equal_scikit_learn_for_a_hand_made_case():
    report = classification_report(TRUE, PRED)
    labels = ["bird", "cat", "dog"]
    p, r, f, s = precision_recall_fscore_support(
        TRUE, PRED, labels=labels, zero_division=0
    )

    assert report.labels == tuple(labels)
    for i, name in enumerate(labels):
        scores = report.per_class[name]
        assert scores.precision == pytest.approx(p[i])
        assert scores.recall == pytest.approx(r[i])
        assert scores.f1 == pytest.approx(f[i])
        assert scores.support == s[i]
    for kind, averages in (("macro", report.macro), ("weighted", report.weighted)):
        ep, er, ef, _ = precision_recall_fscore_support(
            TRUE, PRED, labels=labels, average=kind, zero_division=0
        )
        assert (averages.precision, averages.recall, averages.f1) == pytest.approx(
            (ep, er, ef)
        )
    assert report.accuracy == pytest.approx(accuracy_score(TRUE, PRED))
    expected = confusion_matrix(TRUE, PRED, labels=labels).tolist()
    assert [row[:3] for row in report.confusion] == expected
    assert [row[3] for row in report.confusion] == [0, 0, 0]
    assert report.other == 0 and report.total == 10


def test_predictions_outside_the_labels_are_counted_in_the_other_column():
    true = ["yes", "yes", "no", "no", "no"]
    pred = ["yes", "I am not sure", "no", "", "yes"]
    report = classification_report(true, pred, labels=["yes", "no"])

    assert report.columns == ("yes", "no", OTHER)
    assert report.confusion == [[1, 0, 1], [1, 1, 1]]
    assert report.other == 2
    assert sum(map(sum, report.confusion)) == report.total == 5
    assert report.accuracy == pytest.approx(2 / 5)
    # An unparsed answer is a miss for its true class, not an item left out.
    assert report.per_class["yes"].recall == pytest.approx(1 / 2)
    assert report.per_class["no"].recall == pytest.approx(1 / 3)
    assert report.per_class["no"].support == 3


def test_labels_are_compared_as_strings():
    report = classification_report([0, 1, 1], ["0", "1", 0], labels=[0, 1])
    assert report.labels == ("0", "1")
    assert report.confusion == [[1, 0, 0], [1, 1, 0]]


def test_bad_inputs_are_reported_together():
    with pytest.raises(MlxftError) as caught:
        classification_report(["a", "b", "c"], ["a"], labels=["a", "a"])
    message = str(caught.value)
    assert "3 true labels but 1 predictions" in message
    assert "repeated labels" in message
    assert "not in the label list" in message


def test_errors_for_class_lists_false_positives_and_false_negatives():
    items = [{"id": i} for i in range(len(TRUE))]
    false_positives, false_negatives = errors_for_class(items, TRUE, PRED, "cat")
    # Predicted cat but was dog (6) or bird (8); was cat but predicted dog (2).
    assert [item["id"] for item in false_positives] == [6, 8]
    assert [item["id"] for item in false_negatives] == [2]


def test_errors_for_class_counts_an_unparsed_answer_as_a_false_negative():
    false_positives, false_negatives = errors_for_class(
        ["a", "b"], ["yes", "no"], ["???", "no"], "yes"
    )
    assert false_positives == [] and false_negatives == ["a"]


def test_format_report_shows_the_numbers_and_the_grid():
    report = classification_report(TRUE, PRED)
    text = format_report(report)
    assert f"{report.per_class['dog'].precision:.3f}" in text
    assert f"{report.macro.f1:.3f}" in text
    assert f"{report.weighted.recall:.3f}" in text
    assert f"{report.accuracy:.3f}" in text
    assert "true \\ predicted" in text and OTHER in text
    grid_row = next(
        line
        for line in text.splitlines()
        if line.startswith("dog ") and line.split()[1:] == ["0", "1", "3", "0"]
    )
    assert grid_row


def test_format_report_fits_eighty_columns_with_eight_long_labels():
    labels = [f"a_rather_long_category_name_{i}" for i in range(8)]
    true = labels * 30
    pred = labels[1:] + ["unparsable"] + labels * 29
    text = format_report(classification_report(true, pred, labels=labels))
    assert max(len(line) for line in text.splitlines()) <= 80
    # The cut keeps each name's distinguishing end.
    assert all(
        any(
            line.rstrip().endswith(f"_{i}") or f"_{i} " in line
            for line in text.splitlines()
        )
        for i in range(8)
    )


def test_confusion_matrix_png_shades_a_full_cell_dark_and_an_empty_cell_white(tmp_path):
    true = ["a"] * 10 + ["b"] * 10
    pred = ["a"] * 10 + ["b"] * 5 + ["zzz"] * 5
    report = classification_report(true, pred)
    path = draw_confusion_matrix(report, tmp_path / "cm.png", title="two classes")

    assert path == tmp_path / "cm.png" and path.exists()
    assert not list(tmp_path.glob(".*tmp*"))
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    assert 300 <= width <= 1200 and 250 <= height <= 1200
    # Only the cell of 10 out of 10 (true a, predicted a) is deep blue: find it, then step one cell right.
    red, blue = pixels[..., 0], pixels[..., 2]
    ys, xs = np.nonzero((blue - red > 60) & (pixels.sum(axis=2) < 250))
    left, top, right = xs.min(), ys.min(), xs.max()
    cell = right - left
    y, x = top + cell // 5, left + cell // 5  # a corner of the cell, away from its text
    full, empty = pixels[y, x], pixels[y, x + cell]
    assert sum(full) < 300
    assert tuple(empty) == (255, 255, 255)


def test_png_size_grows_with_the_number_of_labels(tmp_path):
    small = classification_report(["a", "b"], ["a", "b"])
    large = classification_report(
        [str(i) for i in range(8)], [str(i) for i in range(8)]
    )
    with (
        Image.open(draw_confusion_matrix(small, tmp_path / "small.png")) as a,
        Image.open(draw_confusion_matrix(large, tmp_path / "large.png")) as b,
    ):
        assert b.width > a.width and b.height > a.height
