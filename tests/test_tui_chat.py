"""Chat screen: one `mlxft chat --json` child on a tiny model streams base and tuned answers side by side."""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import Input, Static

from mlxft.textsafe import escape_controls
from tui.app import MlxftApp
from tui.widgets.dialogs import ErrorDialog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama, tmp_path_factory):
    from tiny import build_adapter

    return build_adapter(tiny_llama, tmp_path_factory.mktemp("tui-chat") / "adapter")


async def wait_until(pilot, condition, limit_s: float = 240) -> None:
    """Let the child answer: the event loop runs between checks (a bound, not a timed assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the chat child did not answer"
        if isinstance(pilot.app.screen, ErrorDialog):
            raise AssertionError(pilot.app.screen.message)
        await pilot.pause(0.05)


def pane(screen, side: str) -> str:
    return str(screen.query_one(f"#conversation-{side}", Static).render())


async def send(pilot, prompt: str) -> None:
    box = pilot.app.screen.query_one("#chat-input", Input)
    box.focus()
    box.value = prompt
    await pilot.press("enter")


async def test_a_prompt_streams_into_both_panes_from_one_child(tiny_llama, tiny_adapter, tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="chat")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        screen.query_one("#chat-model", Input).value = str(tiny_llama)
        screen.query_one("#chat-adapter", Input).value = str(tiny_adapter)
        screen.query_one("#chat-temp", Input).value = "0"
        screen.query_one("#chat-max-tokens", Input).value = "12"
        await send(pilot, "What color is the cat?")
        await pilot.pause()
        assert "loading model" in str(screen.query_one("#chat-state").render()) or screen.ready
        await wait_until(pilot, lambda: screen.ready and not screen.generating)
        child = screen.child
        base, tuned = screen.conversations["base"].turns, screen.conversations["tuned"].turns
        assert [t.prompt for t in base] == [t.prompt for t in tuned] == ["What color is the cat?"]
        assert base[0].reply and tuned[0].reply and base[0].reply != tuned[0].reply  # the adapter was on for one side only
        assert screen.deltas > 2  # streamed in pieces, not one block
        for side, turn in (("base", base[0]), ("tuned", tuned[0])):
            assert "What color is the cat?" in pane(screen, side)
            assert escape_controls(turn.reply.strip()[:3], keep="\n\t") in pane(screen, side)  # shown as the pane shows it (a tiny model's reply can hold control characters)
            assert "12 tokens" in pane(screen, side)

        # A second prompt goes to the same process, with each side's own history.
        await send(pilot, "And the dog?")
        await wait_until(pilot, lambda: not screen.generating)
        assert screen.child is child
        assert len(screen.conversations["tuned"].turns) == 2
        history = screen.conversations["tuned"].messages()
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]

        await pilot.press("ctrl+n")
        assert "What color" not in pane(screen, "base")
        pid = child.proc.pid
    # Leaving the app ends the child: no orphan holding the model.
    deadline = time.monotonic() + 30
    while process_running(pid):
        assert time.monotonic() < deadline, "the chat child outlived the app"
        time.sleep(0.05)


def process_running(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it has exited and nobody has yet
    except ChildProcessError:
        return False  # already reaped: gone
    return waited == 0


async def test_without_an_adapter_only_the_base_answers_with_a_note(tiny_llama, tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="chat")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        app.select_model(str(tiny_llama))  # picked on Models: Chat follows
        assert screen.query_one("#chat-model", Input).value == str(tiny_llama)
        screen.query_one("#chat-max-tokens", Input).value = "4"
        await send(pilot, "hi")
        await wait_until(pilot, lambda: screen.ready and not screen.generating)
        assert screen.conversations["base"].turns[0].done
        assert not screen.conversations["tuned"].turns
        assert "no adapter: base only" in pane(screen, "tuned")


async def test_bad_settings_and_a_missing_model_are_clear_errors(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="chat")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        await send(pilot, "hi")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog) and "Model: empty" in app.screen.message
        await pilot.press("escape")
        screen.query_one("#chat-model", Input).value = str(tmp_path / "no-such-model")
        screen.query_one("#chat-max-tokens", Input).value = "0"
        await send(pilot, "hi")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog) and "Max tokens" in app.screen.message
        await pilot.press("escape")
        screen.query_one("#chat-max-tokens", Input).value = "4"
        await send(pilot, "hi")
        # The child fails to load: its error (with the engine's hint) reaches a dialog.
        deadline = time.monotonic() + 120
        while not isinstance(app.screen, ErrorDialog):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        assert "no-such-model" in app.screen.message
        assert screen.child is None and not screen.generating


async def test_a_model_that_does_not_load_gives_one_dialog_naming_the_broken_file(tiny_llama, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_llama, tmp_path / "cut-model")
    with open(broken / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="chat")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        screen.query_one("#chat-model", Input).value = str(broken)
        await send(pilot, "hi")
        child = screen.child
        deadline = time.monotonic() + 120
        while not (isinstance(app.screen, ErrorDialog) and child.proc is not None and child.proc.returncode is not None):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause()
        dialogs = [s for s in app.screen_stack if isinstance(s, ErrorDialog)]
        assert len(dialogs) == 1 and str(broken / "model.safetensors") in dialogs[0].message and "truncated" in dialogs[0].message
        assert "Traceback" not in dialogs[0].message and screen.child is None and "did not load" in str(screen.query_one("#chat-state").render())


def test_snapshot_of_a_streamed_exchange(snap_compare, tmp_path):
    """Replies fed as the child writes them (no model), so the picture is the same on every machine."""

    async def converse(pilot):
        screen = pilot.app.screen
        screen.query_one("#chat-model", Input).value = "smollm2-135m-instruct"
        screen.query_one("#chat-adapter", Input).value = "runs/support-lora"
        screen.begin_turn("How do I reset my password?")
        for reply in (
            {"ready": True, "sides": ["base", "tuned"]},
            {"side": "base", "delta": "You can reset it from the"}, {"side": "base", "delta": " settings page."},
            {"side": "base", "done": True, "text": "You can reset it from the settings page.", "tokens": 9, "tokens_per_second": 41.5},
            {"side": "tuned", "delta": "Open Settings → Security, choose"}, {"side": "tuned", "delta": " 'Reset password' and follow the email link."},
        ):
            screen.handle_reply(reply)
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir=tmp_path / "runs", start="chat"), terminal_size=(80, 24), run_before=converse)
