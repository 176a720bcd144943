"""`mlxft data`: the failure-cluster workflow end to end from the command line, and splits."""

import json
import subprocess
import sys

from conftest import write_jsonl

MLXFT = [sys.executable, "-m", "mlxft", "data"]


def run(*args):
    return subprocess.run(MLXFT + [str(a) for a in args], capture_output=True, text=True, timeout=120)


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
