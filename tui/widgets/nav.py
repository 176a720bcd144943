"""The strip of screen names at the top of every screen: shows where you are, click or press 1-5 to move."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

SCREENS = (("models", "1 Models"), ("data", "2 Data"), ("train", "3 Train"), ("evaluate", "4 Evaluate"), ("chat", "5 Chat"))


class NavLabel(Label):
    def __init__(self, mode: str, text: str, current: bool):
        super().__init__(text, classes="nav-item -current" if current else "nav-item")
        self.mode = mode

    def on_click(self) -> None:
        self.app.switch_mode(self.mode)


class NavBar(Horizontal):
    """`NavBar("train")` at the top of the Train screen."""

    def __init__(self, current: str):
        super().__init__(id="nav")
        self.current = current

    def compose(self) -> ComposeResult:
        yield Label(" mlxft ", id="nav-brand")
        for mode, text in SCREENS:
            yield NavLabel(mode, text, mode == self.current)
        yield Label("", id="nav-status")

    def set_status(self, text: str) -> None:
        """Right-hand status text (e.g. `training step 12/60`), the same on every screen."""
        self.query_one("#nav-status", Label).update(text)
