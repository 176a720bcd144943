"""The never-write-over-an-input rule, and every data command that writes keeping it, with or without overwrite."""

import json
import os

import pytest
from conftest import write_jsonl

from mlxft.data.convert import convert_data
from mlxft.data.curation import build_training_sets, export_review, failure_clusters, read_eval_log
from mlxft.data.outputs import refuse_writing_over_inputs
from mlxft.data.split import split_rows, write_splits
from mlxft.errors import DataError


def refused(outputs, inputs) -> str:
    with pytest.raises(DataError) as err:
        refuse_writing_over_inputs(outputs, inputs)
    assert "--overwrite" in err.value.hint  # says that even the flag would not do it
    return err.value.message


def test_an_output_that_is_an_input_by_path_symlink_or_hard_link_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "mine"}])
    (tmp_path / "link.jsonl").symlink_to(src)
    os.link(src, tmp_path / "hard.jsonl")
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    assert "is the input file" in refused([src], [src])
    assert "through a link" in refused([tmp_path / "link.jsonl"], [src])
    assert "through a link" in refused([tmp_path / "hard.jsonl"], [src])
    assert "is the input file" in refused([tmp_path / "dirlink" / "in.jsonl"], [src])
    assert "is the input file" in refused([src], [tmp_path / "link.jsonl"])
    refuse_writing_over_inputs([tmp_path / "other.jsonl"], [src])  # a new file is fine


def test_an_output_into_an_input_folder_or_onto_a_file_inside_it_is_refused(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [{"text": "mine"}])
    (tmp_path / "alias").symlink_to(data)
    assert "is the input file" in refused([data / "train.jsonl"], [data])
    assert "input folder" in refused([tmp_path / "alias" / "valid.jsonl"], [data])
    deeper = data / "nested"
    deeper.mkdir()
    os.link(data / "train.jsonl", deeper / "copy.jsonl")
    assert "is the input file" in refused([tmp_path / "alias" / "nested" / "copy.jsonl"], [data])
    refuse_writing_over_inputs([data / "converted" / "train.jsonl"], [data])  # a subfolder is not part of the data


def test_a_folder_with_a_link_loop_is_walked_once(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [{"text": "mine"}])
    (data / "loop").symlink_to(data, target_is_directory=True)
    out = write_jsonl(tmp_path / "out" / "x.jsonl", [{"text": "old output"}])
    refuse_writing_over_inputs([out], [data])


def eval_log(path):
    return write_jsonl(path, [{"id": i, "prompt": f"q{i}", "answer": "a", "expected": "b" if i % 2 else "a", "grade": not i % 2} for i in range(6)])


def test_review_never_writes_over_its_own_eval_log_even_with_overwrite(tmp_path):
    log = eval_log(tmp_path / "log.jsonl")
    original = log.read_text()
    rows = read_eval_log(log)
    (tmp_path / "link.jsonl").symlink_to(log)
    os.link(log, tmp_path / "hard.jsonl")
    for out in (log, tmp_path / "link.jsonl", tmp_path / "hard.jsonl"):
        with pytest.raises(DataError, match="will not write over an input"):
            export_review(failure_clusters(rows)[0], out, overwrite=True)
    assert log.read_text() == original and (tmp_path / "link.jsonl").is_symlink()


def test_build_never_writes_over_the_review_or_the_passing_log(tmp_path):
    log = eval_log(tmp_path / "log.jsonl")
    review = export_review(failure_clusters(read_eval_log(log))[0], tmp_path / "review.jsonl")
    entries = [json.loads(line) for line in review.read_text().splitlines()]
    review.write_text("".join(json.dumps({**e, "corrected": "fixed"}) + "\n" for e in entries))
    out = tmp_path / "built"
    (out / "sft").mkdir(parents=True)
    os.link(log, out / "sft" / "train.jsonl")  # the passing examples' log, reachable as an output
    with pytest.raises(DataError, match="will not write over an input") as err:
        build_training_sets(review, out_dir=out, keep_passing=read_eval_log(log), overwrite=True)
    assert "--out" in err.value.hint
    assert log.read_text().count("\n") == 6


def test_split_and_convert_refuse_an_input_reached_through_a_link_even_with_overwrite(tmp_path):
    data = tmp_path / "data"
    src = write_jsonl(data / "train.jsonl", [{"text": f"row {i}"} for i in range(10)])
    original = src.read_text()
    (tmp_path / "alias").symlink_to(data)
    with pytest.raises(DataError, match="is the input file"):
        write_splits(split_rows([{"text": "x"}] * 10), tmp_path / "alias", input_paths=[src], overwrite=True)
    with pytest.raises(DataError, match="is the input file"):
        convert_data(data, tmp_path / "alias", overwrite=True)
    with pytest.raises(DataError, match="is the input file"):
        convert_data(tmp_path / "alias", data / ".", overwrite=True)
    (data / "notes.csv").write_text("text\nmine\n")  # a folder of one CSV: its train split
    (data / "train.jsonl").rename(tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="input folder"):
        convert_data(data, tmp_path / "alias", overwrite=True)
    (tmp_path / "train.jsonl").rename(data / "train.jsonl")
    (data / "notes.csv").unlink()
    assert src.read_text() == original and sorted(p.name for p in data.iterdir()) == ["train.jsonl"]


def test_existing_outputs_hints_name_the_overwrite_flag_that_exists(tmp_path):
    log = eval_log(tmp_path / "log.jsonl")
    rows = read_eval_log(log)
    other = write_jsonl(tmp_path / "notes.jsonl", [{"note": "mine"}])
    splits = split_rows([{"text": "x"}] * 4)
    write_splits(splits, tmp_path / "s")
    hints = []
    for call in (lambda: export_review(failure_clusters(rows)[0], other), lambda: write_splits(splits, tmp_path / "s")):
        with pytest.raises(DataError) as err:
            call()
        hints.append(err.value.hint)
    review = export_review(failure_clusters(rows)[0], tmp_path / "r.jsonl")
    review.write_text("".join(json.dumps({**json.loads(line), "corrected": "c"}) + "\n" for line in review.read_text().splitlines()))
    with pytest.raises(DataError) as err:
        build_training_sets(review, out_dir=tmp_path)
    hints.append(err.value.hint)
    assert all("--overwrite" in h and "--force" not in h for h in hints), hints


def test_a_folder_that_cannot_be_made_is_one_message_for_every_writing_command(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"r{i}"} for i in range(4)])
    blocker = write_jsonl(tmp_path / "blocker", [{"text": "a file where a folder should go"}])
    log = eval_log(tmp_path / "log.jsonl")
    review = export_review(failure_clusters(read_eval_log(log))[0], tmp_path / "review.jsonl")
    review.write_text("".join(json.dumps({**json.loads(line), "corrected": "c"}) + "\n" for line in review.read_text().splitlines()))
    calls = {
        "convert": lambda: convert_data(src, blocker / "out"),
        "split": lambda: write_splits(split_rows([{"text": "x"}] * 4), blocker / "out"),
        "review": lambda: export_review(failure_clusters(read_eval_log(log))[0], blocker / "r.jsonl"),
        "build": lambda: build_training_sets(review, out_dir=blocker / "out"),
    }
    for name, call in calls.items():
        with pytest.raises(DataError, match="cannot write") as err:
            call()
        assert str(blocker / "out" if name != "review" else blocker / "r.jsonl") in err.value.message, name


def test_an_input_that_cannot_be_read_is_a_message_naming_it(tmp_path, monkeypatch):
    from mlxft.data import readers
    from mlxft.data.readers import iter_rows

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(DataError, match="cannot read") as err:
        list(iter_rows(src))
    assert str(src) in err.value.message and "Permission denied" in err.value.message
