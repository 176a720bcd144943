"""The app as a whole: every screen opens at the smallest and a large size, numbers move between them, `?` explains each."""

from __future__ import annotations

import pytest

from tui.app import MlxftApp

MODES = ("models", "data", "train", "evaluate", "chat")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_number_keys_visit_every_screen_and_help_explains_it(tmp_path, monkeypatch, size):
    monkeypatch.setenv("MLXFT_MEMORY_GB", "16")
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
    async with app.run_test(size=size) as pilot:
        for number, mode in enumerate(MODES, start=1):
            app.screen.set_focus(None)  # a text field would take the digit
            await pilot.press(str(number))
            await pilot.pause()
            assert app.current_mode == mode
            nav = app.screen.query_one("#nav")
            assert nav.region.y == 0 and nav.region.width == size[0]  # the screen list is on the first row, whole
            current = [label for label in nav.query(".nav-item") if label.has_class("-current")]
            assert [label.mode for label in current] == [mode]
            app.screen.set_focus(None)
            await pilot.press("question_mark")
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            assert f"## {mode.capitalize()}" in app.screen.extra
            await pilot.press("escape")
            await pilot.pause()
        await pilot.click("#nav .nav-item")  # the names at the top are clickable too
        await pilot.pause()
        assert app.current_mode == "models"
