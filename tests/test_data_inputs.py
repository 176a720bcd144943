"""Awkward and hostile data inputs: image folders by any path form, images outside their folder, over-size and deeply nested rows."""

import json
import os

import pytest
from conftest import ASSETS, write_jsonl

from mlxft.data import readers
from mlxft.data.convert import convert_data
from mlxft.data.readers import Record, RowError, iter_rows, read_page
from mlxft.data.sources import read_split
from mlxft.data.validate import validate_data
from mlxft.errors import DataError


def save_image(path, color=(200, 10, 10)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


def image_folder(root):
    """train/{cat,dog}/ and val/{cat,dog}/, two images each: 8 images, no two alike."""
    for i, split in enumerate(("train", "val")):
        for j, label in enumerate(("cat", "dog")):
            for k in range(2):
                save_image(root / split / label / f"{label}{k}.png", (40 * i + 10, 60 * j + 10, 90 * k + 10))
    return root


def counts(report):
    return {name: (s.good, s.bad) for name, s in report.splits.items()}


# -- image folders: one result whatever the path looks like ----------------------------------


def test_relative_image_folder_validates_like_absolute(tmp_path, monkeypatch):
    image_folder(tmp_path / "pets")
    (tmp_path / "linked").symlink_to(tmp_path / "pets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = {"train": (4, 0), "valid": (4, 0)}
    for form in (str(tmp_path / "pets"), "pets", "./pets", "pets/", "~/pets", "linked", "../" + tmp_path.name + "/pets"):
        report = validate_data(form)
        assert counts(report) == expected and report.usable, (form, report.format_text())


def test_relative_image_folder_with_a_metadata_file_validates_like_absolute(tmp_path, monkeypatch):
    save_image(tmp_path / "pets" / "train" / "a.png")
    save_image(tmp_path / "pets" / "train" / "sub" / "b.png", (1, 2, 3))
    write_jsonl(tmp_path / "pets" / "train" / "metadata.jsonl", [{"file_name": "a.png", "label": "x"}, {"file_name": "sub/b.png", "label": "y"}])
    monkeypatch.chdir(tmp_path)
    assert counts(validate_data("pets")) == counts(validate_data(tmp_path / "pets")) == {"train": (2, 0)}


def test_converted_image_rows_name_the_same_files_from_a_relative_path(tmp_path, monkeypatch):
    image_folder(tmp_path / "pets")
    monkeypatch.chdir(tmp_path)
    convert_data("pets", "out-rel")
    convert_data(tmp_path / "pets", "out-abs")
    for split in ("train", "valid"):
        rel = (tmp_path / "out-rel" / f"{split}.jsonl").read_text()
        assert rel == (tmp_path / "out-abs" / f"{split}.jsonl").read_text()
        # The written paths are absolute, so the converted set trains from any folder.
        assert all(os.path.isfile(json.loads(line)["image"]) for line in rel.splitlines())


@pytest.mark.slow
@pytest.mark.skipif(not (ASSETS / "data" / "cats_vs_dogs").is_dir(), reason="needs ../shared/assets/data/cats_vs_dogs")
def test_the_real_image_folder_validates_the_same_by_relative_and_absolute_path(monkeypatch):
    monkeypatch.chdir(ASSETS / "data")
    relative, absolute = validate_data("cats_vs_dogs"), validate_data(ASSETS / "data" / "cats_vs_dogs")
    assert counts(relative) == counts(absolute) == {"train": (600, 0), "valid": (200, 0)}
    assert relative.usable


# -- images outside the data folder ----------------------------------------------------------


def test_metadata_file_names_outside_the_data_folder_are_row_errors_unless_allowed(tmp_path):
    outside = save_image(tmp_path / "elsewhere" / "secret.png")
    (tmp_path / "elsewhere" / "dir").mkdir()
    save_image(tmp_path / "elsewhere" / "dir" / "c.png")
    data = tmp_path / "data"
    save_image(data / "train" / "ok.png")
    (data / "train" / "escape").symlink_to(tmp_path / "elsewhere" / "dir")
    meta = write_jsonl(data / "train" / "metadata.jsonl", [
        {"file_name": "ok.png", "label": "a"},
        {"file_name": "../../elsewhere/secret.png", "label": "b"},
        {"file_name": str(outside), "label": "c"},
        {"file_name": "escape/c.png", "label": "d"},
        {"file_name": "../train/ok.png", "label": "e"},  # leaves and comes back: still inside
    ])
    rows = list(iter_rows(data, "train"))
    assert [type(r).__name__ for r in rows] == ["Record", "RowError", "RowError", "RowError", "Record"]
    for row in rows[1:4]:
        assert row.where == f"{meta}:{row.line}" and row.reason.startswith("file_name:")
        assert "outside the data folder" in row.reason and "--allow-outside-paths" in row.reason
    report = validate_data(data)
    assert [p.where for p in report.problems] == [f"{meta}:2", f"{meta}:3", f"{meta}:4"] and not report.usable
    allowed = list(iter_rows(data, "train", allow_outside_paths=True))
    assert all(isinstance(r, Record) for r in allowed)
    assert validate_data(data, allow_outside_paths=True).usable


def test_a_symlink_out_of_an_image_folder_is_a_row_error_unless_allowed(tmp_path):
    save_image(tmp_path / "elsewhere" / "x.png")
    save_image(tmp_path / "elsewhere" / "cats" / "y.png")
    data = tmp_path / "data"
    save_image(data / "train" / "dog" / "d.png")
    (data / "train" / "dog" / "link.png").symlink_to(tmp_path / "elsewhere" / "x.png")
    (data / "train" / "cat").symlink_to(tmp_path / "elsewhere" / "cats")
    rows = list(iter_rows(data, "train"))
    bad = sorted(r.where for r in rows if isinstance(r, RowError))
    assert bad == [str(data / "train" / "cat" / "y.png"), str(data / "train" / "dog" / "link.png")]
    assert all("outside the data folder" in r.reason for r in rows if isinstance(r, RowError))
    assert sum(isinstance(r, Record) for r in iter_rows(data, "train", allow_outside_paths=True)) == 3


def test_convert_refuses_outside_images_unless_allowed(tmp_path):
    save_image(tmp_path / "elsewhere" / "x.png")
    save_image(tmp_path / "data" / "train" / "a.png")
    write_jsonl(tmp_path / "data" / "train" / "metadata.jsonl", [{"file_name": "a.png", "label": "a"}, {"file_name": "../../elsewhere/x.png", "label": "b"}])
    result = convert_data(tmp_path / "data", tmp_path / "out")
    assert result.written == {"train": 1} and "outside the data folder" in result.skipped[0]
    assert convert_data(tmp_path / "data", tmp_path / "out2", allow_outside_paths=True).written == {"train": 2}


# -- hostile rows -----------------------------------------------------------------------------


def test_deeply_nested_jsonl_rows_are_row_errors_naming_their_line(tmp_path):
    p = tmp_path / "train.jsonl"
    deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"  # Python's json recurses past its limit on this
    nested = json.dumps({"text": "x", "extra": json.loads("[" * 150 + "]" * 150)})  # parses, but deeper than any row needs
    p.write_text("\n".join(['{"text": "fine"}', deep, nested, '{"text": "also fine"}']) + "\n")
    rows = list(iter_rows(p))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 1), ("RowError", 2), ("RowError", 3), ("Record", 4)]
    assert all("nested more than" in r.reason for r in rows if isinstance(r, RowError))
    report = validate_data(p)
    assert [p_.where for p_ in report.problems] == [f"{p}:2", f"{p}:3"] and report.splits["train"].good == 2
    with pytest.raises(DataError, match=r"2 unreadable row\(s\)") as err:  # what training reports
        read_split(p, "train")
    assert f"{p}:2: nested more than" in err.value.message


def test_a_jsonl_row_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXFT_MAX_ROW_MB", "0.001")  # 1,000 bytes
    p = tmp_path / "train.jsonl"
    # Not even valid JSON: the size is what it is refused for, so it was never handed to the parser.
    p.write_text('{"text": "short"}\n{"text": "' + "x" * 5000 + '\n{"text": "after"}\n' + '{"text": "' + "y" * 950 + '"}\n')
    rows = list(iter_rows(p))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 1), ("RowError", 2), ("Record", 3), ("Record", 4)]
    assert "over the 0.001 MB row limit" in rows[1].reason and "MLXFT_MAX_ROW_MB" in rows[1].reason
    monkeypatch.setenv("MLXFT_MAX_ROW_MB", "1")
    assert "not valid JSON" in list(iter_rows(p))[1].reason  # raised, the same row is read (and is bad JSON)


def test_the_default_row_limit_is_a_few_megabytes():
    assert readers.max_row_bytes() == int(readers.DEFAULT_MAX_ROW_MB * 1e6) and 1e6 <= readers.max_row_bytes() <= 16e6


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan", "inf"])
def test_a_bad_row_limit_setting_is_a_clear_error(monkeypatch, tmp_path, value):
    monkeypatch.setenv("MLXFT_MAX_ROW_MB", value)
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match="MLXFT_MAX_ROW_MB") as err:
        list(iter_rows(p))
    assert "MB" in err.value.hint


def test_a_json_array_skips_an_oversized_or_nested_element_and_reads_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXFT_MAX_ROW_MB", "0.001")
    monkeypatch.setattr(readers, "JSON_CHUNK", 64)  # elements straddle read chunks
    p = tmp_path / "data.json"
    big = json.dumps({"text": 'q"\\[{' * 400})  # brackets and escapes inside the string must not confuse the skip
    p.write_text("[\n" + ",\n".join([
        '{"text": "a"}', big, "[" * 5000 + "]" * 5000, '{"text": broken}', '"' + "s" * 3000 + '"', '{"text": "b"}',
    ]) + "\n]")
    rows = list(iter_rows(p))
    assert [type(r).__name__ for r in rows] == ["Record", "RowError", "RowError", "RowError", "RowError", "Record"]
    assert [r.data for r in rows if isinstance(r, Record)] == [{"text": "a"}, {"text": "b"}]
    assert "row limit" in rows[1].reason and "row limit" in rows[4].reason
    assert "nested more than" in rows[2].reason or "row limit" in rows[2].reason
    assert "not valid JSON" in rows[3].reason and "line 5" in rows[3].reason


def test_a_json_array_element_nested_too_deeply_is_a_row_error(tmp_path):
    p = tmp_path / "data.json"
    p.write_text('[{"text": "a"}, {"text": ' + "[" * 50_000 + "]" * 50_000 + '}, {"text": "b"}]')
    rows = list(iter_rows(p))
    assert [type(r).__name__ for r in rows] == ["Record", "RowError", "Record"] and "nested more than" in rows[1].reason


def test_csv_and_parquet_rows_over_the_limit_are_row_errors(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("MLXFT_MAX_ROW_MB", "0.001")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text('text\nshort\n"' + "z" * 2000 + '"\nafter\n')
    rows = list(iter_rows(csv_path))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 2), ("RowError", 3), ("Record", 4)]
    many_lines = tmp_path / "lines.csv"  # one quoted cell of many short lines: measured once parsed
    many_lines.write_text('text\nshort\n"' + "word\n" * 400 + '"\nafter\n')
    rows = list(iter_rows(many_lines))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 2), ("RowError", 3), ("Record", 404)]
    assert "row limit" in rows[1].reason
    pq_path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["short", "z" * 2000, "after"]}), pq_path)
    rows = list(iter_rows(pq_path))
    assert [(type(r).__name__, r.line) for r in rows] == [("Record", 1), ("RowError", 2), ("Record", 3)]
    assert "row limit" in rows[1].reason


def test_a_hostile_row_is_shown_as_unreadable_by_read_page(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"text": "ok"}\n')
    page = read_page(p, count=5)
    assert isinstance(page.rows[0], RowError) and isinstance(page.rows[1], Record)
