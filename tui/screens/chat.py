"""Chat: base and fine-tuned side by side on the same prompt, streamed from one `mlxft chat --json` child
that holds the model once and switches the adapter off for the base side."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static

from mlxft.textsafe import escape_controls
from tui.runner import error_from_stderr, mlxft_argv
from tui.widgets.nav import KeyFooter, NavBar, NavScreen, in_field, key_allowed

SIDES = ("base", "tuned")
NO_ADAPTER_NOTE = "no adapter: base only.\nType an adapter folder or run directory above to compare the fine-tuned model here."


class ChatChild:
    """A long-lived `mlxft chat --json`: requests are written to its stdin, its replies read as JSON lines."""

    def __init__(self, model: str, adapter: str | None):
        self.model, self.adapter = model, adapter
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task | None = None
        self._pending: list[dict] = []  # sent before the process was up

    async def start(self) -> None:
        args = ["chat", "--json", "--model", self.model] + (["--adapter", self.adapter] if self.adapter else [])
        self.proc = await asyncio.create_subprocess_exec(*mlxft_argv(*args), stdin=asyncio.subprocess.PIPE,
                                                         stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        for request in self._pending:
            self.send(request)
        self._pending.clear()

    async def _drain_stderr(self) -> None:
        # Read it all the time, or a chatty library could fill the pipe and stall the child.
        while chunk := await self.proc.stderr.read(4096):
            self._stderr += chunk
            del self._stderr[:-65536]

    @property
    def stderr(self) -> str:
        return self._stderr.decode("utf-8", errors="replace")

    @property
    def alive(self) -> bool:
        """Starting or running (not exited)."""
        return not self.stopping and (self.proc is None or self.proc.returncode is None)

    def send(self, request: dict) -> None:
        """Queue a request; the child reads it once it has loaded the model."""
        if self.proc is None:
            self._pending.append(request)
        elif self.proc.returncode is None:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())

    async def read(self) -> dict | None:
        """The next reply, or None once the child has exited; lines that are not JSON are skipped."""
        while line := await self.proc.stdout.readline():
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        await self.proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()  # the last open pipe: closing it lets asyncio close the transport now
            await asyncio.sleep(0)
        return None

    def stop(self) -> None:
        """End of input lets the child finish and exit; terminate makes sure it does not outlive us."""
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.stdin.close()
                self.proc.terminate()
            except (ProcessLookupError, RuntimeError):
                pass

    async def stop_and_wait(self, grace_s: float = 3.0) -> None:
        """Stop, and wait for the exit (killing it after `grace_s`), so nothing is left when the app closes."""
        self.stop()
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Turn:
    """One exchange on one side: the user's prompt and the reply as it streams."""

    prompt: str
    reply: str = ""
    done: bool = False
    stats: str = ""
    note: str = ""


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)

    def messages(self) -> list[dict]:
        """The history the model sees: answered turns in full, then the new prompt."""
        out = []
        for turn in self.turns:
            out.append({"role": "user", "content": turn.prompt})
            if turn.done and turn.reply:
                out.append({"role": "assistant", "content": turn.reply})
        return out

    def render(self, streaming: bool) -> Text:
        text = Text()
        for i, turn in enumerate(self.turns):
            if i:
                text.append("\n\n")
            text.append("you: ", style="bold cyan")
            text.append(escape_controls(turn.prompt, keep="\n\t") + "\n")  # model output can hold ESC sequences too
            text.append(escape_controls(turn.reply, keep="\n\t"))
            if streaming and not turn.done and i == len(self.turns) - 1:
                text.append("▌", style="bold")
            if turn.stats or turn.note:
                text.append(f"\n{turn.note or turn.stats}", style="dim italic")
        return text


class ChatScreen(NavScreen):
    HELP = """\
## Chat

The same prompt goes to the base model and to the fine-tuned one (base + adapter); both answers stream side by side.
One child process (`mlxft chat --json`) holds the model once and switches the adapter off for the base side.

- Type a model (or pick one on Models) and an adapter folder or run directory; without an adapter only the base answers.
  The run last trained, opened or evaluated (on Train or Evaluate, or in the last session here) fills both.
- `enter` goes to the prompt (when no field has focus) and sends it, `ctrl+t` stops the answer being written, `ctrl+n` starts a new conversation,
  `ctrl+l` (re)loads the model now. Each side keeps its own history.
- Temperature 0 is greedy (the same answer every time); max tokens bounds each answer.
- `escape` leaves a field so the number keys switch screens again (`alt+1`-`alt+5` work from a field too).

Headless: `mlxft chat --model M --adapter RUN_DIR` (interactive), or `--json` for programs (see `mlxft chat --help`).
"""

    BINDINGS = [
        Binding("ctrl+t", "stop_reply", "Stop"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+l", "load", "Load"),
        Binding("escape", "leave_field", "Leave field"),
        Binding("enter", "focus_prompt", "Prompt"),
    ]

    DEFAULT_CSS = """
    ChatScreen .settings { height: 1; padding: 0 1; }
    ChatScreen .settings Label { width: auto; margin-right: 1; color: $text-muted; }
    ChatScreen .settings Input { width: 1fr; margin-right: 2; }
    ChatScreen #chat-temp, ChatScreen #chat-max-tokens { width: 7; }
    ChatScreen .settings Input:focus { background: $boost; }
    ChatScreen #chat-state { width: 1fr; content-align: right middle; margin: 0; }
    ChatScreen #chat-state.-ready { color: $success; }
    ChatScreen #chat-state.-busy { color: $warning; }
    ChatScreen #panes { height: 1fr; margin-top: 1; }
    ChatScreen .pane { width: 1fr; border: round $panel; border-title-color: $text; }
    ChatScreen .pane:focus-within { border: round $primary; }
    ChatScreen #pane-tuned { border: round $accent 60%; }
    ChatScreen .pane VerticalScroll { padding: 0 1; }
    ChatScreen #panes.-stacked { layout: vertical; }
    ChatScreen #chat-input { margin: 0 1; }
    """

    def __init__(self):
        super().__init__()
        self.child: ChatChild | None = None
        self.ready = False
        self.sides: tuple[str, ...] = SIDES
        self.generating = False
        self.discarding = False  # replies of a request whose conversation was cleared, until it finishes
        self.deltas = 0  # streamed pieces received, for tests and the status line
        self.conversations = {side: Conversation() for side in SIDES}

    def compose(self) -> ComposeResult:
        yield NavBar("chat")
        with Horizontal(classes="settings"):
            yield Label("Model")
            yield Input(placeholder="catalogue key, Hub id or folder", compact=True, id="chat-model")
            yield Label("Adapter")
            yield Input(placeholder="adapter folder or run dir (optional)", compact=True, id="chat-adapter")
        with Horizontal(classes="settings"):
            yield Label("Temperature")
            yield Input("0.7", type="number", compact=True, id="chat-temp")
            yield Label("Max tokens")
            yield Input("256", type="integer", compact=True, id="chat-max-tokens")
            yield Label("not loaded", id="chat-state")
        with Horizontal(id="panes"):
            for side, title in (("base", "Base"), ("tuned", "Tuned (base + adapter)")):
                with Vertical(id=f"pane-{side}", classes="pane") as pane:
                    pane.border_title = title
                    with VerticalScroll(id=f"scroll-{side}"):
                        yield Static("", id=f"conversation-{side}")
        yield Input(placeholder="type a prompt; enter sends it to both sides", id="chat-input")
        yield KeyFooter()

    def on_mount(self) -> None:
        if self.app.selected_model:
            self.query_one("#chat-model", Input).value = self.app.selected_model
        if self.app.selected_run is not None:
            self.run_selected(self.app.selected_run, self.app.run_model)
            if "run" in self.app.remembered:
                self.set_state("last used run · enter: prompt")
        # No field takes focus on arrival (a digit typed then switches screens); enter goes to the prompt.

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "focus_prompt" and in_field(self.focused):
            return False  # enter in a field is that field's (the prompt sends, model and adapter load)
        if action == "stop_reply" and not self.generating:
            return False
        return key_allowed(self, action)

    def action_focus_prompt(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def run_selected(self, run, model: str | None) -> None:
        """The run last trained, opened or evaluated: its adapter, and the base it was trained on."""
        if self.generating:
            return
        self.query_one("#chat-adapter", Input).value = str(run)
        if model:
            self.query_one("#chat-model", Input).value = model

    def on_resize(self, event) -> None:
        # Side by side needs room for two readable columns; a narrow terminal stacks them.
        self.query_one("#panes").set_class(event.size.width < 70, "-stacked")

    async def on_unmount(self) -> None:
        child = self.child
        self.stop_child()
        if child is not None:
            await child.stop_and_wait()

    # -- app state ---------------------------------------------------------------------------------
    def model_selected(self, spec: str) -> None:
        self.query_one("#chat-model", Input).value = spec

    # -- the child ---------------------------------------------------------------------------------
    def wanted(self) -> tuple[str, str | None]:
        adapter = self.query_one("#chat-adapter", Input).value.strip()
        return self.query_one("#chat-model", Input).value.strip(), adapter or None

    def stop_child(self) -> None:
        if self.child is not None:
            self.child.stop()
        self.child = None
        self.ready = self.generating = self.discarding = False

    def set_state(self, text: str, kind: str = "") -> None:
        state = self.query_one("#chat-state", Label)
        state.update(text)
        state.set_classes(f"-{kind}" if kind else "")
        self.refresh_bindings()  # ctrl+t Stop shows while an answer is being written

    def show_ready(self) -> None:
        self.set_state("ready · " + ("base + tuned" if "tuned" in self.sides else "base only"), "ready")

    def action_load(self) -> None:
        model, adapter = self.wanted()
        if not model:
            self.app.show_error("Model: empty; type a catalogue key, Hub id or folder (or pick one on Models)")
            return
        self.stop_child()
        self.child = ChatChild(model, adapter)
        self.sides = SIDES if adapter else ("base",)
        self.show_tuned_note()
        self.set_state("loading model…", "busy")
        self.read_replies(self.child)

    @work(group="chat-child")
    async def read_replies(self, child: ChatChild) -> None:
        """Start the child and handle its replies until it exits (on the event loop, never a thread)."""
        try:
            await child.start()
        except OSError as exc:
            self.app.show_error(f"could not start mlxft chat: {exc}")
            return
        while (reply := await child.read()) is not None:
            if child is self.child:
                self.handle_reply(reply)
        if child is self.child and not child.stopping:
            self.ready = self.generating = False
            self.child = None
            self.set_state("stopped: the model process exited", "")
            message, hint = error_from_stderr(child.stderr, child.proc.returncode, "mlxft chat")
            self.app.show_error(message, hint)

    def handle_reply(self, reply: dict) -> None:
        if self.discarding and not reply.get("ready"):
            if reply.get("finished"):
                self.discarding = self.generating = False
                self.show_ready()
            return
        if reply.get("ready"):
            self.ready = True
            self.sides = tuple(reply.get("sides", SIDES))
            if self.generating:
                self.set_state("answering…", "busy")
            else:
                self.show_ready()
        elif "delta" in reply:
            self.deltas += 1
            self.current(reply["side"]).reply += reply["delta"]
            self.refresh_side(reply["side"])
        elif reply.get("done"):
            turn = self.current(reply["side"])
            turn.reply, turn.done = reply.get("text", turn.reply), True
            tokens = reply.get("tokens", 0)
            speed = f" · {reply.get('tokens_per_second', 0):.1f} tok/s" if tokens > 1 else ""  # one token has no rate
            turn.stats = f"{tokens} tokens{speed}" + (" · stopped" if reply.get("cancelled") else "")
            self.refresh_side(reply["side"])
        elif reply.get("finished"):
            self.generating = False
            for side in self.sides:
                turn = self.current(side)
                if not turn.done:  # a stop before this side began: it never answered
                    turn.done, turn.note = True, "(not answered: stopped)"
                    self.refresh_side(side)
            self.show_ready()
        elif "error" in reply:
            self.generating = False
            if reply.get("fatal"):  # the model or adapter did not load and the child is exiting: this is its one error
                self.stop_child()
                self.set_state("stopped: the model did not load", "")
            self.app.show_error(reply["error"], reply.get("hint"))

    def current(self, side: str) -> Turn:
        turns = self.conversations[side].turns
        if not turns:
            turns.append(Turn(prompt=""))
        return turns[-1]

    # -- conversation ------------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "chat-input":
            self.send_prompt(event.value)
        elif event.input.id in ("chat-model", "chat-adapter"):
            self.action_load()

    def send_prompt(self, prompt: str) -> None:
        prompt = prompt.strip()
        if not prompt:
            return
        if self.generating:
            self.notify("still answering; ctrl+t stops it", severity="warning")
            return
        try:
            settings = self.sampling()
        except ValueError as exc:
            self.app.show_error(str(exc))
            return
        if self.child is None or not self.child.alive or (self.child.model, self.child.adapter) != self.wanted():
            if self.child is not None:
                self.notify("model or adapter changed: reloading, new conversation")
                self.clear_conversations()
            self.action_load()
            if self.child is None:
                return
        self.begin_turn(prompt)
        self.child.send({"messages": {side: self.conversations[side].messages() for side in self.sides}, "sides": list(self.sides), **settings})
        self.query_one("#chat-input", Input).value = ""
        if self.ready:
            self.set_state("answering…", "busy")

    def begin_turn(self, prompt: str) -> None:
        self.generating = True
        self.refresh_bindings()
        for side in self.sides:
            self.conversations[side].turns.append(Turn(prompt))
            self.refresh_side(side)

    def sampling(self) -> dict:
        raw_temp = self.query_one("#chat-temp", Input).value.strip() or "0"
        raw_max = self.query_one("#chat-max-tokens", Input).value.strip() or "256"
        try:
            temperature = float(raw_temp)
        except ValueError:
            raise ValueError(f"Temperature: {raw_temp!r} is not a number (0 = greedy, 0.7 is a common choice)") from None
        if temperature < 0:
            raise ValueError(f"Temperature: {raw_temp} must be 0 or more")
        if not raw_max.isdigit() or int(raw_max) < 1:
            raise ValueError(f"Max tokens: {raw_max!r} is not a whole number >= 1")
        return {"temperature": temperature, "max_tokens": int(raw_max)}

    def refresh_side(self, side: str) -> None:
        self.query_one(f"#conversation-{side}", Static).update(self.conversations[side].render(self.generating))
        self.query_one(f"#scroll-{side}", VerticalScroll).scroll_end(animate=False)

    def show_tuned_note(self) -> None:
        pane = self.query_one("#pane-tuned")
        if "tuned" in self.sides:
            pane.border_title = "Tuned (base + adapter)"
            self.refresh_side("tuned")
        else:
            pane.border_title = "Tuned"
            self.query_one("#conversation-tuned", Static).update(Text(NO_ADAPTER_NOTE, style="dim italic"))

    def clear_conversations(self) -> None:
        self.conversations = {side: Conversation() for side in SIDES}
        for side in SIDES:
            self.refresh_side(side)
        self.show_tuned_note()

    # -- actions -----------------------------------------------------------------------------------
    def action_stop_reply(self) -> None:
        if self.generating and self.child is not None:
            self.child.send({"cancel": True})

    def action_new_chat(self) -> None:
        if self.generating and self.child is not None:
            self.child.send({"cancel": True})
            self.discarding = True
        self.clear_conversations()
        self.query_one("#chat-input", Input).focus()

