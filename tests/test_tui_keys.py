"""The app at the keyboard: help that shows, keys that do what the footer says, results shown, choices that stick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_jsonl
from textual import events
from textual.widgets import Checkbox, DataTable, Input, Label, ProgressBar, Select, Sparkline, Static, TabbedContent

from mlxft.events import StepReport, event_to_dict
from tui.app import MlxftApp
from tui.picks import PICKS_FILE
from tui.runner import TrainProcess
from tui.widgets.dialogs import AskDialog, ErrorDialog
from tui.widgets.nav import KeyFooter, in_field
from tui.widgets.recipe_form import RecipeForm

pytestmark = pytest.mark.anyio
SIZES = [(80, 24), (120, 36)]
# Every screen and tab, as (mode, what shows the tab) — the pictures and the footer checks walk them all.
VIEWS = [("models", None), ("models", "vision"), *(("data", t) for t in ("report", "browse", "stats", "split", "review")),
         *(("train", t) for t in ("tab-recipe", "tab-run", "tab-runs")), *(("evaluate", t) for t in ("tab-setup", "tab-verdict", "tab-changes", "tab-classes")),
         ("chat", None)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def quiet_env(tmp_path, monkeypatch):
    """No caches, memory or folders of this machine: the same screens everywhere."""
    monkeypatch.setenv("MLXFT_MEMORY_GB", "16")
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("mlxft.llm.memory.default_device_is_gpu", lambda: False)
    monkeypatch.chdir(tmp_path)


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def show(pilot, mode: str, tab: str | None) -> None:
    """Go to a screen (and tab) the way a person does, by keys."""
    app = pilot.app
    app.screen.set_focus(None)
    await pilot.press(str([m for m in app.MODES].index(mode) + 1))
    await settle(pilot)
    screen = app.screen
    if mode == "models" and tab == "vision":
        await pilot.press("k")
    elif mode == "data" and tab:
        screen.action_show_tab(tab)
    elif tab:
        screen.set_focus(None)
        screen.query_one(TabbedContent).active = tab
    await settle(pilot)


def footer_keys(app) -> dict[str, str]:
    """What the footer shows now: key as displayed -> description."""
    footer = app.screen.query_one(KeyFooter)
    return {k.key_display: k.description for k in footer.query("FooterKey")}


async def footer_shows(pilot, condition, what: str, limit_s: float = 10.0) -> dict[str, str]:
    """The footer once `condition(keys)` holds: it recomposes a few frames after a focus change, and a loaded machine
    can look in between (it then shows no keys at all). A deadline for a footer that never changes, not a speed test."""
    import time

    deadline = time.monotonic() + limit_s
    while not condition(keys := footer_keys(pilot.app)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the footer never showed {what}: {keys}")
        await pilot.pause(0.05)
    return keys


def footer_problems(app) -> list[str]:
    """Footer entries that are cut or hidden: each must lie whole on screen, left of the pinned Help and Quit."""
    footer = app.screen.query_one(KeyFooter)
    pinned = footer.query(".footer-pinned")
    problems = []
    if not pinned:  # only while a field has focus, where ? and q are typed into it (ctrl+q still quits)
        if not in_field(app.focused):
            problems.append("no Help/Quit")
        edge = app.size.width
    else:
        edge = pinned.first().region.x
        if pinned.first().region.right > app.size.width or pinned.first().region.width < len("? Help q Quit"):
            problems.append(f"Help/Quit at {pinned.first().region}")
    for key in footer.query("FooterKey"):
        if pinned and key.parent is pinned.first():
            continue
        if key.region.width < len(f"{key.key_display} {key.description}") or key.region.right > edge:
            problems.append(f"{key.key_display} {key.description!r} at {key.region}, room to x={edge}")
    return problems


def look(widget) -> list:
    """The cells of the screen the widget covers (its children included), with their styles, as drawn."""
    region = widget.region
    strips = widget.screen._compositor.render_strips()[region.y:region.bottom]
    return [(s.text, s.style) for strip in strips for s in strip.crop(region.x, region.right)]


def write_run(root: Path, name: str, recipe: dict, events: list[dict] = ()) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def lm_run(root: Path, name: str, steps: int = 30) -> Path:
    return write_run(root, name, {"kind": "lm-lora", "model": "smollm2-135m-instruct", "data": {"path": "data"}, "train": {"steps": steps}})


# -- help -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_the_focused_fields_help_shows_at_every_width(tmp_path, size):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        screen = app.screen
        form = screen.query_one(RecipeForm)
        steps = next(s for s in form.specs if s.key == "train.early_stopping_patience")
        screen.query_one("#" + steps.dom_id).focus()
        await pilot.pause()
        line = screen.query_one("#field-help", Static)
        assert str(line.render()).startswith("train.early_stopping_patience (default null): ") and steps.help[:30] in str(line.render())
        assert line.region.height >= 2 and line.region.right <= size[0] and line.region.y < size[1] - 1  # on screen, above the footer
        # the longest field name is whole, not run into its input ("early_stopping_patiedefault: null")
        name = screen.query_one(f"#row-{steps.dom_id} .field-name", Label)
        assert name.region.width > len("early_stopping_patience")


# -- screens by digits and alt+digits; esc only from a field ---------------------------------------------------


async def test_digits_switch_screens_only_outside_fields_and_alt_digits_from_anywhere(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "3")  # Data opens with no field focused: the 3 is a key, not text in the path field
        await settle(pilot)
        assert app.current_mode == "train"
        assert app._screen_if_made("data").query_one("#data-path", Input).value == ""
        screen = app.screen
        await footer_shows(pilot, lambda k: "escape" not in k and k.get("e/v/l") == "Tabs", "the form's tab keys")
        kind = screen.query_one("#f-kind", Select)
        kind.focus()
        await footer_shows(pilot, lambda k: k.get("esc") == "Leave field" and "e/v/l" not in k, "esc Leave field, without the tab keys")
        await pilot.press("4")  # a digit in the form is no screen switch
        await pilot.pause()
        assert app.current_mode == "train"
        screen.query_one("#f-trust-remote-code", Checkbox).focus()
        await pilot.press("4", "v")
        await pilot.pause()
        assert app.current_mode == "train" and screen.query_one(TabbedContent).active == "tab-recipe"
        await pilot.press("alt+4")  # from a field too
        await settle(pilot)
        assert app.current_mode == "evaluate"
        app.screen.query_one("#eval-model", Input).focus()
        await pilot.press("alt+3")
        await settle(pilot)
        assert app.current_mode == "train"
        await pilot.press("escape")
        await footer_shows(pilot, lambda k: bool(k) and "esc" not in k, "its keys without esc")
        assert app.focused is None


async def test_keys_typed_while_a_screen_is_built_go_to_that_screen(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        models = app.screen
        for key in ("3", "k", "l"):  # typed at once: Train is still being built when k and l arrive
            app._driver.send_message(events.Key(key, key))
        await settle(pilot)
        assert app.current_mode == "train"
        assert models.kind == "llm"  # k (Models: switch kind) did not reach the screen left behind
        assert app.screen.query_one(TabbedContent).active == "tab-runs"  # l reached Train, once it was ready


@pytest.mark.parametrize("typed", ["\x1b{n}", "{char}"])  # ESC+digit (xterm, tmux, WezTerm); the character itself (Terminal.app)
async def test_alt_digits_as_a_terminal_sends_them_switch_screens_from_a_field(tmp_path, typed):
    from textual._xterm_parser import XTermParser

    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        field = app.screen.query_one("#data-path", Input)
        field.focus()
        for n, mode, char in ((3, "train", "£"), (4, "evaluate", "¢"), (2, "data", "™")):
            keys = list(XTermParser().feed(typed.format(n=n, char=char)))  # the bytes a terminal writes, through Textual's reader
            assert keys and all(isinstance(k, events.Key) for k in keys)
            for key in keys:
                app._driver.send_message(key)
            await settle(pilot)
            assert app.current_mode == mode, (typed, n, [k.key for k in keys])
        assert field.value == ""  # nothing was typed into the field on the way


async def test_the_train_form_builds_only_the_kinds_sections_and_keeps_values_given_to_the_others(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        form = app.screen.query_one(RecipeForm)
        built = {row.spec.key.split(".")[0] for row in form.query("FieldRow") if "." in row.spec.key}
        assert built == {"data", "lora", "train"}  # an LM adapter's sections: no vision, classify, preference or QLoRA fields
        assert len(list(app.screen.walk_children())) < 500  # every field of every kind was ~700 widgets and 5 s to open here
        assert not form.query("#f-vision-image-size")
        form.set_field("vision.image_size", 96)  # given before its section exists (Data -> Train does this)
        assert form.get_field("vision.image_size") == "96"
        form.set_field("kind", "image-classify")
        await settle(pilot)
        size = form.query_one("#f-vision-image-size", Input)
        assert size.value == "96" and size.region.height  # built with the value it was given, and on screen in its section
        assert not form.query_one("#sec-lora").display and form.query_one("#sec-vision").display
        assert form.values()["vision"]["image_size"] == 96 and "lora" not in form.values()
        form.set_field("kind", "lm-qlora")
        await settle(pilot)
        assert not form.query_one("#sec-vision").display and form.query_one("#sec-quantize").display
        assert "vision" not in form.values() and form.get_field("vision.image_size") == "96"  # hidden, not dropped
        form.set_values({"kind": "lm-classify", "model": "m", "classify": {"head": "verbalizer"}})  # a loaded recipe
        await settle(pilot)
        assert form.query_one("#f-classify-head", Select).value == "verbalizer" and form.query_one("#sec-classify").display
        assert form.values()["classify"]["head"] == "verbalizer"


# -- focus shows --------------------------------------------------------------------------------------------


async def test_every_focusable_widget_shows_its_focus(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data.write_text(json.dumps(good) + "\n{broken\n" + json.dumps(good) + "\n")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        screen.query_one("#data-path", Input).value = str(data.parent)
        await pilot.press("ctrl+o")
        await settle(pilot)
        table = screen.query_one("#report-findings", DataTable)
        assert table.row_count and app.focused is table  # the problems are in front, enter works at once
        focused = look(table)
        screen.set_focus(None)
        await pilot.pause()
        assert look(table) != focused
        for mode in ("models", "data", "train", "evaluate", "chat"):
            await show(pilot, mode, None)
            screen = app.screen
            seen = set()  # one widget of each kind per screen: the form's eighty inputs share one look
            for widget in [w for w in screen.focus_chain if w.region.width and w.region.height]:
                if (type(widget), type(widget.parent)) in seen:
                    continue
                seen.add((type(widget), type(widget.parent)))
                screen.set_focus(None)
                await pilot.pause()
                before = look(widget)
                widget.focus()
                await pilot.pause()
                if app.focused is not widget:
                    continue  # it turns focus down (a scroll area with nothing to scroll): tab passes it by
                assert look(widget) != before, f"{mode}: {widget!r} looks the same with and without focus"


# -- the footer: every key shown, one meaning each, nothing cut ----------------------------------------------


async def test_the_footer_names_the_screen_keys_and_ctrl_t_always_stops(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        expected = {"train": {"e/v/l": "Tabs"}, "evaluate": {"s/v/c/l": "Tabs"}, "data": {"F2-F6": "Tabs"}, "models": {"s/S": "Sort"}}
        for mode, keys in expected.items():
            await show(pilot, mode, None)
            shown = await footer_shows(pilot, lambda k: keys.items() <= k.items(), f"{mode}'s keys {keys}")
            assert shown.get("?") == "Help" and shown.get("q") == "Quit"
        meanings = {}
        for mode in app.MODES:
            await show(pilot, mode, None)
            meanings.update({mode: b.description for b in app.screen.BINDINGS if b.key == "ctrl+t"})
        assert set(meanings) == {"data", "evaluate", "chat"} and set(meanings.values()) == {"Stop"}


@pytest.mark.parametrize("size", SIZES)
async def test_no_footer_key_is_cut_on_any_screen_or_tab(tmp_path, size):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for mode, tab in VIEWS:
            await show(pilot, mode, tab)
            assert not footer_problems(app), (mode, tab, footer_problems(app))
            # and with a field focused (esc Leave field joins in)
            field = next((w for w in app.screen.focus_chain if isinstance(w, (Input, Select))), None)
            if field is not None:
                field.focus()
                await pilot.pause()
                assert not footer_problems(app), (mode, tab, "field", footer_problems(app))


@pytest.mark.parametrize("size", SIZES)
async def test_review_buttons_and_the_evaluate_status_stay_on_screen(tmp_path, size):
    rows = [{"id": f"q{i}", "prompt": f"What is {i} plus {i}?" + " Explain." * 40, "answer": "no", "expected": str(2 * i), "grade": False,
             "failure": "arithmetic"} for i in range(3)]
    write_jsonl(tmp_path / "runs" / "run1" / "eval" / "run-log.jsonl", rows)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=size) as pilot:
        app.screen.action_show_tab("review")
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        for button in app.screen.query("#review-buttons Button"):
            assert button.region.height and button.region.bottom <= size[1] - 1, button  # above the footer, not scrolled away
        await show(pilot, "evaluate", "tab-setup")
        long = "$ mlxft eval --model " + "m" * 60 + " --adapter " + "a" * 60
        app.screen.set_status(long)
        await pilot.pause()
        status = app.screen.query_one("#eval-status", Label)
        assert status.region.width <= size[0] and status.region.height * status.region.width >= len(long)


@pytest.mark.parametrize(("mode", "tab"), VIEWS)
def test_snapshot_of_every_screen_and_tab_at_80x24(snap_compare, tmp_path, mode, tab):
    async def run_before(pilot):
        await show(pilot, mode, tab)
        pilot.app.screen.set_focus(None)
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir="runs", start="models"), terminal_size=(80, 24), run_before=run_before)


# -- to the result ---------------------------------------------------------------------------------------


async def test_results_show_on_the_verdict_tab_and_a_new_data_set_on_report(tmp_path):
    from test_tui_evaluate import write_scripted_eval

    write_scripted_eval(tmp_path / "eval", tmp_path)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="evaluate")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        out = screen.query_one("#eval-out", Input)
        out.value = str(tmp_path / "eval")
        out.focus()  # a Setup field has focus when the results arrive
        await pilot.pause()
        screen.open_results(tmp_path / "eval")
        await settle(pilot)
        assert screen.query_one(TabbedContent).active == "tab-verdict"
        assert not screen.query_one("#tab-setup").has_focus_within
        write_jsonl(tmp_path / "a" / "train.jsonl", [{"text": "one"}, {"text": "two"}])
        write_jsonl(tmp_path / "b" / "train.jsonl", [{"text": "three"}])
        await show(pilot, "data", None)
        data = app.screen
        for folder in ("a", "b"):
            data.action_show_tab("browse")  # whatever tab is open ...
            data.query_one("#data-path", Input).value = str(tmp_path / folder)
            await pilot.press("ctrl+o")
            await settle(pilot)
            assert data.query_one(TabbedContent).active == "tab-report"  # ... the new data set's report shows
        assert "usable for training" in str(data.query_one("#report-verdict", Static).render())


# -- choices that stick ------------------------------------------------------------------------------------


async def test_picks_are_remembered_per_runs_folder_and_shown_as_last_used(tmp_path):
    runs = tmp_path / "runs"
    run = lm_run(runs, "done")
    app = MlxftApp(runs_dir=runs, start="models")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.select_model("qwen3-0.6b")
        app.use_data(str(tmp_path / "data"), "chat")
        app.use_run(run, "smollm2-135m-instruct")
        await pilot.pause()
    saved = json.loads((runs / PICKS_FILE).read_text())
    assert saved["model"] == "qwen3-0.6b" and saved["data"] == str(tmp_path / "data") and saved["run"] == str(run)
    app = MlxftApp(runs_dir=runs, start="models")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert "in use qwen3-0.6b (last used)" in str(app.screen.query_one("#models-header", Label).render())
        await show(pilot, "evaluate", None)
        assert app.screen.query_one("#eval-runs", Select).value == str(run)
        assert "last used here" in str(app.screen.query_one("#eval-status", Label).render())
        await show(pilot, "chat", None)
        assert app.screen.query_one("#chat-adapter", Input).value == str(run)
        assert app.screen.query_one("#chat-model", Input).value == "smollm2-135m-instruct"
        assert "last used" in str(app.screen.query_one("#chat-state", Label).render())
        await show(pilot, "train", None)
        assert app.screen.query_one(RecipeForm).get_field("model") == "qwen3-0.6b"
        await show(pilot, "data", None)
        assert app.screen.query_one("#data-path", Input).value == str(tmp_path / "data")
        assert "last used data" in str(app.screen.query_one("#data-summary", Static).render())
    other = MlxftApp(runs_dir=tmp_path / "elsewhere", start="models")  # another project folder: its own picks
    async with other.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert other.selected_model is None


async def test_a_corrupt_picks_file_is_ignored_with_a_notice(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / PICKS_FILE).write_text("{not json")
    app = MlxftApp(runs_dir=runs, start="models")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.current_mode == "models" and app.selected_model is None
        assert any("not JSON" in n.message and PICKS_FILE in n.message for n in app._notifications)
        app.select_model("qwen3-0.6b")  # the next pick writes a good file again
    assert json.loads((runs / PICKS_FILE).read_text())["model"] == "qwen3-0.6b"


async def test_chat_and_evaluate_take_the_run_just_opened_and_one_down_picks_the_first_run(tmp_path):
    runs = tmp_path / "runs"
    first, second = lm_run(runs, "first"), lm_run(runs, "second")
    app = MlxftApp(runs_dir=runs, start="evaluate")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        select = app.screen.query_one("#eval-runs", Select)
        select.focus()
        await pilot.press("down", "enter")  # the list opens on the first run, not on the blank row
        await settle(pilot)
        assert select.value == str(select._options[1][1])
        await show(pilot, "chat", None)
        chat = app.screen
        assert chat.query_one("#chat-adapter", Input).value == str(select.value)
        await show(pilot, "train", None)
        app.screen.open_run(second if select.value == str(first) else first)
        await settle(pilot)
        opened = app.screen.run_path
        assert chat.query_one("#chat-adapter", Input).value == str(opened)
        assert app._screen_if_made("evaluate").query_one("#eval-runs", Select).value == str(opened)


# -- what can train the data; a failed start -----------------------------------------------------------------


async def test_data_names_the_kinds_that_train_it_and_train_refuses_the_wrong_kind(tmp_path):
    csv = tmp_path / "imdb" / "train.csv"
    csv.parent.mkdir()
    csv.write_text("text,label\n" + "".join(f"review number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(12)))
    app = MlxftApp(runs_dir=tmp_path / "runs", start="data")
    async with app.run_test(size=(120, 36)) as pilot:
        app.screen.query_one("#data-path", Input).value = str(csv.parent)
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "usable for training with kind lm-classify" in str(app.screen.query_one("#report-verdict", Static).render())
        await show(pilot, "train", None)
        form = app.screen.query_one(RecipeForm)
        form.set_field("model", "smollm2-135m-instruct")
        form.set_field("data.path", str(csv.parent))
        form.set_field("kind", "lm-lora")
        await pilot.pause()
        app.screen.action_start()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog) and "classification data: kind lm-lora cannot train it" in app.screen.message
        assert "lm-classify" in app.screen.message and not app.train_processes  # refused before any model loads


async def test_a_failed_start_resets_the_run_tab_and_says_so(tmp_path):
    runs = tmp_path / "runs"
    step = event_to_dict(StepReport(step=5, total_steps=30, epoch=0.5, loss=2.0, learning_rate=1e-4, tokens=100, tokens_per_second=50.0,
                                    peak_memory_gb=1.0, elapsed_s=5.0, eta_s=20.0))
    old = write_run(runs, "old", {"kind": "lm-lora", "model": "m", "data": {"path": "d"}, "train": {"steps": 30}}, [step])
    new = lm_run(runs, "new", steps=30)
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.open_run(old)
        await pilot.pause()
        assert screen.query_one("#lr-spark", Sparkline).data
        log = tmp_path / "train.log"
        log.write_text("error: the model could not be loaded\n")
        proc = TrainProcess(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]), new, log)
        proc.popen.wait()
        app.train_processes[new] = proc
        screen.open_run(new)
        assert not screen.query_one("#lr-spark", Sparkline).data and not screen.query_one("#tps-spark", Sparkline).data
        assert screen.query_one("#progress", ProgressBar).total == 30  # the recipe's steps, not 100, before any event
        screen.poll_run()
        await pilot.pause()
        assert "failed" in str(screen.query_one("#run-stats", Label).render()) and "code 3" in str(screen.query_one("#run-stats", Label).render())


# -- Models: any folder, the recipe the app saved --------------------------------------------------------------


async def test_models_opens_any_folder_remembers_it_and_names_the_saved_recipe(tmp_path):
    from test_cli_models import make_local_models

    make_local_models(tmp_path)
    folder = tmp_path / "elsewhere" / "my-tiny"
    folder.parent.mkdir()
    (tmp_path / "models-local" / "tiny-chat").rename(folder)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert "my-tiny" not in [m.name for m in app.screen.listings]
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, AskDialog)
        await pilot.press(*str(folder), "enter")
        await settle(pilot)
        models = app.screen
        assert "my-tiny" in [m.name for m in models.listings]
        assert app.picks["model_folders"] == [str(folder.resolve())]
        recipe = tmp_path / "mine.yaml"
        recipe.write_text("kind: lm-lora\n")
        app.remember(recipe=str(recipe))
        models.show_detail("qwen3-0.6b")
        from test_tui_models import plain

        assert f"mlxft train {recipe} model=qwen3-0.6b" in plain(models.query_one("#models-detail-text", Static).content)
    again = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with again.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert "my-tiny" in [m.name for m in again.screen.listings]  # remembered for this project
