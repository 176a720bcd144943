"""Terminal escapes in data never reach the terminal: the one escaping rule, and every command that prints data text."""

import json

import pytest

from conftest import write_jsonl
from mlxft.cli import main
from mlxft.textsafe import dump_json, escape_controls, escape_lines

# Retitle the window, clear the screen, a C1 CSI, a right-to-left override, DEL.
PWN = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\x7f"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\x7f"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\x7f")


def assert_no_raw_controls(*texts: str) -> None:
    for text in texts:
        found = [c for c in RAW if c in text]
        assert not found, f"raw {found!r} in {text!r}"


@pytest.mark.parametrize("raw, shown", [
    (PWN, SHOWN),
    ("line\nnext\ttab\rback", "line\\nnext\\ttab\\rback"),
    ("nul\x00 bell\x07 c1\x85 del\x7f", "nul\\x00 bell\\x07 c1\\x85 del\\x7f"),
    ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c", "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c"),
    ("sep\u2028par\u2029", "sep\\u2028par\\u2029"),
    ("bad byte \udcff", "bad byte \\udcff"),
    ("Grüße, 東京, עברית, 👍🏽, a\\x1b typed out", "Grüße, 東京, עברית, 👍🏽, a\\x1b typed out"),
])
def test_control_characters_become_visible_escapes_and_other_text_is_kept(raw, shown):
    assert escape_controls(raw) == shown
    assert escape_controls(shown) == shown  # escaping twice changes nothing


def test_a_layout_may_keep_its_newlines_and_tabs_but_an_entry_cannot_forge_a_line():
    assert escape_controls("a\n\tb\x1b", keep="\n\t") == "a\n\tb\\x1b"
    assert escape_lines(["label: cat\nusable: yes", "usable: NO"]) == "label: cat\\nusable: yes\nusable: NO"


def test_json_for_a_terminal_escapes_what_json_dumps_leaves_raw_and_keeps_its_value():
    value = {"text": PWN + " 東京 \udcff", "n": 1}
    assert "\x9b" in json.dumps(value, ensure_ascii=False)  # the reason dump_json exists
    text = dump_json(value, indent=2)
    assert_no_raw_controls(text)
    assert "東京" in text and json.loads(text) == value


# -- every command that prints data text ---------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert_no_raw_controls(out, err)
    return code, out, err


def test_data_failures_review_and_build_print_no_raw_escapes(tmp_path, capsys):
    log = write_jsonl(tmp_path / "run-log.jsonl", [
        {"id": f"q{i}{PWN}", "prompt": f"prompt {PWN}", "answer": f"answer {PWN}", "expected": f"right {PWN}", "grade": False, "failure": f"cluster{PWN}"}
        for i in range(3)
    ] + [{"id": "ok", "prompt": "fine", "answer": "fine", "grade": True}])
    code, out, _ = run_cli(capsys, "data", "failures", log)
    assert code == 0 and f"cluster{SHOWN}" in out and f"[q0{SHOWN}] prompt:   prompt {SHOWN}" in out

    code, _, err = run_cli(capsys, "data", "review", log, "--cluster", "no-such", "--out", tmp_path / "review.jsonl")
    assert code == 1 and f"clusters: cluster{SHOWN}" in err

    code, out, _ = run_cli(capsys, "data", "review", log, "--out", tmp_path / "review.jsonl")
    assert code == 0 and "3 item(s) to review" in out
    review = tmp_path / "review.jsonl"
    rows = [json.loads(line) for line in review.read_text().splitlines()]
    review.write_text("".join(json.dumps({**r, "corrected": f"fixed {PWN}"}) + "\n" for r in rows))
    code, out, _ = run_cli(capsys, "data", "review", "--check", review)
    assert code == 0 and "3 correction(s) used" in out
    code, out, _ = run_cli(capsys, "data", "build", review, "--out", tmp_path / "built")
    assert code == 0 and "3 correction(s)" in out


def test_data_validate_and_show_print_no_raw_escapes(tmp_path, capsys):
    rows = [{"text": f"text {i} {PWN}", "label": f"label{PWN}" if i % 2 else "plain"} for i in range(6)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows + [rows[0], {"text": f"no label {PWN}", f"col{PWN}": 1}])
    code, out, _ = run_cli(capsys, "data", "validate", data.parent, "--format", "classification")
    assert code == 1 and f"label{SHOWN}: 3" in out and "malformed row" in out
    code, out, _ = run_cli(capsys, "data", "validate", data.parent, "--format", "classification", "--json")
    assert json.loads(out)["splits"]["train"]["labels"][f"label{PWN}"] == 3  # the same value, escaped as JSON

    code, out, err = run_cli(capsys, "data", "show", data.parent)
    assert code == 0 and "text 0 \\u001b]0;pwned\\u0007\\u001b[2J\\u009b31m\\u202eevil\\u007f" in out and "rows 1-8" in err
    code, out, _ = run_cli(capsys, "data", "show", data.parent, "--json")
    assert json.loads(out.splitlines()[0])["row"] == rows[0]


def test_runs_prints_run_names_and_models_escaped(tmp_path, capsys):
    run = tmp_path / "runs" / f"run{PWN}"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("kind: lm-lora\n")
    (run / "metrics.jsonl").write_text(json.dumps({
        "event": "RunStarted", "time": 1.0, "run_dir": str(run), "model": f"model{PWN}", "method": "lora", "total_steps": 10,
        "trainable_parameters": 1, "total_parameters": 2, "train_samples": 4, "valid_samples": 0, "compute_dtype": "float32", "device": "cpu",
    }) + "\n")
    code, out, _ = run_cli(capsys, "runs", tmp_path / "runs")
    assert code == 0 and f"run{SHOWN}" in out and f"model{SHOWN}" in out
    code, out, _ = run_cli(capsys, "runs", tmp_path / "runs", "--json")
    assert json.loads(out)[0]["model"] == f"model{PWN}"


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama, tmp_path_factory):
    from tiny import build_adapter

    return build_adapter(tiny_llama, tmp_path_factory.mktemp("textsafe") / "adapter")


def test_eval_prints_and_reports_no_raw_escapes(tiny_llama, tiny_adapter, tmp_path, capsys):
    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"id": f"q{i}{PWN}", "prompt": f"Count to {i}. {PWN}", "expected": f"one {PWN}", **({"cluster": f"count{PWN}"} if i % 2 else {})}
        for i in range(4)
    ])
    code, out, err = run_cli(capsys, "eval", "--model", tiny_llama, "--adapter", tiny_adapter, "--bench", bench, "--max-tokens", 3, "--out", tmp_path / "eval")
    assert code == 0 and f"target (count{SHOWN})" in out and "verdict:" in out
    report = (tmp_path / "eval" / "report.md").read_text()
    assert_no_raw_controls(report)
    assert f"| target (count{SHOWN}) | 2 |" in report and f"cluster targeted: count{SHOWN} (2 items)" in report
    assert_no_raw_controls((tmp_path / "eval" / "summary.json").read_text())

    code, _, err = run_cli(capsys, "eval", "--model", tiny_llama, "--adapter", tiny_adapter, "--bench", bench, "--target", f"x{PWN}")
    assert code == 1 and f"clusters in this benchmark: count{SHOWN}" in err
