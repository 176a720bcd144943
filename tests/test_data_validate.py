"""Validation: every bad row listed by file and line, no good row lost, lengths as training sees them, duplicates, leakage, labels, images."""

import csv
import json
import re

import pytest
from conftest import ASSETS, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_formats import save_image, truncated_jpeg, write_csv

from mlxft.data.encode import SampleEncoder
from mlxft.data.readers import Record
from mlxft.data.validate import normalized_text, validate_data
from mlxft.errors import DataError
from mlxft.recipe import DataSection


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_every_malformed_row_is_listed_with_file_line_and_field_and_the_data_is_not_usable(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("\n".join([
        json.dumps(chat("hi", "yo")),
        "{not json",
        json.dumps(chat("q", "")),
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),
        json.dumps(chat("ok", "fine")),
    ]) + "\n")
    report = validate_data(p)
    train = report.splits["train"]
    assert (train.rows, train.good, train.bad) == (5, 2, 3)
    listed = {(pr.where, pr.field) for pr in report.problems}
    assert listed == {(f"{p}:2", None), (f"{p}:3", "messages[1].content"), (f"{p}:4", "messages")}
    assert not report.usable and "usable: NO" in report.format_text()
    assert f"{p}:4: messages: the conversation has no assistant turn" in report.format_text()
    assert json.loads(report.to_json())["usable"] is False


def test_clean_data_in_every_split_is_usable_and_counted_per_split_and_format(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [chat(f"q{i}", f"a{i}") for i in range(6)])
    write_jsonl(tmp_path / "valid.jsonl", [chat(f"v{i}", "a") for i in range(2)])
    report = validate_data(tmp_path)
    assert report.usable and report.format == "chat" and report.problems == []
    assert {n: (s.rows, s.good, dict(s.formats)) for n, s in report.splits.items()} == {"train": (6, 6, {"chat": 6}), "valid": (2, 2, {"chat": 2})}


def test_no_train_split_or_an_undetectable_format_makes_the_data_unusable(tmp_path):
    write_jsonl(tmp_path / "valid.jsonl", [{"text": "a"}])
    report = validate_data(tmp_path)
    assert not report.usable and any("no train split" in e for e in report.errors)
    q = write_jsonl(tmp_path / "other" / "train.jsonl", [{"question": "a"}, {"question": "b"}])
    report = validate_data(q)
    assert not report.usable and report.format is None and "columns seen: question" in report.errors[0]
    assert report.splits["train"].rows == 2  # still counted
    with pytest.raises(DataError, match="unknown data format"):
        validate_data(q, fmt="yaml")


def test_exact_and_near_duplicates_are_found_within_a_split_and_leakage_across_splits(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "The cat sat."}, {"text": "the  cat sat"}, {"text": "The cat sat."}, {"text": "A dog ran!"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "a dog ran"}, {"text": "new text"}])
    report = validate_data(tmp_path)
    train, test = report.splits["train"], report.splits["test"]
    t, s = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    assert train.duplicates == [(f"{t}:3", f"{t}:1")]
    assert train.near_duplicates == [(f"{t}:2", f"{t}:1")]
    assert test.leaked == [(f"{s}:1", f"{t}:4")]
    assert report.usable  # warnings, not errors
    assert any("also appear in train" in w for w in report.warnings)
    assert normalized_text("  Hello,   WORLD!\n") == "hello world"


def test_label_balance_warns_on_imbalance_and_suggests_class_weights(tmp_path):
    rows = [[f"good {i}", "pos"] for i in range(8)] + [["bad 1", "neg"], ["bad 2", "neg"]]
    p = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    write_csv(tmp_path / "test.csv", ["text", "label"], [["meh", "neutral"]])
    report = validate_data(tmp_path)
    assert report.format == "classification" and dict(report.splits["train"].labels) == {"pos": 8, "neg": 2}
    assert report.class_weights == pytest.approx({"neg": 10 / 4, "pos": 10 / 16})
    assert any("imbalanced" in w and "4.0" in w for w in report.warnings)
    assert any("never seen in train: neutral" in w for w in report.warnings)
    assert p.exists()


def test_images_report_sizes_modes_and_every_corrupt_file(tmp_path):
    save_image(tmp_path / "train" / "cat" / "a.png", size=(10, 20))
    save_image(tmp_path / "train" / "cat" / "b.png", mode="L", size=(30, 40))
    save_image(tmp_path / "train" / "dog" / "c.png", mode="RGBA")
    save_image(tmp_path / "train" / "dog" / "d.jpg", mode="CMYK", fmt="JPEG")
    cut = truncated_jpeg(tmp_path / "train" / "dog" / "e.jpg")
    save_image(tmp_path / "val" / "cat" / "a.png", size=(10, 20))  # same bytes as a train image
    report = validate_data(tmp_path)
    train = report.splits["train"]
    assert report.format == "image-classification" and (train.rows, train.good, train.bad) == (5, 4, 1)
    assert dict(train.image_modes) == {"RGB": 1, "L": 1, "RGBA": 1, "CMYK": 1}
    assert train.image_sizes["width"]["min"] == 8 and train.image_sizes["height"]["max"] == 40
    assert [(p.where, p.field) for p in report.problems] == [(str(cut), "image")]
    assert report.splits["valid"].leaked == [(str(tmp_path / "val" / "cat" / "a.png"), str(tmp_path / "train" / "cat" / "a.png"))]
    assert any("not RGB" in w and "CMYK: 1" in w and "L (grayscale): 1" in w for w in report.warnings)
    assert not report.usable


def test_every_source_type_validates_with_the_same_counts(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(5)]
    sources = {
        "jsonl": write_jsonl(tmp_path / "a.jsonl", rows),
        "json": tmp_path / "a.json",
        "csv": write_csv(tmp_path / "a.csv", ["prompt", "completion"], [[r["prompt"], r["completion"]] for r in rows]),
        "tsv": write_csv(tmp_path / "a.tsv", ["prompt", "completion"], [[r["prompt"], r["completion"]] for r in rows], delimiter="\t"),
        "parquet": tmp_path / "a.parquet",
        "datasets": tmp_path / "ds",
    }
    sources["json"].write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), sources["parquet"])
    Dataset.from_list(rows).save_to_disk(str(sources["datasets"]))
    for kind, path in sources.items():
        report = validate_data(path)
        assert (report.source, report.format, report.splits["train"].good, report.usable) == (kind, "completion", 5, True)


# -- token lengths through the engine's own encoder -----------------------------------------


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from mlxft.llm.loading import load_model

    return load_model(str(tiny_llama)).tokenizer


def test_token_lengths_are_exactly_what_the_encoder_produces_and_the_policy_is_counted(tok, tmp_path):
    rows = [chat("hi", "one two " * n) for n in (1, 5, 30)] + [chat("one two three four " * 20, "ok")]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    enc = SampleEncoder(tok, DataSection(path="x"))
    lengths = sorted(len(enc.encode(Record("f", 1, r), "chat")) for r in rows)
    limit = lengths[1] + 1
    report = validate_data(p, tokenizer=tok, max_seq_length=limit)
    train = report.splits["train"]
    assert train.token_lengths["min"] == lengths[0] and train.token_lengths["max"] == lengths[-1]
    assert train.over_max_length == 2 and train.truncated == 2 and train.dropped_no_target == 1  # the long prompt leaves no answer
    assert report.usable and any("no trainable tokens" in w for w in report.warnings)
    dropped = validate_data(p, tokenizer=tok, max_seq_length=limit, overlong="drop").splits["train"]
    assert dropped.dropped_overlong == 2 and dropped.usable_rows == 2 and len(dropped.dropped_where) == 2
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "hi", "input": "", "output": "one two"}]))
    assert validate_data(alpaca, tokenizer=tok).splits["train"].token_lengths["max"] == len(enc.encode(Record("f", 1, {"prompt": "hi", "completion": "one two"}), "completion"))


def test_when_the_length_policy_drops_every_train_row_the_data_is_not_usable(tok, tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [chat("one two three " * 10, "four five six " * 10)])
    report = validate_data(p, tokenizer=tok, max_seq_length=16, overlong="drop")
    assert not report.usable and "would drop every train row" in report.errors[0]


# -- properties: garbage in, every bad row reported, no good row lost -----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["text", "label", "x"]) | st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
good_text = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
garbage_line = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: s.strip() and not _parses(s)
)
lines_strategy = st.lists(
    st.one_of(
        good_text.map(lambda t: ("good", json.dumps({"text": t}))),
        json_values.map(lambda v: ("json", json.dumps(v))),
        garbage_line.map(lambda s: ("bad", s)),
    ),
    min_size=1,
    max_size=30,
)


def _parses(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def _is_good_text_row(line: str) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and isinstance(value.get("text"), str) and bool(value["text"].strip())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=lines_strategy)
def test_garbage_jsonl_never_crashes_the_validator_and_loses_no_good_row(tmp_path, lines):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(text + "\n" for _, text in lines), encoding="utf-8")
    report = validate_data(p, fmt="text")
    good = [n for n, (_, text) in enumerate(lines, start=1) if _is_good_text_row(text)]
    bad = [n for n in range(1, len(lines) + 1) if n not in good]
    train = report.splits["train"]
    assert train.good == len(good) and train.rows == len(lines)
    assert sorted(int(pr.where.rsplit(":", 1)[1]) for pr in report.problems) == bad
    assert report.usable == (not bad and bool(good))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(good_text.map(lambda t: {"text": t}), json_values), min_size=1, max_size=30))
def test_a_json_array_of_random_values_reports_each_bad_element_by_index(tmp_path, values):
    p = tmp_path / "train.json"
    p.write_text(json.dumps(values, indent=1), encoding="utf-8")
    report = validate_data(p, fmt="text")
    good = [i for i, v in enumerate(values, start=1) if _is_good_text_row(json.dumps(v))]
    assert report.splits["train"].good == len(good)
    assert sorted(int(pr.where.rsplit(":", 1)[1]) for pr in report.problems) == [i for i in range(1, len(values) + 1) if i not in good]


cell = st.text(alphabet=st.characters(whitelist_categories=("L", "N", "P", "Zs"), whitelist_characters="\n\r,\"\t"), max_size=8)
csv_rows = st.lists(st.one_of(st.tuples(cell, st.sampled_from(["a", "b", ""])), st.lists(cell, min_size=3, max_size=4), st.tuples(cell)), min_size=1, max_size=25)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=csv_rows)
def test_garbage_csv_rows_are_each_reported_at_the_line_they_start_on(tmp_path, rows):
    p = tmp_path / "train.csv"
    starts, text = [], "text,label\r\n"
    for row in rows:
        starts.append(len(re.findall(r"\r\n|\r|\n", text)) + 1)
        buf = _csv_line(row)
        text += buf
    p.write_text(text, encoding="utf-8", newline="")
    report = validate_data(p, fmt="classification")
    want_good = [s for s, row in zip(starts, rows, strict=True) if len(row) == 2 and row[0].strip() and row[1]]
    want_bad = sorted(s for s, row in zip(starts, rows, strict=True) if s not in want_good)
    assert report.splits["train"].good == len(want_good)
    assert sorted(int(pr.where.rsplit(":", 1)[1]) for pr in report.problems) == want_bad


def _csv_line(row) -> str:
    import io

    out = io.StringIO()
    csv.writer(out).writerow(list(row))
    return out.getvalue()


# -- the real data sets ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (ASSETS / "data").is_dir(), reason="needs ../shared/assets/data")
@pytest.mark.parametrize(
    "name, fmt, counts",
    [
        ("imdb", "classification", {"train": 5000, "test": 2000}),
        ("instructions/llamafactory_alpaca_en_demo.json", "instruction", {"train": 999}),
        ("instructions/alpaca_en_demo_chat", "chat", {"train": 900, "valid": 50, "test": 49}),
        ("cats_vs_dogs", "image-classification", {"train": 600, "valid": 200}),
    ],
)
def test_the_real_data_sets_validate_with_their_known_sizes(name, fmt, counts):
    report = validate_data(ASSETS / "data" / name)
    assert report.format == fmt and report.usable, report.format_text()
    assert {n: s.good for n, s in report.splits.items()} == counts
    assert all(s.bad == 0 for s in report.splits.values())
    if fmt in ("classification", "image-classification"):
        assert report.class_weights and max(report.class_weights.values()) / min(report.class_weights.values()) < 3


@pytest.mark.slow
@pytest.mark.skipif(not (ASSETS / "data").is_dir(), reason="../shared/assets is not here")
def test_real_data_sets_convert_to_training_jsonl(tmp_path):
    from mlxft.data.convert import convert_data

    imdb = convert_data(ASSETS / "data" / "imdb", tmp_path / "imdb")
    assert imdb.format == "classification" and imdb.written == {"train": 5000, "test": 2000} and not imdb.skipped
    alpaca = convert_data(ASSETS / "data" / "instructions" / "llamafactory_alpaca_en_demo.json", tmp_path / "alpaca", to_chat=True)
    assert alpaca.format == "instruction" and alpaca.written == {"train": 999}
    first = json.loads((tmp_path / "alpaca" / "train.jsonl").read_text().splitlines()[0])
    assert [t["role"] for t in first["messages"]][-1] == "assistant"


def test_a_device_or_pipe_is_refused_with_a_message_not_a_crash(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file or a folder"):
        validate_data(fifo)


def test_the_length_histogram_counts_every_good_row_in_whole_number_bins(tok, tmp_path):
    rows = [chat("hi", "one two " * n) for n in range(1, 41)] + [{"messages": "bad"}]
    report = validate_data(write_jsonl(tmp_path / "train.jsonl", rows), tokenizer=tok)
    lengths = report.splits["train"].token_lengths
    hist = lengths["histogram"]
    assert sum(hist["counts"]) == report.splits["train"].good == 40
    assert len(hist["counts"]) <= 20 and all(isinstance(e, int) for e in hist["edges"])
    assert hist["edges"][0] == lengths["min"] and hist["edges"][-1] > lengths["max"] >= hist["edges"][-2]
    one = validate_data(write_jsonl(tmp_path / "one" / "train.jsonl", [chat("hi", "ok")] * 3), tokenizer=tok).splits["train"].token_lengths
    assert one["histogram"]["counts"] == [3] and one["histogram"]["edges"] == [one["min"], one["min"] + 1]
