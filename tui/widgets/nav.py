"""Getting around: the strip of screen names at the top, the footer, and the key rules every screen shares.

The rules, one meaning per key across the app: letter and digit keys act only when no form field has focus
(a field takes what is typed, and a digit never switches screens from inside a form); `escape` leaves the field,
and the footer offers it only then; `alt+1`-`alt+5` switch screens from anywhere; `? Help` and `q Quit` are pinned
at the footer's right edge, so a narrow terminal cuts a screen's own keys before those.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, HorizontalGroup
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Checkbox, Footer, Input, Label, Select, TextArea
from textual.widgets._footer import FooterKey

SCREENS = (("models", "1 Models"), ("data", "2 Data"), ("train", "3 Train"), ("evaluate", "4 Evaluate"), ("chat", "5 Chat"))
FIELDS = (Input, TextArea, Select, Checkbox)  # what takes the keyboard while it has focus


def in_field(widget: Widget | None) -> bool:
    """Whether `widget` (the focused one) is a form field or inside one (a Select's open list)."""
    node = widget
    while node is not None and isinstance(node, Widget):
        if isinstance(node, FIELDS):
            return True
        node = node.parent
    return False


def key_allowed(node: Widget, action: str) -> bool:
    """The shared rule for `check_action`: `leave_field` only while a field has focus, and actions bound to a plain
    character (a letter, a digit, `[`) only while none has (the field takes the character)."""
    typing = in_field(node.screen.focused)
    if action == "leave_field":
        return typing
    if typing:
        return action not in {b.action.split("(")[0] for key, bindings in node._bindings.key_to_bindings.items() if len(key) == 1
                              or key in ("left_square_bracket", "right_square_bracket", "slash") for b in bindings}
    return True


class NavScreen(Screen):
    """A screen that follows the key rules above (its own `check_action` calls `super()` last)."""

    def check_action(self, action: str, parameters) -> bool | None:
        return key_allowed(self, action)

    def action_leave_field(self) -> None:
        self.set_focus(None)


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


class KeyFooter(Footer):
    """The footer, compact, with the app's Help and Quit pinned to its right edge."""

    PINNED = ("app.help", "app.quit", "help", "quit")
    DEFAULT_CSS = """
    KeyFooter .footer-pinned { dock: right; width: auto; height: 1; background: $footer-background; }
    """

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)

    def compose(self) -> ComposeResult:
        pinned = []
        for widget in super().compose():
            if isinstance(widget, FooterKey) and widget.action in self.PINNED:
                pinned.append(widget)
            else:
                yield widget
        if pinned:
            yield HorizontalGroup(*pinned, classes="footer-pinned")  # a class: a recompose may overlap the last one
