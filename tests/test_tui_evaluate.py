"""Evaluate screen: a real `mlxft eval` child on a tiny model, opening written results, and the comparison views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TabbedContent

from conftest import write_jsonl
from tui.app import MlxftApp
from tui.widgets.dialogs import ErrorDialog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


LABELS = ["billing", "shipping", "returns"]
# (id, expected, base answer, tuned answer, cluster): two fixes in the target cluster, one regression elsewhere.
ITEMS = [
    ("t1", "billing", "shipping", "billing", "refunds"),
    ("t2", "returns", "I am not sure", "returns", "refunds"),
    ("t3", "billing", "billing", "billing", "refunds"),
    ("r1", "shipping", "shipping", "returns", None),
    ("r2", "shipping", "shipping", "shipping", None),
    ("r3", "returns", "billing", "billing", None),
]


def write_scripted_eval(folder: Path, bench_dir: Path) -> dict:
    """Reports written by the real `write_reports` from a constructed comparison (no model needed)."""
    from mlxft.eval.bench import read_bench
    from mlxft.eval.compare import Comparison, ItemResult, decide_verdict, score_items, write_reports

    one_of = {"kind": "one-of", "labels": LABELS}
    bench = write_jsonl(bench_dir / "bench.jsonl", [
        {"id": i, "prompt": f"Which team handles ticket {i}?", "expected": e, "grader": one_of, **({"cluster": c} if c else {})} for i, e, _, _, c in ITEMS
    ])
    items = [ItemResult(i, f"Which team handles ticket {i}?", None, e, c, b, t, b == e, t == e, "" if b == e else "wrong label", "" if t == e else "wrong label")
             for i, e, b, t, c in ITEMS]
    target, rest = score_items(items, ["refunds"])
    verdict = decide_verdict(target, rest, ["refunds"])
    regressions = [r for r in items if r.base_passed and not r.tuned_passed]
    c = Comparison(model="tiny-model", adapter="runs/support/adapter", bench="bench.jsonl", targets=["refunds"], target=target, rest=rest,
                   items=items, verdict=verdict.key, verdict_text=verdict.text, seed=0, settings={"max_tokens": 16, "batch_size": 8, "temperature": 0.0},
                   regression_clusters={"(no cluster)": len(regressions)}, bench_items=read_bench(bench))
    return write_reports(c, folder)


def cell_text(table: DataTable, row: int) -> list[str]:
    return [str(v) for v in table.get_row_at(row)]


async def open_folder(pilot, folder: str) -> None:
    pilot.app.screen.query_one("#eval-out", Input).value = folder
    await pilot.press("ctrl+o")
    await pilot.pause()


async def test_opening_an_eval_folder_shows_verdict_scores_regressions_and_fixes(tmp_path):
    write_scripted_eval(tmp_path / "eval", tmp_path)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await open_folder(pilot, str(tmp_path / "eval"))
        screen = app.screen
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-verdict"
        verdict = str(screen.query_one("#verdict", Static).render())
        assert "INVESTIGATE" in verdict and "+66.7 pts on the target refunds (33.3% -> 100.0%, 2 fixes, 0 regressions)" in verdict
        assert "-33.3 pts on the rest (66.7% -> 33.3%, 0 fixes, 1 regression)" in verdict and "read the regression before shipping" in verdict
        scores = screen.query_one("#scores", DataTable)
        assert cell_text(scores, 0) == ["target (refunds)", "3", "33.3%", "100.0%", "+66.7 pts"]
        assert cell_text(scores, 1) == ["rest", "3", "66.7%", "33.3%", "-33.3 pts"]
        regressions, fixes = screen.query_one("#regressions", DataTable), screen.query_one("#fixes", DataTable)
        assert [cell_text(regressions, i)[0] for i in range(regressions.row_count)] == ["r1"]
        assert [cell_text(fixes, i)[0] for i in range(fixes.row_count)] == ["t1", "t2"]

        screen.query_one("#eval-tabs", TabbedContent).active = "tab-changes"
        await pilot.pause()
        # The first regression is shown with both answers side by side.
        assert "r1" in str(screen.query_one("#change-question", Static).render())
        assert "returns" in str(screen.query_one("#change-tuned", Static).render())
        fixes.focus()
        fixes.move_cursor(row=1)
        await pilot.pause()
        assert "I am not sure" in str(screen.query_one("#change-base", Static).render())

        # One-of benchmark: per-class report and both confusion matrices.
        classes = screen.query_one("#class-table", DataTable)
        assert [cell_text(classes, i)[0] for i in range(3)] == LABELS
        assert cell_text(classes, 0)[1] == "2"  # billing support
        assert "PNG" in str(screen.query_one("#confusion-paths", Static).render())


async def test_results_without_clusters_judge_the_whole_benchmark_and_show_no_rest(tmp_path):
    from mlxft.eval.compare import Comparison, ItemResult, decide_verdict, score_items, write_reports

    # 3 fixes and 1 regression on a benchmark with no cluster column.
    items = [ItemResult(f"q{i}", f"question {i}", None, "yes", None, b, t, b == "yes", t == "yes", "", "")
             for i, (b, t) in enumerate([("no", "yes")] * 3 + [("yes", "no"), ("yes", "yes")])]
    target, rest = score_items(items, [])
    verdict = decide_verdict(target, rest, [])
    write_reports(Comparison(model="m", adapter="a", bench="b.jsonl", targets=[], target=target, rest=rest, items=items, verdict=verdict.key,
                             verdict_text=verdict.text, seed=0, settings={"max_tokens": 8}), tmp_path / "eval")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await open_folder(pilot, str(tmp_path / "eval"))
        verdict = str(app.screen.query_one("#verdict", Static).render())
        assert "INVESTIGATE" in verdict and "+40.0 pts on the whole benchmark (40.0% -> 80.0%, 3 fixes, 1 regression)" in verdict
        scores = app.screen.query_one("#scores", DataTable)
        assert scores.row_count == 1 and cell_text(scores, 0) == ["whole benchmark", "5", "40.0%", "80.0%", "+40.0 pts"]


async def test_terminal_escapes_in_the_benchmark_and_answers_are_shown_escaped(tmp_path):
    from mlxft.eval.compare import Comparison, ItemResult, decide_verdict, score_items, write_reports

    pwn = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"
    # One fix and one regression, in a cluster whose name, ids, prompts and answers all carry escapes.
    items = [ItemResult(f"q{i}{pwn}", f"prompt {pwn}", None, f"yes{pwn}", f"c{pwn}", b, t, b == f"yes{pwn}", t == f"yes{pwn}", f"why{pwn}", f"why{pwn}")
             for i, (b, t) in enumerate([(f"no{pwn}", f"yes{pwn}"), (f"yes{pwn}", f"no{pwn}\nsecond line")])]
    target, rest = score_items(items, [f"c{pwn}"])
    verdict = decide_verdict(target, rest, [f"c{pwn}"])
    write_reports(Comparison(model=f"m{pwn}", adapter="a", bench="b.jsonl", targets=[f"c{pwn}"], target=target, rest=rest, items=items,
                             verdict=verdict.key, verdict_text=verdict.text, seed=0, settings={"max_tokens": 8},
                             regression_clusters={f"c{pwn}": 1}), tmp_path / "eval")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await open_folder(pilot, str(tmp_path / "eval"))
        screen = app.screen
        shown = [str(screen.query_one(f"#{name}", Static).render()) for name in ("verdict", "verdict-facts", "change-question", "change-base", "change-tuned")]
        for table in ("#scores", "#regressions", "#fixes"):
            t = screen.query_one(table, DataTable)
            shown += [" ".join(cell_text(t, i)) for i in range(t.row_count)]
        for text in shown:
            assert not any(c in text for c in ("\x1b", "\x07", "\x9b", "\u202e")), text
        assert any("target (c\\x1b]0;pwned" in t for t in shown)  # shown, as visible escapes
        assert "second line" in str(screen.query_one("#change-tuned", Static).render()).splitlines()[-1]


async def test_a_folder_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await open_folder(pilot, str(tmp_path / "empty"))
        assert isinstance(app.screen, ErrorDialog)
        assert "no summary.json" in app.screen.message


async def test_run_with_empty_fields_names_every_missing_field(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        for name in ("Model", "Adapter", "Benchmark"):
            assert f"{name}: empty" in app.screen.message


async def test_picking_a_run_fills_the_form_and_shows_its_last_evaluation(tmp_path):
    run = tmp_path / "runs" / "support-lora"
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text("kind: lm-lora\n")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "RunStarted", "run_dir": str(run), "model": "tiny-model", "method": "lora", "total_steps": 10,
                                                   "trainable_parameters": 1, "total_parameters": 2, "train_samples": 4, "valid_samples": 0,
                                                   "compute_dtype": "float32", "device": "cpu", "time": 1.0}) + "\n")
    write_scripted_eval(run / "eval", tmp_path)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        screen.query_one("#eval-runs", Select).value = str(run)
        await pilot.pause()
        assert screen.query_one("#eval-adapter", Input).value == str(run)
        assert screen.query_one("#eval-model", Input).value == "tiny-model"
        assert screen.query_one("#eval-out", Input).value == str(run / "eval")
        assert "INVESTIGATE" in str(screen.query_one("#verdict", Static).render())
        app.select_model("other-model")  # picked on Models: Evaluate follows
        assert screen.query_one("#eval-model", Input).value == "other-model"


@pytest.fixture(scope="module")
def tiny_eval(tiny_llama, tmp_path_factory):
    from tiny import build_adapter

    root = tmp_path_factory.mktemp("tui-eval")
    adapter = build_adapter(tiny_llama, root / "adapter")
    bench = write_jsonl(root / "bench.jsonl", [{"id": f"q{i}", "prompt": f"Count to {i}.", "expected": "one", "cluster": "count" if i % 2 else "other"} for i in range(6)])
    return {"root": root, "adapter": adapter, "bench": bench}


async def test_a_real_evaluation_runs_as_a_child_and_its_results_open(tiny_llama, tiny_eval, tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        for field, value in (("model", tiny_llama), ("adapter", tiny_eval["adapter"]), ("bench", tiny_eval["bench"]),
                             ("targets", "count"), ("max-tokens", "3"), ("out", tmp_path / "eval")):
            screen.query_one(f"#eval-{field}", Input).value = str(value)
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert screen.query_one("#run").disabled  # running: Run is disabled until the child exits
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, ErrorDialog), getattr(app.screen, "message", "")
        summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
        assert summary["targets"] == ["count"] and summary["target"]["size"] == 3
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-verdict"
        assert summary["verdict"].upper() in str(screen.query_one("#verdict", Static).render())
        assert cell_text(screen.query_one("#scores", DataTable), 0)[:2] == ["target (count)", "3"]
        assert str(screen.query_one("#eval-phase").render()) == "done"
        assert screen.query_one("#eval-progress").progress == 12  # both phases of six items


async def test_a_failing_evaluation_shows_the_engine_error(tiny_llama, tiny_eval, tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        for field, value in (("model", tiny_llama), ("adapter", tiny_eval["adapter"]), ("bench", tiny_eval["bench"]), ("targets", "nonexistent")):
            screen.query_one(f"#eval-{field}", Input).value = str(value)
        await pilot.press("ctrl+g")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "no items in cluster(s) ['nonexistent']" in app.screen.message
        assert "clusters in this benchmark" in (app.screen.hint or "")


def test_snapshot_of_a_verdict(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scripted_eval(Path("eval"), Path("."))

    async def open_results(pilot):
        await open_folder(pilot, "eval")

    assert snap_compare(MlxftApp(runs_dir="runs", start="evaluate"), terminal_size=(100, 32), run_before=open_results)


def test_snapshot_of_the_confusion_matrices(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scripted_eval(Path("eval"), Path("."))

    async def open_classes(pilot):
        await open_folder(pilot, "eval")
        pilot.app.screen.query_one("#eval-tabs", TabbedContent).active = "tab-classes"
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir="runs", start="evaluate"), terminal_size=(100, 32), run_before=open_classes)


async def test_f_takes_the_failures_to_data_review(tmp_path):
    write_scripted_eval(tmp_path / "eval", tmp_path)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(100, 32)) as pilot:
        await open_folder(pilot, str(tmp_path / "eval"))
        app.screen.set_focus(None)
        await pilot.press("f")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.current_mode == "data"
        pane = app.screen.query_one("ReviewPane")
        assert pane.query_one("#review-log", Input).value == str(tmp_path / "eval" / "run-log.jsonl")
        clusters = pane.query_one("#review-clusters", DataTable)
        failing = sum(1 for _, e, _, t, _ in ITEMS if t != e)
        assert clusters.row_count >= 1
        assert sum(int(str(clusters.get_row_at(i)[1])) for i in range(clusters.row_count)) == failing  # every tuned failure is in a cluster
