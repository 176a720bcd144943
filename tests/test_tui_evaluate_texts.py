"""Evaluate screen for text classifiers (lm-classify runs), by keyboard at 80x24: pick the run, ctrl+g runs the real
`mlxft eval RUN --split test` child, and every tab shows what it wrote: accuracy and macro F1 next to the zero-shot
base, ROC AUC and calibration; base-vs-tuned regressions and fixes by text; per-class report and both confusion
matrices; the misclassified texts, most confident first."""

from __future__ import annotations

import json
import random

import pytest
from textual.widgets import DataTable, Input, Select, TabbedContent

from conftest import write_jsonl
from mlxft.api import train
from tests.test_lm_classify import classify_recipe, colour_row
from tests.test_tui_evaluate_images import cells, inside, pick_run, table_text, text_of
from tui.app import MlxftApp

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def text_run(tiny_llama, tmp_path_factory):
    """A barely trained verbalizer classifier (so it makes mistakes) with a zero-shot base (label words given)."""
    root = tmp_path_factory.mktemp("text-eval")
    rng = random.Random(1)
    for split, n in (("train", 48), ("valid", 16), ("test", 24)):
        write_jsonl(root / "colours" / f"{split}.jsonl", [colour_row(rng) for _ in range(n)])
    run = train(classify_recipe(tiny_llama, root / "colours", root / "runs", classify={"head": "verbalizer"},
                                train={"steps": 2, "eval_every": None, "save_every": None, "best_metric": "loss"}))
    assert run.ok, run.error
    return {"runs": root / "runs", "run": run.path}


async def test_a_text_classifiers_evaluation_runs_from_the_form_and_fills_every_tab(text_run):
    app = MlxftApp(runs_dir=text_run["runs"], start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pick_run(pilot, 1)  # the first run: the list opens on it
        assert screen.query_one("#eval-runs", Select).value == str(text_run["run"])
        # The form asks for data and split; no Against (a text run is compared with its zero-shot base), no LM fields.
        assert screen.query_one("#eval-images").display and screen.query_one("#eval-split", Input).value == "test"
        assert not screen.query_one("#eval-against").parent.display and not screen.query_one("#eval-model").parent.display
        assert str(screen.query_one("#eval-images").parent.query_one("Label").render()) == "Data"
        await pilot.press("ctrl+g")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        folder = text_run["run"] / "eval" / "test"
        summary = json.loads((folder / "summary.json").read_text())
        predictions = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-verdict"

        verdict = text_of(screen, "#verdict")
        acc, base = summary["accuracy"], summary["base"]["accuracy"]
        assert f"ACCURACY {100 * acc:.1f}%" in verdict and f"zero-shot base {100 * base:.1f}%" in verdict
        scores = cells(screen.query_one("#scores", DataTable))
        assert scores[0][:3] == ["accuracy", f"{100 * base:.1f}%", f"{100 * acc:.1f}%"]
        assert scores[1][:3] == ["macro F1", f"{summary['base']['macro_f1']:.3f}", f"{summary['macro_f1']:.3f}"]
        assert any(r[0] == "calibration error (ECE)" and r[2] == f"{summary['ece']:.4f}" for r in scores)
        assert "reliability.png" in text_of(screen, "#verdict-facts")
        assert inside(screen, "#verdict")

        await pilot.press("c")
        worse = [p for p in predictions if p["base_predicted"] == p["label"] != p["predicted"]]
        better = [p for p in predictions if p["base_predicted"] != p["label"] == p["predicted"]]
        assert screen.query_one("#regressions", DataTable).row_count == len(worse)
        assert screen.query_one("#fixes", DataTable).row_count == len(better)
        assert f"Regressions ({len(worse)}): base right → tuned wrong" in str(screen.query_one("#regressions-title").render())
        if worse or better:
            first = (worse or better)[0]
            assert first["text"] in text_of(screen, "#change-question")

        screen.set_focus(None)
        await pilot.press("l")
        classes = cells(screen.query_one("#class-table", DataTable))
        assert [r[0] for r in classes] == list(summary["per_class"])
        assert classes[0][1] == str(summary["per_class"][classes[0][0]]["support"])
        assert "tuned: accuracy" in table_text(screen, "#confusion-base") and "zero-shot base: accuracy" in table_text(screen, "#confusion-tuned")

        await pilot.press("m")
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-mistakes"
        wrong = sorted([p for p in predictions if p["predicted"] != p["label"]], key=lambda p: -max(p["probabilities"].values()))
        rows = cells(screen.query_one("#mistakes", DataTable))
        assert [r[1:3] for r in rows] == [[p["label"], p["predicted"]] for p in wrong]
        assert f"{len(wrong)} misclassified of {len(predictions)} (test)" in str(screen.query_one("#mistakes-title").render())
        if wrong:
            assert wrong[0]["text"] in text_of(screen, "#mistake-detail")
