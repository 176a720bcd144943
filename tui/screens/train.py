"""Temporary: being written."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Label

from tui.widgets.nav import NavBar


class TrainScreen(Screen):
    def compose(self) -> ComposeResult:
        yield NavBar("train")
        yield Label("not yet")
        yield Footer()
