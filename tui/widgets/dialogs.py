"""Modal dialogs: errors (message + hint, nothing swallowed), the quit-during-run question, help."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown


class ErrorDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, message: str, hint: str | None = None, title: str = "Error"):
        super().__init__(classes="dialog-screen")
        self.message, self.hint, self.title_text = message, hint, title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Label(self.message, id="error-message", markup=False)
                if self.hint:
                    yield Label(f"hint: {self.hint}", id="error-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)


class QuitDialog(ModalScreen[str]):
    """Asked on quit while runs we started are training: returns 'stop', 'leave' or 'cancel'."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel"), Binding("s", "dismiss('stop')", "Stop"), Binding("l", "dismiss('leave')", "Leave running")]

    def __init__(self, runs: list[str]):
        super().__init__(classes="dialog-screen")
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Training is still running", classes="dialog-title")
            yield Label("\n".join(self.runs), markup=False)
            yield Label("Stop saves a checkpoint you can resume. Leave running keeps training after the app closes;\n"
                        "reopen the app to watch it, or `mlxft stop RUN_DIR` to stop it.")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop (s)", id="stop", variant="error")
                yield Button("Leave running (l)", id="leave", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)


HELP = """\
# mlxft

Fine-tune language models on this machine. Move between screens with **1-5** when no field has focus,
**alt+1-5** (Option+1-5 on a Mac) from anywhere (or click the names at the top).

| key | where | what |
|---|---|---|
| 1 | everywhere | **Models**: the catalogue, memory needed for LoRA/QLoRA, what fits here |
| 2 | everywhere | **Data**: validate, browse, split; review failures and build a training set |
| 3 | everywhere | **Train**: recipe form, start/stop/resume, live loss chart, past runs |
| 4 | everywhere | **Evaluate**: base vs fine-tuned on a benchmark, verdict, regressions |
| 5 | everywhere | **Chat**: base and tuned side by side on the same prompt |
| ? | everywhere | this help |
| q / ctrl+q | everywhere | quit (asks first if a run you started is training) |
| tab / shift+tab | everywhere | move between fields and lists (screens open with no field focused) |
| escape | in a field | leave it: letter and number keys act again |
| ctrl+t | Data, Evaluate, Chat | stop what is running (a validation, an evaluation, an answer) |

Every action here also exists as a command: `mlxft train`, `mlxft stop`, `mlxft runs`, `mlxft data ...`,
`mlxft eval`, `mlxft chat`. Training runs in its own process: the app never blocks, and a run keeps its
checkpoints if the app is closed.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, extra: str = ""):
        super().__init__(classes="dialog-screen")
        self.extra = extra

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            with VerticalScroll():
                yield Markdown(HELP + ("\n" + self.extra if self.extra else ""))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no before anything the user wrote is replaced."""

    BINDINGS = [Binding("escape,n", "dismiss(False)", "No"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Yes"):
        super().__init__(classes="dialog-screen")
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="warning")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AskDialog(ModalScreen[str | None]):
    """One line of text (a folder, a name): enter or OK returns it, escape or Cancel returns None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, question: str, value: str = "", placeholder: str = ""):
        super().__init__(classes="dialog-screen")
        self.title_text, self.question, self.value, self.placeholder = title, question, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.question, markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="ask-value")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one("#ask-value", Input).value.strip() or None if event.button.id == "ok" else None)
