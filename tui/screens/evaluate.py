"""Temporary: being written."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Label

from tui.widgets.nav import NavBar


class EvaluateScreen(Screen):
    def compose(self) -> ComposeResult:
        yield NavBar("evaluate")
        yield Label("not yet")
        yield Footer()
