"""Data screen: validation through `mlxft data validate --json`, jump to a bad row, pages of rows, stats, split, and the review workflow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import write_jsonl
from textual.widgets import DataTable, Input, Select, Static, TabbedContent, TextArea

from tui.app import MlxftApp
from tui.screens.data import BrowsePane, ReviewPane
from tui.widgets.bars import BarChart
from tui.widgets.dialogs import ConfirmDialog, ErrorDialog

pytestmark = pytest.mark.anyio
SIZE = (100, 32)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def eval_log(path: Path) -> Path:
    rows = []
    for i in range(8):
        fails = i % 2 == 1
        rows.append({"id": f"q{i}", "prompt": f"What is {i} plus {i}?", "answer": str(2 * i + fails), "expected": str(2 * i),
                     "grade": not fails, "failure": ("arithmetic" if i < 5 else "format") if fails else None})
    return write_jsonl(path, rows)


async def open_data(pilot, path: str, model: str | None = None) -> None:
    screen = pilot.app.screen
    screen.query_one("#data-path", Input).value = path
    if model:
        screen.query_one("#data-model", Input).value = model
    await pilot.click("#data-open-button")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_first_cluster(pilot) -> ReviewPane:
    """Review tab -> load the prefilled eval log -> enter on the first failure cluster."""
    pilot.app.screen.action_show_tab("review")
    pane = pilot.app.screen.query_one(ReviewPane)
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()
    return pane


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (markup strings as they are)."""
    from rich.console import Console

    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_every_bad_row_is_listed_and_enter_shows_it_in_browse(tmp_path):
    data = tmp_path / "data"
    (data).mkdir()
    (data / "train.jsonl").write_text(json.dumps(chat("hi", "hello")) + "\n{broken\n" + json.dumps({"messages": [{"role": "assistant", "content": "x"}]}) + "\n")
    write_jsonl(data / "valid.jsonl", [chat("hi", "hello")])
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(data))
        screen = app.screen
        rows = cells(screen.query_one("#report-findings", DataTable))
        assert [r[2] for r in rows if "bad" in r[0]] == ["train.jsonl:2", "train.jsonl:3"]
        assert any(r[0] == "leak" and r[2] == "valid.jsonl:1" for r in rows)  # the valid row repeats train's
        assert "NOT usable" in text_of(screen.query_one("#report-verdict", Static))
        assert "2 bad" in text_of(screen.query_one("#data-summary", Static))

        table = screen.query_one("#report-findings", DataTable)
        table.focus()
        table.move_cursor(row=1)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query_one(TabbedContent).active == "tab-browse"
        browse = screen.query_one(BrowsePane)
        assert browse.query_one("#browse-rows", DataTable).cursor_row == 2
        detail = text_of(browse.query_one("#browse-detail", Static))
        assert f"{data}/train.jsonl:3" in detail and "messages[0]" in detail


async def test_a_missing_path_is_an_error_dialog_naming_it(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(tmp_path / "nowhere.jsonl"))
        assert isinstance(app.screen, ErrorDialog)
        assert "nowhere.jsonl: no such file or folder" in app.screen.message and app.screen.hint


async def test_browse_reads_a_page_at_a_time_and_renders_chat_as_turns(tmp_path):
    write_jsonl(tmp_path / "big" / "train.jsonl", [chat(f"question {i}", f"answer {i}") for i in range(450)])
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(tmp_path / "big"))
        app.screen.action_show_tab("browse")
        browse = app.screen.query_one(BrowsePane)
        table = browse.query_one("#browse-rows", DataTable)
        assert table.row_count == 200 and "rows 1-200 of 450" in text_of(browse.query_one("#browse-page"))
        await pilot.press("right_square_bracket")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert cells(table)[0] == ["201", "question 200 → answer 200"]
        await pilot.press("right_square_bracket")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert table.row_count == 50 and "rows 401-450 of 450" in text_of(browse.query_one("#browse-page"))
        detail = text_of(browse.query_one("#browse-detail", Static))
        assert "user" in detail and "question 400" in detail and "assistant" in detail and "answer 400" in detail


async def test_token_lengths_from_a_model_draw_a_histogram_and_labels_their_balance(tmp_path, tiny_llama):
    rows = [{"text": "one two " * (1 + i % 7), "label": "pos" if i % 4 else "neg"} for i in range(40)]
    write_jsonl(tmp_path / "cls" / "train.jsonl", rows)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(tmp_path / "cls"), model=str(tiny_llama))
        app.screen.action_show_tab("stats")
        await pilot.pause()
        hist, labels = app.screen.query(BarChart)
        assert sum(b.value for b in hist.bars) == 40 and len(hist.bars) > 1
        assert [(b.label, b.value, b.note) for b in labels.bars] == [("pos", 30, "75%"), ("neg", 10, "25%")]
        assert "█" in str(hist.render())


async def test_label_balance_becomes_the_train_forms_classifier_and_class_weights(tmp_path):
    """Stats shows the weights the balance gives; `w` makes Train an lm-classify recipe on this data with those weights."""
    from tui.widgets.recipe_form import RecipeForm

    rows = [{"text": f"review number {i}", "label": "pos" if i % 4 else "neg"} for i in range(40)]
    write_jsonl(tmp_path / "cls" / "train.jsonl", rows)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(tmp_path / "cls"))
        app.screen.action_show_tab("stats")
        await pilot.pause()
        shown = " ".join(str(w.render()) for w in app.screen.query("StatsPane Label"))
        assert "neg 2.00 · pos 0.67" in shown and "3.0x" in shown  # 40 / (2 * 10), 40 / (2 * 30)
        app.screen.set_focus(None)
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("3")
        await pilot.pause()
        form = app.screen.query_one(RecipeForm)
        assert form.get_field("kind") == "lm-classify"
        assert form.get_field("data.path") == str(tmp_path / "cls")
        assert json.loads(form.get_field("classify.class_weights")) == {"neg": 2.0, "pos": 0.6667}
        form.set_field("model", "tiny")
        recipe = form.check()
        assert recipe is not None and recipe.classify.class_weights == {"neg": 2.0, "pos": 0.6667}


async def test_split_writes_the_files_and_asks_before_replacing_them(tmp_path):
    src = write_jsonl(tmp_path / "all.jsonl", [{"text": f"review {i}", "label": "pos" if i % 4 else "neg"} for i in range(40)])
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(src))
        screen = app.screen
        screen.action_show_tab("split")
        await pilot.pause()
        assert screen.query_one("#split-label", Input).value == "label"  # the data has labels: stratify by them
        assert screen.query_one("#split-out", Input).value == str(tmp_path / "split")
        await pilot.click("#split-save")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)  # offers the new split to Train
        await pilot.press("y")
        assert app.data_path == str(tmp_path / "split")
        written = {n: (tmp_path / "split" / f"{n}.jsonl").read_text() for n in ("train", "valid", "test")}
        assert sum(len(t.splitlines()) for t in written.values()) == 40
        assert [json.loads(l)["label"] for l in written["valid"].splitlines()].count("neg") == 1

        screen.query_one("#split-seed", Input).value = "7"
        await pilot.click("#split-save")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "already holds" in app.screen.question
        await pilot.press("n")  # keep the old split
        await app.workers.wait_for_complete()
        assert (tmp_path / "split" / "train.jsonl").read_text() == written["train"]


async def test_review_walks_a_cluster_saves_each_decision_and_builds_the_training_set(tmp_path):
    from mlxft.data.curation import read_review

    log = eval_log(tmp_path / "runs" / "run1" / "eval" / "run-log.jsonl")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.action_show_tab("review")
        pane = screen.query_one(ReviewPane)
        assert pane.query_one("#review-log", Input).value == str(log)  # the newest eval log under runs/
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        clusters = pane.query_one("#review-clusters", DataTable)
        assert [r[:2] for r in cells(clusters)] == [["arithmetic", "2"], ["format", "2"]]
        await pilot.press("enter")  # the first cluster
        await pilot.pause()
        assert "item 1 of 2" in text_of(pane.query_one("#review-position", Static))
        assert "What is 1 plus 1?" in text_of(pane.query_one("#review-question", Static))
        editor = pane.query_one("#review-corrected", TextArea)
        assert editor.text == "2"  # prefilled from the expected answer
        editor.load_text("two")
        await pilot.press("a")
        await pilot.pause()
        review = log.parent / "review-arithmetic.jsonl"
        assert read_review(review).items[0].corrected == "two"  # written at once
        assert "item 2 of 2" in text_of(pane.query_one("#review-position", Static))
        await pilot.press("s")
        await pilot.pause()
        result = read_review(review)
        assert (result.used, result.discarded) == (1, 1)

        await pilot.press("b")
        await pilot.pause()
        out = tmp_path / "built"
        app.screen.query_one("#build-out", Input).value = str(out)
        await pilot.click("#build")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "1 correction(s)" in app.screen.question
        await pilot.press("y")
        assert app.data_path == str(out / "sft")
        sft = [json.loads(l) for l in (out / "sft" / "train.jsonl").read_text().splitlines()]
        assert sft == [{"messages": [{"role": "user", "content": "What is 1 plus 1?"}, {"role": "assistant", "content": "two"}]}]

    # Opening the cluster again resumes the file; a file edited elsewhere meanwhile is never written over.
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_first_cluster(pilot)
        assert pane.session.resumed and pane.session.counts() == {"accepted": 1, "skipped": 0, "open": 1}
        edited = review.read_text().replace('"two"', '"2, edited by hand"')
        review.write_text(edited)
        pane.session.saved_stamp -= 1  # the clock may not tick between the two writes
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog) and "changed on disk" in app.screen.message
        assert review.read_text() == edited


async def test_an_image_row_shows_its_size_mode_and_a_preview(tmp_path):
    from PIL import Image

    for label, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.new("RGB", (24, 16), color).save(tmp_path / "imgs" / label / "a.png")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(tmp_path / "imgs"))
        app.screen.action_show_tab("browse")
        await pilot.pause()
        browse = app.screen.query_one(BrowsePane)
        assert cells(browse.query_one("#browse-rows", DataTable)) == [["cat/a.png", "[cat] a.png"], ["dog/a.png", "[dog] a.png"]]
        detail = text_of(browse.query_one("#browse-detail", Static))
        assert "24 x 16 pixels, mode RGB" in str(detail) and "▀" in str(detail)


@pytest.mark.parametrize("tab", ["report", "review"])
def test_snapshot(snap_compare, tmp_path, monkeypatch, tab):
    monkeypatch.chdir(tmp_path)  # relative paths on screen, so the picture does not depend on where tests run
    (tmp_path / "data").mkdir()
    rows = [json.dumps(chat(f"What is {i} plus {i}?", str(2 * i))) for i in range(6)]
    rows[3] = '{"messages": [{"role": "user", "content": "only a question"}]}'
    rows.insert(2, "{broken")
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    eval_log(tmp_path / "runs" / "run1" / "eval" / "run-log.jsonl")

    async def run_before(pilot):
        if tab == "report":
            await open_data(pilot, "data")
        else:
            await open_first_cluster(pilot)
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir="runs", start="data"), terminal_size=(80, 24), run_before=run_before)


async def test_quitting_with_an_unaccepted_correction_asks_first(tmp_path):
    eval_log(tmp_path / "runs" / "run1" / "eval" / "run-log.jsonl")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_first_cluster(pilot)
        pane.query_one("#review-corrected", TextArea).load_text("an edit not accepted yet")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "not accepted" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ConfirmDialog)
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code == 0


async def test_format_and_column_map_read_data_with_other_column_names(tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(12)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, str(data))
        assert "not usable" in text_of(app.screen.query_one("#data-summary", Static))  # nothing says which column is the prompt
        app.screen.query_one("#data-format", Select).value = "completion"
        app.screen.query_one("#data-map", Input).value = "prompt=question, completion=answer"
        await open_data(pilot, str(data))
        summary = text_of(app.screen.query_one("#data-summary", Static))
        assert "format completion" in summary and "usable" in summary and "not usable" not in summary
        app.screen.query_one("#data-map", Input).value = "prompt"
        await pilot.click("#data-open-button")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog) and "column=your_column" in app.screen.message


async def test_a_relative_image_folder_validates_like_its_absolute_path(tmp_path, monkeypatch):
    from PIL import Image

    for split in ("train", "val"):
        for label, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            (tmp_path / "pets" / split / label).mkdir(parents=True)
            Image.new("RGB", (24, 16), color if split == "train" else color[::-1]).save(tmp_path / "pets" / split / label / "a.png")
    monkeypatch.chdir(tmp_path)  # the screen's validation runs from here, as a person's would
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=SIZE) as pilot:
        await open_data(pilot, "pets")
        summary = text_of(app.screen.query_one("#data-summary", Static))
        assert "train 2" in summary and "valid 2" in summary and "bad" not in summary and "not usable" not in summary
        app.screen.action_show_tab("browse")
        await pilot.pause()
        detail = text_of(app.screen.query_one(BrowsePane).query_one("#browse-detail", Static))
        assert "24 x 16 pixels, mode RGB" in detail
