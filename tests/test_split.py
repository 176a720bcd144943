"""Seeded, stratified splits: deterministic, a partition of the rows, label proportions kept, inputs never overwritten."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxft.data.split import parse_fractions, split_rows, write_splits
from mlxft.errors import DataError


def labelled_rows(sizes: dict[str, int]) -> list[dict]:
    return [{"id": f"{label}-{i}", "label": label} for label, n in sizes.items() for i in range(n)]


def test_same_seed_gives_the_same_split_and_another_seed_a_different_one():
    rows = labelled_rows({"a": 30, "b": 20})
    first = split_rows(rows, seed=3, label_key="label")
    assert first == split_rows(rows, seed=3, label_key="label")
    assert first != split_rows(rows, seed=4, label_key="label")


def test_overall_split_sizes_follow_the_fractions():
    splits = split_rows(list(range(100)), fractions=(0.7, 0.2, 0.1))
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [70, 20, 10]


def test_each_label_is_split_in_proportion_within_one_row():
    sizes = {"math": 37, "dates": 11, "names": 5, "rare": 1, "pair": 2}
    fractions = (0.8, 0.1, 0.1)
    splits = split_rows(labelled_rows(sizes), fractions=fractions, seed=0, label_key="label")
    for name, fraction in zip(("train", "valid", "test"), fractions):
        counts = Counter(r["label"] for r in splits[name])
        for label, n in sizes.items():
            assert abs(counts[label] - n * fraction) <= 1, (name, label, counts[label])


def test_many_small_labels_still_fill_the_valid_and_test_splits():
    # Ten labels of three rows: rounding each label alone would put all 30 rows in train.
    splits = split_rows(labelled_rows({f"l{i}": 3 for i in range(10)}), label_key="label")
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [24, 3, 3]


def test_a_zero_fraction_split_is_empty_and_two_fractions_give_two_splits():
    splits = split_rows(labelled_rows({"a": 7, "b": 3}), fractions=(0.9, 0.1), label_key="label")
    assert set(splits) == {"train", "valid"}
    assert split_rows(list(range(9)), fractions=(0.5, 0.5, 0.0))["test"] == []


def test_label_key_may_be_an_attribute_or_a_function():
    class Row:
        def __init__(self, i):
            self.i, self.kind = i, "even" if i % 2 == 0 else "odd"

    rows = [Row(i) for i in range(20)]
    by_attr = split_rows(rows, fractions=(0.5, 0.5), label_key="kind")
    by_func = split_rows(rows, fractions=(0.5, 0.5), label_key=lambda r: r.kind)
    assert [r.i for r in by_attr["train"]] == [r.i for r in by_func["train"]]
    assert Counter(r.kind for r in by_attr["train"]) == {"even": 5, "odd": 5}


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (1.0,), (0.8, -0.1, 0.3), (0.5, float("nan"), 0.5)])
def test_bad_fractions_are_a_clear_error(fractions):
    with pytest.raises(DataError, match="fractions"):
        split_rows([1, 2, 3], fractions=fractions)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 25), min_size=1, max_size=6),
    weights=st.lists(st.integers(0, 10), min_size=2, max_size=3).filter(lambda w: sum(w) > 0),
    seed=st.integers(0, 2**16),
    stratify=st.booleans(),
)
def test_a_split_is_a_partition_of_the_rows(sizes, weights, seed, stratify):
    rows = [{"n": n, "label": f"l{g}"} for g, size in enumerate(sizes) for n in range(sum(sizes[:g]), sum(sizes[: g + 1]))]
    fractions = tuple(w / sum(weights) for w in weights)
    splits = split_rows(rows, fractions=fractions, seed=seed, label_key="label" if stratify else None)
    seen = sorted(r["n"] for part in splits.values() for r in part)
    assert seen == list(range(len(rows)))  # every row exactly once: none lost, none repeated
    for name, fraction in zip(splits, fractions):
        assert abs(len(splits[name]) - len(rows) * fraction) < 1
        if stratify:
            counts = Counter(r["label"] for r in splits[name])
            for g, size in enumerate(sizes):
                assert abs(counts[f"l{g}"] - size * fraction) <= 1


def test_splits_are_written_as_jsonl_files(tmp_path):
    splits = split_rows(labelled_rows({"a": 8, "b": 2}), label_key="label")
    paths = write_splits(splits, tmp_path / "out")
    assert set(paths) == {"train", "valid", "test"}
    for name, path in paths.items():
        assert [json.loads(line) for line in path.read_text().splitlines()] == splits[name]


def test_writing_over_an_input_file_is_refused_even_when_forced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "the user\'s own data"}\n')
    splits = split_rows(labelled_rows({"a": 10}))
    with pytest.raises(DataError, match="input file") as err:
        write_splits(splits, data, input_paths=[data / "train.jsonl"], overwrite=True)
    assert "different folder" in err.value.hint
    assert (data / "train.jsonl").read_text() == '{"text": "the user\'s own data"}\n'
    assert not (data / "valid.jsonl").exists()  # nothing is written when any target is refused


def test_existing_split_files_are_kept_unless_overwrite_is_asked(tmp_path):
    splits = split_rows(labelled_rows({"a": 10}))
    write_splits(splits, tmp_path)
    (tmp_path / "valid.jsonl").write_text("hand edited\n")
    with pytest.raises(DataError, match="already exists") as err:
        write_splits(splits, tmp_path)
    assert "overwrite=True" in err.value.hint
    assert (tmp_path / "valid.jsonl").read_text() == "hand edited\n"
    write_splits(splits, tmp_path, overwrite=True)
    assert (tmp_path / "valid.jsonl").read_text() != "hand edited\n"


@pytest.mark.parametrize(
    "text, says",
    [
        ("0.8,x", "'x' is not a number"),
        ("", "an entry is empty"),
        (",,", "an entry is empty"),
        ("0.8", "give 2 (train, valid) or 3"),
        ("0.7,0.1,0.1,0.1", "got 4"),
        ("0.5,0.6", "add up to 1.1"),
        ("1,0", "1 is not between 0 and 1"),
        ("0.9,0.1,0", "0 is not between 0 and 1"),
        ("-0.2,1.2", "-0.2 is not between 0 and 1"),
        ("nan,0.5", "nan is not between 0 and 1"),
        ("inf,0", "inf is not between 0 and 1"),
    ],
)
def test_split_fractions_that_are_not_two_or_three_shares_adding_to_one_are_one_clear_error(text, says):
    with pytest.raises(DataError) as err:
        parse_fractions(text)
    assert says in err.value.message and err.value.message.startswith(f"--fractions {text!r}")
    assert "--fractions 0.8,0.1,0.1" in err.value.hint


def test_split_fractions_parse_with_spaces_and_keep_their_order():
    assert parse_fractions(" 0.8, 0.1 ,0.1") == (0.8, 0.1, 0.1) and parse_fractions("0.9,0.1") == (0.9, 0.1)
