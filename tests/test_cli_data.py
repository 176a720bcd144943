"""`mlxft data`: the failure-cluster workflow end to end from the command line, and splits."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ASSETS, write_jsonl

MLXFT = [sys.executable, "-m", "mlxft", "data"]


def run(*args, cwd=None):
    return subprocess.run(MLXFT + [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _eval_log(path):
    rows = []
    for i in range(12):
        fails = i % 3 != 0
        rows.append({
            "id": f"q{i}", "prompt": f"What is {i} plus {i}?", "answer": str(i * 2 + (1 if fails else 0)), "expected": str(i * 2),
            "grade": not fails, "failure": ("arithmetic" if i % 2 else "format") if fails else None,
        })
    return write_jsonl(path, rows)


def test_failures_review_build_then_train(tmp_path, tiny_llama):
    log = _eval_log(tmp_path / "eval.jsonl")
    out = run("failures", log)
    assert out.returncode == 0, out.stderr
    assert "arithmetic" in out.stdout and "format" in out.stdout

    review = tmp_path / "review.jsonl"
    out = run("review", log, "--cluster", "arithmetic", "--out", review)
    assert out.returncode == 0, out.stderr
    items = [json.loads(l) for l in review.read_text().splitlines()]
    assert items and all(it["corrected"] == "" for it in items)
    for n, it in enumerate(items):  # a person corrects all but one
        if n:
            it["corrected"] = it["expected"]
    review.write_text("".join(json.dumps(it) + "\n" for it in items))

    out = run("review", "--check", review)
    assert out.returncode == 0 and f"{len(items) - 1} correction(s) used, 1 left empty" in out.stdout

    again = run("review", log, "--cluster", "arithmetic", "--out", review, "--overwrite")
    assert again.returncode == 1 and "error:" in again.stderr  # reviewed work is never overwritten

    built = tmp_path / "built"
    out = run("build", review, "--out", built, "--keep-passing", log)
    assert out.returncode == 0, out.stderr
    sft = [json.loads(l) for l in (built / "sft" / "train.jsonl").read_text().splitlines()]
    assert sft and all(r["messages"][-1]["role"] == "assistant" for r in sft)
    prefs = [json.loads(l) for l in (built / "preference" / "train.jsonl").read_text().splitlines()]
    assert prefs and all(p["chosen"] != p["rejected"] for p in prefs)

    from mlxft.api import train as api_train

    result = api_train({"kind": "lm-lora", "model": str(tiny_llama), "output_dir": str(tmp_path / "runs"),
                        "data": {"path": str(built / "sft"), "format": "chat"}, "train": {"steps": 2, "eval_every": None, "save_every": None, "compile": False}})
    assert result.ok, result.error


def test_split_is_stratified_and_never_overwrites_the_input(tmp_path):
    src = write_jsonl(tmp_path / "all.jsonl", [{"text": f"review {i}", "label": "pos" if i % 4 else "neg"} for i in range(40)])
    out = run("split", src, "--out", tmp_path / "splits", "--label-key", "label", "--seed", "3")
    assert out.returncode == 0, out.stderr
    counts = {s: [json.loads(l)["label"] for l in (tmp_path / "splits" / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "valid", "test")}
    assert sum(len(v) for v in counts.values()) == 40
    assert counts["train"].count("neg") == 8 and counts["valid"].count("neg") == 1
    # Splitting train.jsonl into its own folder would overwrite the user's input: refused, input intact.
    own = tmp_path / "own"
    own.mkdir()
    original = src.read_text()
    (own / "train.jsonl").write_text(original)
    clash = run("split", own / "train.jsonl", "--out", own, "--overwrite")
    assert clash.returncode == 1 and "error:" in clash.stderr
    assert (own / "train.jsonl").read_text() == original


def test_validate_exits_by_usability_and_lists_bad_rows_by_line(tmp_path):
    good = write_jsonl(tmp_path / "good" / "train.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)])
    out = run("validate", good.parent, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["usable"] is True
    bad = tmp_path / "bad" / "train.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"prompt": "q", "completion": "a"}\n{broken\n{"prompt": "q2"}\n')
    out = run("validate", bad.parent)
    assert out.returncode == 1
    assert f"{bad}:2" in out.stdout and f"{bad}:3" in out.stdout


def test_convert_writes_training_jsonl_from_csv_with_a_column_mapping(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n,\n")
    out = run("convert", src, "--format", "completion", "--map", "prompt=question", "--map", "completion=answer", "--to-chat", "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(l) for l in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}
    assert len(rows) == 2 and f"{src}:4" in out.stdout  # the empty row is listed, not dropped silently
    again = run("convert", src, "--format", "completion", "--map", "prompt=question", "--map", "completion=answer", "--out", tmp_path / "out")
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_validate_with_a_model_reads_only_its_tokenizer_and_reports_a_length_histogram(tmp_path, tiny_llama):
    import shutil

    # A model folder without weights: token counts must not need them (nor load them).
    tok_only = tmp_path / "tok-only"
    shutil.copytree(tiny_llama, tok_only, ignore=shutil.ignore_patterns("*.safetensors"))
    rows = [{"prompt": "one two " * n, "completion": "three"} for n in range(1, 30)]
    data = write_jsonl(tmp_path / "d" / "train.jsonl", rows)
    out = run("validate", data.parent, "--model", tok_only, "--json")
    assert out.returncode == 0, out.stderr
    lengths = json.loads(out.stdout)["splits"]["train"]["token_lengths"]
    hist = lengths["histogram"]
    assert sum(hist["counts"]) == len(rows) and len(hist["edges"]) == len(hist["counts"]) + 1
    assert hist["edges"][0] == lengths["min"] and hist["edges"][-2] <= lengths["max"] < hist["edges"][-1]
    assert hist["counts"][0] > 0 and hist["counts"][-1] > 0


def test_show_prints_a_page_of_rows_by_location_and_the_page_holding_a_row(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text('{"text": "a"}\n{broken\n\n{"text": "c"}\n{"text": "d"}\n{"text": "e"}\n')
    out = run("show", src, "--count", "2", "--json")
    assert out.returncode == 0, out.stderr
    first = [json.loads(l) for l in out.stdout.splitlines()]
    assert first[0] == {"where": f"{src}:1", "row": {"text": "a"}} and first[1]["where"] == f"{src}:2" and "not valid JSON" in first[1]["error"]
    assert "more follow (--start 2)" in out.stderr
    out = run("show", src, "--count", "2", "--at", f"{src}:5", "--json")
    assert [json.loads(l)["where"] for l in out.stdout.splitlines()] == [f"{src}:4", f"{src}:5"]  # rows 2-3 (line 3 is blank)
    missing = run("show", src, "--at", f"{src}:3")
    assert missing.returncode == 1 and "no row at" in missing.stderr


# -- hardening: paths, empty results, hostile rows, numbers, inputs never written over ----------


def _pets(root):
    from PIL import Image

    for split in ("train", "val"):
        for i, label in enumerate(("cat", "dog")):
            (root / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 6), (10 + 100 * i, 20, 30 if split == "train" else 90)).save(root / split / label / "a.png")
    return root


def test_validate_and_convert_of_a_relative_image_folder_find_every_image(tmp_path):
    _pets(tmp_path / "pets")
    out = run("validate", "pets", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {n: (s["good"], s["bad"]) for n, s in json.loads(out.stdout)["splits"].items()} == {"train": (2, 0), "valid": (2, 0)}
    out = run("convert", "./pets/", "--out", "converted", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "converted" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(os.path.isfile(r["image"]) for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(not (ASSETS / "data" / "cats_vs_dogs").is_dir(), reason="needs ../shared/assets/data/cats_vs_dogs")
def test_the_real_image_folder_validates_and_converts_by_a_relative_path(tmp_path):
    out = run("validate", "cats_vs_dogs", "--json", cwd=ASSETS / "data")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert {n: s["good"] for n, s in json.loads(out.stdout)["splits"].items()} == {"train": 600, "valid": 200}
    out = run("convert", "cats_vs_dogs", "--out", tmp_path / "cvd", cwd=ASSETS / "data")
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "cvd" / "valid.jsonl").read_text().splitlines()) == 200


def test_convert_that_would_write_no_usable_rows_exits_1_and_leaves_nothing(tmp_path):
    src = tmp_path / "data"
    write_jsonl(src / "train.jsonl", [{"text": "fine"}])
    write_jsonl(src / "valid.jsonl", [{"text": 7}, {"text": ""}])  # every valid row is bad
    out = run("convert", src, "--format", "text", "--out", tmp_path / "out")
    assert out.returncode == 1 and "error:" in out.stderr and "Traceback" not in out.stderr
    assert "every row of the valid split is bad (2)" in out.stderr and f"{src / 'valid.jsonl'}:1" in out.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written, not even the folder
    # Over an earlier good conversion with --overwrite: the old files stay whole, no temp files left.
    old = tmp_path / "old"
    write_jsonl(old / "train.jsonl", [{"text": "earlier"}])
    write_jsonl(old / "valid.jsonl", [{"text": "earlier"}])
    before = {p.name: p.read_text() for p in old.iterdir()}
    out = run("convert", src, "--format", "text", "--out", old, "--overwrite")
    assert out.returncode == 1 and {p.name: p.read_text() for p in old.iterdir()} == before


def test_convert_of_only_unreadable_rows_exits_1(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"text": 3}\n')
    out = run("convert", src, "--format", "text", "--out", tmp_path / "out")
    assert out.returncode == 1 and "nested more than" in out.stderr and not (tmp_path / "out").exists()


def test_split_with_bad_fractions_is_one_clear_error(tmp_path):
    src = write_jsonl(tmp_path / "all.jsonl", [{"text": f"r{i}"} for i in range(10)])
    for fractions in ("0.8,x", "", "0.9,0.1,0", "0.5,0.6", "0.2,0.2,0.2,0.4"):
        out = run("split", src, "--out", tmp_path / "s", "--fractions", fractions)
        assert out.returncode == 1 and out.stderr.startswith(f"error: --fractions {fractions!r}") and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "s").exists()


def test_out_of_range_numbers_given_to_data_commands_are_clear_errors(tmp_path):
    log = _eval_log(tmp_path / "eval.jsonl")
    review = tmp_path / "review.jsonl"
    assert run("review", log, "--out", review).returncode == 0
    review.write_text("".join(json.dumps({**json.loads(l), "corrected": "x"}) + "\n" for l in review.read_text().splitlines()))
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}])
    cases = [
        (("failures", log, "--examples", "-1"), "--examples"),
        (("failures", log, "--pass-threshold", "nan"), "--pass-threshold"),
        (("review", log, "--out", tmp_path / "r2.jsonl", "--pass-threshold", "nan"), "--pass-threshold"),
        (("build", review, "--out", tmp_path / "b", "--keep-ratio", "-1"), "--keep-ratio"),
        (("build", review, "--out", tmp_path / "b", "--keep-ratio", "inf"), "--keep-ratio"),
        (("build", review, "--out", tmp_path / "b", "--valid-fraction", "1.5"), "--valid-fraction"),
        (("build", review, "--out", tmp_path / "b", "--valid-fraction", "-0.1"), "--valid-fraction"),
        (("validate", data, "--max-seq-length", "0"), "--max-seq-length"),
        (("show", data, "--count", "0"), "--count"),
    ]
    for args, flag in cases:
        out = run(*args)
        assert out.returncode == 1 and out.stderr.startswith("error:") and flag in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "b").exists() and not (tmp_path / "r2.jsonl").exists()


def test_review_never_writes_over_its_own_eval_log_even_with_overwrite(tmp_path):
    log = _eval_log(tmp_path / "eval.jsonl")
    original = log.read_text()
    out = run("review", log, "--out", log, "--overwrite")
    assert out.returncode == 1 and "is the input file" in out.stderr and "--force" not in out.stderr
    assert log.read_text() == original


def test_allow_outside_paths_lets_validate_and_convert_read_images_outside_the_folder(tmp_path):
    from PIL import Image

    (tmp_path / "shared").mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "shared" / "x.png")
    (tmp_path / "data" / "train").mkdir(parents=True)
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "data" / "train" / "a.png")
    meta = write_jsonl(tmp_path / "data" / "train" / "metadata.jsonl", [{"file_name": "a.png", "label": "a"}, {"file_name": "../../shared/x.png", "label": "b"}])
    out = run("validate", tmp_path / "data")
    assert out.returncode == 1 and f"{meta}:2: file_name:" in out.stdout and "--allow-outside-paths" in out.stdout
    assert run("validate", tmp_path / "data", "--allow-outside-paths").returncode == 0
    out = run("convert", tmp_path / "data", "--out", tmp_path / "out", "--allow-outside-paths")
    assert out.returncode == 0 and len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 2


def test_no_data_command_prints_a_traceback_over_hostile_inputs(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "ok"}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    deep_array = tmp_path / "deep.json"
    deep_array.write_text('[{"text": "ok"}, ' + "[" * 100_000 + "]" * 100_000 + "]")
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "ok"}\n{"text": "' + "x" * 5_000_000 + '"}\n')
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x00\xff\xfe" * 1000 + b"\n")
    log = tmp_path / "log.jsonl"
    log.write_text('{"id": 1, "prompt": ' + "[" * 100_000 + "]" * 100_000 + '}\n')
    commands = [
        ("validate", deep), ("validate", deep_array), ("validate", big), ("validate", binary), ("show", deep), ("show", big),
        ("convert", deep, "--out", tmp_path / "c1"), ("convert", binary, "--out", tmp_path / "c2"),
        ("split", deep, "--out", tmp_path / "s1"), ("split", big, "--out", tmp_path / "s2"),
        ("failures", log), ("review", log, "--out", tmp_path / "r.jsonl"), ("review", "--check", log), ("build", log, "--out", tmp_path / "b"),
    ]
    for args in commands:
        out = run(*args)
        assert "Traceback" not in out.stdout + out.stderr, (args, out.stderr[-3000:])
        assert out.returncode in (0, 1), (args, out.returncode)
    assert "over the 4 MB row limit" in run("validate", big).stdout
