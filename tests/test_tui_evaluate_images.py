"""Evaluate screen for image classifiers, by keyboard, at 80x24 and 120x36: a run's evaluation (per-class report,
accuracy, ROC AUC, confusion matrix, misclassified images) and its comparison with an earlier run; a real
`mlxft eval RUN --against RUN_A` child on tiny trained runs; opening the grid PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static, TabbedContent

from mlxft.runs import RunDir
from tests.test_vision_compare import A_ROWS, b_rows, evaluation
from tui.app import MlxftApp
from tui.widgets.dialogs import ErrorDialog

pytestmark = pytest.mark.anyio
SIZES = [(80, 24), (120, 36)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def image_run(runs: Path, name: str) -> Path:
    """A run directory the run list reads as an image-classify run (its results are written by the tests)."""
    run = runs / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("kind: image-classify\n")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "RunStarted", "run_dir": str(run), "model": "tiny-resnet", "method": "image-classify (head 4 epochs)",
                                                   "total_steps": 10, "trainable_parameters": 1, "total_parameters": 2, "train_samples": 40,
                                                   "valid_samples": 12, "compute_dtype": "float32", "device": "cpu", "time": 1.0 if name == "cnn-v1" else 2.0}) + "\n")
    return run


def on_disk(rows):
    return [(f"images/test/{true}/{img}.png", true, pred, p) for img, true, pred, p in rows]


def write_scripted_image_eval(root: Path, compare: bool = True) -> dict[str, Path]:
    """Two image runs; cnn-v2's evaluation of the test split (and its comparison with cnn-v1) written by the engine."""
    from mlxft.vision.compare import compare_evaluations, write_comparison
    from mlxft.vision.evaluate import write_evaluation

    runs = root / "runs"
    a, b = image_run(runs, "cnn-v1"), image_run(runs, "cnn-v2")
    after = evaluation(on_disk(b_rows()))
    folder = RunDir(b).eval_dir / "test"
    write_evaluation(after, folder)
    if compare:
        c = compare_evaluations(evaluation(on_disk(A_ROWS)), after, ("cnn-v1", "cnn-v2"), data="images", paths=(str(a), str(b)))
        write_comparison(c, folder)
    return {"runs": runs, "a": a, "b": b, "folder": folder}


def cells(table: DataTable) -> list[list[str]]:
    return [[str(v) for v in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def table_text(screen, selector: str) -> str:
    """A Static holding a rich Table (a confusion matrix), as the text a terminal would show."""
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(screen.query_one(selector, Static).content)
    return console.export_text()


async def pick_run(pilot, index: int) -> None:
    """Keyboard only: focus the Run list, open it (on its first run), walk down to run `index` (1: the first), choose it, leave the field."""
    screen = pilot.app.screen
    screen.query_one("#eval-runs", Select).focus()
    await pilot.press("enter")
    for _ in range(index - 1):
        await pilot.press("down")
    await pilot.press("enter", "escape")
    await pilot.pause()


def inside(screen, selector: str) -> bool:
    """The widget is drawn within the screen, above the footer, with room for at least one line."""
    region = screen.query_one(selector).region
    return region.height >= 1 and region.width >= 10 and region.bottom <= screen.size.height - 1 and region.right <= screen.size.width


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_picking_an_image_run_shows_its_comparison_on_every_tab(tmp_path, size):
    made = write_scripted_image_eval(tmp_path)
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await pick_run(pilot, 1)  # newest first: cnn-v2
        assert screen.query_one("#eval-runs", Select).value == str(made["b"])
        # The form asks for images, split and Against; the language-model fields are gone.
        assert screen.query_one("#eval-images").display and screen.query_one("#eval-against").display
        assert not screen.query_one("#eval-model").parent.display
        assert screen.query_one("#eval-against", Select).value == str(made["a"])  # the saved comparison's A

        await pilot.press("v")
        verdict = text_of(screen, "#verdict")
        assert "INVESTIGATE" in verdict and "+20.0 pts on the test split (60.0% -> 80.0%, 3 fixes, 1 regression)" in verdict
        scores = cells(screen.query_one("#scores", DataTable))
        assert scores[0] == ["accuracy", "60.0%", "80.0%", "+20.0 pts"] and scores[1][0] == "macro F1" and scores[2] == ["right of 10", "6", "8", "+2"]
        facts = text_of(screen, "#verdict-facts")
        assert "McNemar exact test on the 4 image(s)" in facts and "compare-cnn-v1.md" in facts
        for selector in ("#verdict", "#scores"):
            assert inside(screen, selector), selector

        await pilot.press("c")
        regressions, fixes = screen.query_one("#regressions", DataTable), screen.query_one("#fixes", DataTable)
        assert cells(regressions) == [["dog/d1.png", "dog", "dog 0.80", "cat 0.65"]]
        assert [r[0] for r in cells(fixes)] == ["cat/c2.png", "cat/c3.png", "dog/d4.png"]
        assert "images/test/dog/d1.png" in text_of(screen, "#change-question") and "wrong" in text_of(screen, "#change-tuned")
        assert screen.query_one("#changes-lists").has_class("-stacked") == (size[0] < 100)
        screen.query_one("#fixes", DataTable).focus()
        await pilot.press("down")  # the second fix: c3, wrong under A
        assert "images/test/cat/c3.png" in text_of(screen, "#change-question") and "predicted dog with p = 0.600" in text_of(screen, "#change-base")
        for selector in ("#regressions", "#fixes", "#change-detail"):
            assert inside(screen, selector), selector

        screen.set_focus(None)
        await pilot.press("l")
        classes = cells(screen.query_one("#class-table", DataTable))
        assert classes[0][:2] == ["cat", "5"] and classes[0][2:5] == ["0.60", "0.60", "0.60"] and classes[0][5:] == ["0.71", "1.00", "0.83"]
        assert "A: accuracy 60.0%" in table_text(screen, "#confusion-base") and "B: accuracy 80.0%" in table_text(screen, "#confusion-tuned")
        assert "(B)" in text_of(screen, "#confusion-paths") and "confusion.png" in text_of(screen, "#confusion-paths")

        await pilot.press("m")
        assert screen.query_one("#eval-tabs", TabbedContent).active == "tab-mistakes"
        mistakes = cells(screen.query_one("#mistakes", DataTable))
        assert mistakes == [["dog/d2.png", "dog", "cat", "0.70"], ["dog/d1.png", "dog", "cat", "0.65"]]  # B's, most confident first
        assert "2 misclassified of 10 (test)" in str(screen.query_one("#mistakes-title").render())
        await pilot.press("down")
        detail = text_of(screen, "#mistake-detail")
        assert "images/test/dog/d1.png" in detail and "P(cat) 0.650" in detail and "misclassified.png" in detail
        for selector in ("#mistakes", "#mistake-detail"):
            assert inside(screen, selector), selector


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_an_image_run_without_a_comparison_shows_its_report_auc_and_matrix(tmp_path, size):
    made = write_scripted_image_eval(tmp_path, compare=False)
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await pick_run(pilot, 1)
        await pilot.press("v")
        assert "ACCURACY 80.0%" in text_of(screen, "#verdict") and "2 of 10 'test' images misclassified" in text_of(screen, "#verdict")
        assert cells(screen.query_one("#scores", DataTable)) == [["accuracy", "80.0%"], ["macro F1", "0.792"], ["ROC AUC dog", "0.980"]]  # P(dog): 24.5 of 25 (dog, cat) pairs in order
        await pilot.press("l")
        classes = cells(screen.query_one("#class-table", DataTable))
        assert classes[0] == ["cat", "5", "0.71", "1.00", "0.83", ""] and classes[1] == ["dog", "5", "1.00", "0.60", "0.75", "0.980"]
        assert [r[0] for r in classes[2:]] == ["macro avg", "weighted avg"]
        matrix = table_text(screen, "#confusion-base")
        assert "test: accuracy 80.0%" in matrix and "true \\ predicted" in matrix
        assert inside(screen, "#class-table")
        await pilot.press("c")
        assert "pick an earlier image run in Against" in text_of(screen, "#change-question")


async def test_choosing_against_shows_a_saved_comparison_and_ctrl_o_opens_a_comparison_file(tmp_path):
    made = write_scripted_image_eval(tmp_path)
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#eval-out", Input).value = str(made["folder"] / "compare-cnn-v1.json")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert not isinstance(app.screen, ErrorDialog), getattr(app.screen, "message", "")
        assert "INVESTIGATE" in text_of(screen, "#verdict")
        assert cells(screen.query_one("#regressions", DataTable))[0][0] == "dog/d1.png"


async def test_the_image_form_names_what_is_wrong(tmp_path):
    made = write_scripted_image_eval(tmp_path)
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pick_run(pilot, 1)
        screen.query_one("#eval-split", Input).value = ""
        screen.query_one("#eval-images", Input).value = str(tmp_path / "nowhere")
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "Split: empty" in app.screen.message and "Images: " in app.screen.message and "is not a folder" in app.screen.message


async def test_o_opens_the_grid_and_enter_the_image_in_the_system_viewer(tmp_path, monkeypatch):
    import tui.screens.image_results as image_results

    made = write_scripted_image_eval(tmp_path)
    started = []
    monkeypatch.setattr(image_results, "viewer_command", lambda path: ["viewer", str(path)])
    monkeypatch.setattr(image_results.subprocess, "Popen", lambda command, **kw: started.append(command))
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        await pick_run(pilot, 1)
        await pilot.press("m", "o")
        assert started == [["viewer", str(made["folder"] / "misclassified.png")]]
        await pilot.press("enter")  # the highlighted mistake (the mistakes table has focus)
        assert started[-1] == ["viewer", "images/test/dog/d2.png"]
        monkeypatch.setattr(image_results, "viewer_command", lambda path: None)
        await pilot.press("o")
        assert len(started) == 2  # nothing to start; a notification says where the file is instead


async def test_f_on_image_results_stays_and_lm_results_hide_the_mistakes_tab(tmp_path):
    from tests.test_tui_evaluate import write_scripted_eval

    made = write_scripted_image_eval(tmp_path)
    write_scripted_eval(tmp_path / "lm-eval", tmp_path)
    app = MlxftApp(runs_dir=made["runs"], start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        tabs = screen.query_one("#eval-tabs", TabbedContent)
        assert tabs.get_tab("tab-mistakes").display is False  # hidden until an image evaluation shows
        await pick_run(pilot, 1)
        assert tabs.get_tab("tab-mistakes").display is True
        await pilot.press("f")
        assert app.current_mode == "evaluate"
        screen.query_one("#eval-runs", Select).clear()
        screen.set_image_mode(False)
        screen.query_one("#eval-out", Input).value = str(tmp_path / "lm-eval")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert "INVESTIGATE" in text_of(screen, "#verdict") and tabs.get_tab("tab-mistakes").display is False
        assert cells(screen.query_one("#regressions", DataTable)) == [["r1", "-", "shipping"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.image_runs import train_image_runs

    return train_image_runs(tmp_path_factory.mktemp("tui-image-runs"), which=("weak", "strong"))


async def test_a_real_comparison_runs_as_a_child_and_its_results_open(trained):
    app = MlxftApp(runs_dir=trained["root"] / "runs", start="evaluate")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await pick_run(pilot, 1)  # newest first: strong, then weak
        assert screen.query_one("#eval-runs", Select).value == str(trained["strong"])
        screen.query_one("#eval-against", Select).focus()
        await pilot.press("enter", "enter", "escape")  # the list opens on its first run: enter picks it
        assert screen.query_one("#eval-against", Select).value == str(trained["weak"])
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert screen.query_one("#run").disabled
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, ErrorDialog), getattr(app.screen, "message", "")
        c = json.loads((trained["strong"] / "eval" / "test" / "compare-weak.json").read_text())
        assert c["verdict"].upper() in text_of(screen, "#verdict")
        assert screen.query_one("#eval-progress").progress == 32  # 16 images, two classifiers
        assert len(cells(screen.query_one("#regressions", DataTable))) == len(c["regressions"])
        assert len(cells(screen.query_one("#fixes", DataTable))) == len(c["fixes"])


@pytest.mark.parametrize("key, size", [pytest.param("v", (80, 24), id="comparison-80x24"), pytest.param("m", (120, 36), id="mistakes-120x36")])
def test_snapshot_of_image_results(snap_compare, tmp_path, monkeypatch, key, size):
    monkeypatch.chdir(tmp_path)
    write_scripted_image_eval(Path("."))

    async def pick(pilot):
        await pick_run(pilot, 1)
        await pilot.press(key)

    assert snap_compare(MlxftApp(runs_dir="runs", start="evaluate"), terminal_size=size, run_before=pick)
