"""Readers and formats: every source yields rows with their locations, every format normalises, every bad row names its field."""

import csv
import json

import pytest

from mlxft.data import formats, readers
from mlxft.data.readers import Record, RowError, detect_source, find_splits, iter_rows
from mlxft.data.sources import read_split
from mlxft.errors import DataError

ROWS = [{"text": "red fox"}, {"text": "blue dog"}, {"text": "green cat"}]


def _records(path, split=None):
    return [r for r in iter_rows(path, split) if isinstance(r, Record)]


def _errors(path, split=None):
    return [r for r in iter_rows(path, split) if isinstance(r, RowError)]


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def save_image(path, mode="RGB", size=(8, 6), fmt=None):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 10, 10), "L": 128, "RGBA": (1, 2, 3, 4), "CMYK": (0, 50, 100, 0)}[mode]
    Image.new(mode, size, color).save(path, format=fmt)
    return path


def truncated_jpeg(path):
    save_image(path, size=(64, 64), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- sources --------------------------------------------------------------------------------


def test_jsonl_rows_carry_line_numbers_and_bad_lines_become_row_errors(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"text": "a"}\n\n{"text": broken}\n[1, 2]\n{"text": "b"}\n')
    rows = list(iter_rows(p))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 1), ("RowError", 3), ("RowError", 4), ("Record", 5)]
    assert "not valid JSON" in rows[1].reason and "an array" in rows[2].reason
    assert detect_source(p) == "jsonl"


def test_a_json_array_streams_element_by_element_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "JSON_CHUNK", 7)  # force elements to straddle chunk boundaries
    p = tmp_path / "data.json"
    rows = [{"instruction": f"say {i} " * 3, "input": "", "output": "ok {}[],"} for i in range(25)]
    p.write_text(json.dumps(rows, indent=2))
    got = _records(p)
    assert [r.data for r in got] == rows and [r.line for r in got] == list(range(1, 26))
    assert detect_source(p) == "json"


def test_a_json_array_element_that_is_not_an_object_is_a_row_error_and_the_rest_still_reads(tmp_path):
    p = tmp_path / "data.json"
    p.write_text('[{"text": "a"}, 3, "x", {"text": "b"}]')
    rows = list(iter_rows(p))
    assert [type(r).__name__ for r in rows] == ["Record", "RowError", "RowError", "Record"]
    assert rows[1].line == 2 and "a number" in rows[1].reason


def test_a_truncated_json_array_reports_where_reading_stopped(tmp_path):
    p = tmp_path / "data.json"
    p.write_text('[{"text": "a"},\n {"text": "b"},\n {"text": "c')
    rows = list(iter_rows(p))
    assert [r.data["text"] for r in rows if isinstance(r, Record)] == ["a", "b"]
    assert isinstance(rows[-1], RowError) and rows[-1].line == 3 and "line 3" in rows[-1].reason and "rest of the file" in rows[-1].reason


def test_a_json_file_of_one_object_per_line_reads_as_json_lines(tmp_path):
    p = tmp_path / "data.json"
    p.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert [r.line for r in _records(p)] == [1, 2]


def test_csv_and_tsv_rows_keep_the_file_line_and_wrong_column_counts_are_row_errors(tmp_path):
    p = write_csv(tmp_path / "data.csv", ["text", "label"], [["a, quoted\nover two lines", "pos"], ["b", "neg", "extra"], ["c", "neg"]])
    rows = list(iter_rows(p))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 2), ("RowError", 4), ("Record", 5)]
    assert rows[0].data == {"text": "a, quoted\nover two lines", "label": "pos"}
    assert "3 field(s) but the header has 2" in rows[1].reason
    t = write_csv(tmp_path / "data.tsv", ["prompt", "completion"], [["p", "c"]], delimiter="\t")
    assert detect_source(t) == "tsv" and _records(t)[0].data == {"prompt": "p", "completion": "c"}


def test_a_csv_row_with_bytes_that_are_not_utf8_is_a_row_error(tmp_path):
    p = tmp_path / "data.csv"
    p.write_bytes(b"text,label\nok,1\nbad \xff byte,0\nfine,0\n")
    rows = list(iter_rows(p))
    assert [type(r).__name__ for r in rows] == ["Record", "RowError", "Record"] and "UTF-8" in rows[1].reason


def test_parquet_rows_stream_by_batch_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": [f"p{i}" for i in range(10)], "completion": [f"c{i}" for i in range(10)]}), p, row_group_size=3)
    rows = list(readers.iter_parquet_rows(p, batch_size=4))
    assert [r.line for r in rows] == list(range(1, 11)) and rows[9].data == {"prompt": "p9", "completion": "c9"}
    assert detect_source(p) == "parquet"
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert isinstance(next(iter_rows(bad)), RowError)


def test_a_saved_datasets_folder_maps_validation_to_the_valid_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "validation": Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "ds"))
    assert detect_source(tmp_path / "ds") == "datasets"
    assert find_splits(tmp_path / "ds") == ["train", "valid"]
    valid = _records(tmp_path / "ds", "valid")
    assert valid[0].data == ROWS[0] and valid[0].where.endswith("[validation]:1")


def test_a_folder_of_mixed_file_types_finds_each_split_by_name(tmp_path):
    write_csv(tmp_path / "imdb_train_50.csv", ["text", "label"], [["a", "1"]])
    (tmp_path / "validation.jsonl").write_text('{"text": "b", "label": "0"}\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["c"], "label": ["1"]}), tmp_path / "test.parquet")
    assert detect_source(tmp_path) == "folder"
    assert find_splits(tmp_path) == ["train", "valid", "test"]
    assert [r.data["text"] for r in read_split(tmp_path, "valid")] == ["b"]
    assert read_split(tmp_path, "test")[0].data == {"text": "c", "label": "1"}


def test_two_files_for_one_split_is_an_error_naming_both(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n')
    write_csv(tmp_path / "train.csv", ["text"], [["b"]])
    with pytest.raises(DataError) as err:
        find_splits(tmp_path)
    assert "train.csv" in err.value.message and "train.jsonl" in err.value.message


def test_an_image_folder_yields_one_row_per_image_with_its_label_folder(tmp_path):
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            save_image(tmp_path / split / label / f"{label}1.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    save_image(tmp_path / "train" / "stray.png")
    assert detect_source(tmp_path) == "images" and find_splits(tmp_path) == ["train", "valid"]
    rows = list(iter_rows(tmp_path, "train"))
    assert [r.data["label"] for r in rows if isinstance(r, Record)] == ["cat", "dog"]
    assert rows[0].where == str(tmp_path / "train" / "cat" / "cat1.png")
    assert isinstance(rows[-1], RowError) and "no label" in rows[-1].reason  # never skipped silently


def test_an_image_folder_with_a_metadata_file_reads_labels_from_it(tmp_path):
    save_image(tmp_path / "train" / "a.png")
    save_image(tmp_path / "train" / "b.jpg", fmt="JPEG")
    write_csv(tmp_path / "train" / "metadata.csv", ["file_name", "label"], [["a.png", "x"], ["b.jpg", "y"], ["", "z"]])
    rows = list(iter_rows(tmp_path, "train"))
    assert rows[0].data == {"image": str(tmp_path / "train" / "a.png"), "label": "x"} and rows[0].line == 2
    assert isinstance(rows[2], RowError) and "file_name" in rows[2].reason


def test_a_missing_split_is_none_for_read_split_and_an_error_for_iter_rows(tmp_path):
    p = tmp_path / "one.csv"
    write_csv(p, ["text"], [["a"]])
    assert read_split(p, "valid") is None and len(read_split(p, "train")) == 1
    with pytest.raises(DataError, match="no 'valid' split"):
        list(iter_rows(p, "valid"))


def test_read_split_lists_every_unreadable_row_at_once(tmp_path):
    p = write_csv(tmp_path / "train.csv", ["text", "label"], [["a"], ["b", "1"], ["c", "1", "2"]])
    with pytest.raises(DataError) as err:
        read_split(p, "train")
    assert "2 unreadable row(s)" in err.value.message and f"{p}:2" in err.value.message and f"{p}:4" in err.value.message


def test_a_missing_path_says_so_and_an_unknown_extension_names_the_supported_ones(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        detect_source(tmp_path / "nothing.jsonl")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="supported"):
        detect_source(tmp_path / "data.xlsx")
    assert detect_source("owner/some-dataset") == "hub"
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="no such file"):
        detect_source(str(tmp_path / "data" / "support"))


@pytest.mark.hub
def test_a_hub_dataset_streams_rows_without_downloading_it_whole():
    rows = iter_rows("stanfordnlp/imdb", "test")
    first = next(r for r in rows if isinstance(r, Record))
    assert set(first.data) >= {"text", "label"} and first.line == 1


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, fmt, canonical",
    [
        ({"text": "hi"}, "text", {"text": "hi"}),
        ({"prompt": "", "completion": "c"}, "completion", {"prompt": "", "completion": "c"}),
        ({"instruction": "Add", "input": "1 2", "output": "3"}, "instruction", {"prompt": "Add\n\n1 2", "completion": "3"}),
        ({"instruction": "Hi", "input": "  ", "output": "Yo"}, "instruction", {"prompt": "Hi", "completion": "Yo"}),
        ({"text": "good film", "label": 1}, "classification", {"text": "good film", "label": 1}),
        (
            {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "name": "x"}]},
            "chat",
            {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "user", "value": "q2"}, {"from": "model", "value": "a2"}], "system": "Be kind."},
            "sharegpt",
            {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
        ),
        ({"prompt": "p", "chosen": "good", "rejected": "bad"}, "preference", {"prompt": "p", "chosen": "good", "rejected": "bad"}),
    ],
)
def test_each_format_normalises_to_its_canonical_form(row, fmt, canonical):
    assert formats.detect_format([row]) == fmt
    assert formats.normalize(Record("f.jsonl", 1, row), fmt) == canonical


def test_alpaca_rows_with_history_or_system_become_conversations_so_nothing_is_lost():
    row = {"instruction": "And 2+2?", "input": "", "output": "4", "system": "Math tutor.", "history": [["1+1?", "2"]]}
    assert formats.normalize(row, "instruction")["messages"] == [
        {"role": "system", "content": "Math tutor."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2?"},
        {"role": "assistant", "content": "4"},
    ]


def test_implicit_prompt_preference_pairs_split_off_their_shared_opening():
    u = {"role": "user", "content": "Name a color."}
    row = {"chosen": [u, {"role": "assistant", "content": "Red."}], "rejected": [u, {"role": "assistant", "content": "No."}]}
    assert formats.detect_format([row]) == "preference"
    assert formats.normalize(row, "preference") == {
        "prompt": [u], "chosen": [{"role": "assistant", "content": "Red."}], "rejected": [{"role": "assistant", "content": "No."}],
    }


def test_a_column_mapping_reads_differently_named_columns():
    row = {"question": "2+2?", "answer": "4"}
    mapping = {"prompt": "question", "completion": "answer"}
    assert formats.detect_format([row], mapping) == "completion"
    assert formats.normalize(row, "completion", mapping) == {"prompt": "2+2?", "completion": "4"}
    with pytest.raises(DataError, match="'question_col' is not a column"):
        formats.normalize(row, "completion", {"question_col": "q"})


@pytest.mark.parametrize(
    "row, fmt, field, reason",
    [
        ({"prompt": "p"}, "completion", "completion", "missing"),
        ({"prompt": "p", "completion": ""}, "completion", "completion", "empty"),
        ({"text": 3}, "text", "text", "must be a string, got an integer"),
        ({"instruction": "i", "input": 5, "output": "o"}, "instruction", "input", "must be a string"),
        ({"messages": []}, "chat", "messages", "non-empty list"),
        ({"messages": ["hi"]}, "chat", "messages[0]", "role and content"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "chat", "messages[0].role", "'wizard'"),
        ({"messages": [{"role": "user", "content": "q"}]}, "chat", "messages", "no assistant turn"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}, "chat", "messages[2].role", "two assistant turns in a row"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}, "chat", "messages[1].role", "two user turns"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}, "chat", "messages[1].role", "start with a user turn after the system turn"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "system", "content": "s"}]}, "chat", "messages[2].role", "only open"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}, "chat", "messages[1].content", "empty"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}, "chat", "messages[1].content", "must be a string"),
        ({"conversations": [{"from": "alien", "value": "q"}]}, "sharegpt", "conversations[0].role", "'alien'"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "preference", "rejected", "nothing to prefer"),
        ({"chosen": "a", "rejected": "b"}, "preference", "prompt", "share no beginning"),
        ({"chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}, "preference", "prompt", "both be whole texts or both whole conversations"),
        ({"text": "t", "label": 1.5}, "classification", "label", "class name or an integer"),
        ({"text": "t", "label": ""}, "classification", "label", "empty"),
        ({"image": "nope.png", "label": "cat"}, "image-classification", "image", "no such image file"),
    ],
)
def test_each_bad_row_names_the_field_at_fault(row, fmt, field, reason):
    with pytest.raises(formats.RowProblem) as err:
        formats.normalize(Record("/data/f.jsonl", 1, row), fmt)
    assert err.value.field == field and reason in err.value.reason


def test_images_must_open_and_decode_and_cmyk_or_grayscale_are_fine(tmp_path):
    good = save_image(tmp_path / "cmyk.jpg", mode="CMYK", fmt="JPEG")
    gray = save_image(tmp_path / "gray.png", mode="L")
    assert formats.inspect_image(str(good)).mode == "CMYK" and formats.inspect_image(str(gray)).mode == "L"
    row = Record(str(tmp_path / "meta.jsonl"), 1, {"image": "gray.png", "label": "g"})
    assert formats.normalize(row, "image-classification") == {"image": str(gray), "label": "g"}  # relative to the file
    with pytest.raises(formats.RowProblem, match="cannot read the image"):
        formats.inspect_image(str(truncated_jpeg(tmp_path / "cut.jpg")))
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(formats.RowProblem, match="cannot read the image"):
        formats.inspect_image(str(tmp_path / "text.png"))
    assert formats.inspect_image({"bytes": gray.read_bytes()}).width == 8


def test_detect_format_says_what_it_saw_when_rows_are_ambiguous_mixed_or_unknown():
    with pytest.raises(DataError, match="matches chat and completion"):
        formats.detect_format([{"messages": [], "prompt": "p", "completion": "c"}])
    rows = [Record("f", 1, {"text": "a"}), Record("f", 2, {"prompt": "p", "completion": "c"}), Record("f", 3, {"text": "b"})]
    with pytest.raises(DataError, match=r"mixed formats.*2 text \(first at f:1\), 1 completion \(first at f:2\)"):
        formats.detect_format(rows)
    with pytest.raises(DataError, match="columns seen: question"):
        formats.detect_format([{"question": "q"}])
    # rows that match nothing do not decide the format; normalize reports them one by one
    assert formats.detect_format([RowError("f", 1, "bad"), {"question": "q"}, {"text": "a"}]) == "text"


# -- the engine reads the new formats through the same encoder ------------------------------


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from mlxft.llm.loading import load_model

    return load_model(str(tiny_llama)).tokenizer


def test_the_encoder_trains_on_alpaca_and_sharegpt_rows_like_their_canonical_forms(tok):
    from mlxft.data.encode import SampleEncoder
    from mlxft.recipe import DataSection

    enc = SampleEncoder(tok, DataSection(path="x"))
    alpaca = enc.encode(Record("f", 1, {"instruction": "Count", "input": "to two", "output": "one two"}), "auto")
    same = enc.encode(Record("f", 1, {"prompt": "Count\n\nto two", "completion": "one two"}), "completion")
    assert alpaca.ids.tolist() == same.ids.tolist() and alpaca.mask.tolist() == same.mask.tolist()
    assert enc.encode(Record("f", 1, {"instruction": "Count", "output": "one"}), "completion").trained_tokens > 0
    share = enc.encode(Record("f", 1, {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}), "chat")
    chat = enc.encode(Record("f", 1, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}), "chat")
    assert share.ids.tolist() == chat.ids.tolist()
    with pytest.raises(DataError, match="f:1: preference data is not trained"):
        enc.encode(Record("f", 1, {"prompt": "p", "chosen": "a", "rejected": "b"}), "auto")


# -- preference layouts people publish -------------------------------------------------------------------
_U = [{"role": "user", "content": "What is 2+2?"}]
_GOOD, _BAD = [{"role": "assistant", "content": "4."}], [{"role": "assistant", "content": "5."}]
_CONV = {"prompt": _U, "chosen": _GOOD, "rejected": _BAD}


@pytest.mark.parametrize(
    "row, expected",
    [
        # TRL, explicit prompt, conversational (what `mlxft data build` writes for chat data)
        ({"prompt": _U, "chosen": _GOOD, "rejected": _BAD}, _CONV),
        # TRL, implicit prompt, conversational
        ({"chosen": _U + _GOOD, "rejected": _U + _BAD}, _CONV),
        # TRL, implicit prompt, plain text: the shared beginning, cut at a word boundary
        ({"chosen": "The sky is blue today.", "rejected": "The sky is bluish grey."},
         {"prompt": "The sky is ", "chosen": "blue today.", "rejected": "bluish grey."}),
        # Anthropic HH transcripts
        ({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5."}, _CONV),
        # ShareGPT / LLaMA-Factory
        ({"conversations": [{"from": "human", "value": "What is 2+2?"}], "chosen": {"from": "gpt", "value": "4."},
          "rejected": {"from": "gpt", "value": "5."}}, _CONV),
        # OpenAI preference fine-tuning
        ({"input": {"messages": _U}, "preferred_output": _GOOD, "non_preferred_output": _BAD}, _CONV),
    ],
    ids=["trl-explicit-conversational", "trl-implicit-conversational", "trl-implicit-text", "hh", "sharegpt", "openai"],
)
def test_every_published_preference_layout_is_detected_and_normalised(row, expected):
    assert formats.detect_format([row]) == "preference"
    assert formats.normalize(row, "preference") == expected


def test_hh_transcripts_with_several_turns_keep_the_earlier_ones_in_the_prompt():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 4."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: 2+2?\n\nAssistant: 22."
    row = formats.normalize({"chosen": chosen, "rejected": rejected}, "preference")
    assert [t["role"] for t in row["prompt"]] == ["user", "assistant", "user"]
    assert row["chosen"] == [{"role": "assistant", "content": "4."}] and row["rejected"] == [{"role": "assistant", "content": "22."}]


@pytest.mark.parametrize(
    "row, field, reason",
    [
        ({"prompt": _U + _GOOD, "chosen": _GOOD, "rejected": _BAD}, "prompt[1].role", "end on a user turn"),
        ({"prompt": _U, "chosen": [{"role": "user", "content": "x"}], "rejected": _BAD}, "chosen[0].role", "start with the assistant's answer"),
        ({"prompt": "plain", "chosen": _GOOD, "rejected": _BAD}, "chosen", "both as strings or both as turns"),
        ({"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}},
         "chosen[0].role", "start with the assistant's answer"),
        ({"input": {"messages": _U}, "preferred_output": _GOOD, "non_preferred_output": _GOOD}, "non_preferred_output", "nothing to prefer"),
        ({"input": "q", "preferred_output": _GOOD, "non_preferred_output": _BAD}, "input", "OpenAI's preference layout"),
        ({"chosen": "The sky", "rejected": "The sky"}, "rejected", "nothing to prefer"),
    ],
)
def test_bad_preference_rows_name_the_field(row, field, reason):
    with pytest.raises(formats.RowProblem) as err:
        formats.normalize(Record("/data/f.jsonl", 1, row), "preference")
    assert err.value.field == field and reason in err.value.reason, err.value
