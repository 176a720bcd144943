"""Temporary: being written."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Label

from tui.widgets.nav import NavBar


class ChatScreen(Screen):
    def compose(self) -> ComposeResult:
        yield NavBar("chat")
        yield Label("not yet")
        yield Footer()
