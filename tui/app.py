"""The mlxft Textual app: five screens (modes) over the engine, a shared state, quit-while-training."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen

from mlxft.errors import MlxftError
from tui.picks import read_picks, write_picks
from tui.runner import TrainProcess
from tui.widgets.dialogs import ConfirmDialog, ErrorDialog, HelpScreen, QuitDialog
from tui.widgets.nav import SCREENS, in_field


# alt+digit as terminals really send it: a kitty-protocol terminal reports alt+N (the bindings), but most send ESC N,
# which Textual reads as the character macOS's Option+N types (¡ ™ £ ¢ ∞), and Terminal.app types that character itself.
# A focused Input would take those as text before any binding, so the app takes them first (`on_event`).
ALT_DIGIT_KEYS = {"inverted_exclamation_mark": 1, "trade_mark_sign": 2, "pound_sign": 3, "cent_sign": 4, "infinity": 5}


def _screen(name: str):
    """Screens are imported when first shown, so `mlxft tui` opens fast."""

    def make():
        import importlib

        module = importlib.import_module(f"tui.screens.{name}")
        return getattr(module, f"{name.capitalize()}Screen")()

    return make


class MlxftApp(App):
    TITLE = "mlxft"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere (tests, scripts) find it too
    # Screens get -narrow / -wide classes: help text moves beside fields when there is room.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (130, "-wide")]
    MODES = {name: _screen(name) for name in ("models", "data", "train", "evaluate", "chat")}
    BINDINGS = [
        # Digits switch screens when no form field has focus; alt+digit from anywhere (the field keeps its text).
        *(Binding(str(n), f"goto('{mode}')", label, show=False) for n, (mode, label) in enumerate(SCREENS, start=1)),
        *(Binding(f"alt+{n}", f"switch_mode('{mode}')", label, show=False, priority=True) for n, (mode, label) in enumerate(SCREENS, start=1)),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit_anywhere", "Quit", show=False, priority=True),
    ]

    def __init__(self, *, runs_dir: str | Path = "runs", start: str = "models"):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.start_mode = start
        self.selected_model: str | None = None  # picked on Models, used by Train, Evaluate, Chat
        self.selected_backbone: str | None = None  # a vision backbone picked on Models, used by Train (image-classify)
        self.train_pick: tuple[str, str] | None = None  # (spec, "llm" | "vision"): the last pick, what Train starts from
        self.data_path: str | None = None  # opened on Data, offered to Train
        self.data_pick: dict = {}  # with data_path: its format and the class weights chosen on Data
        self.train_processes: dict[Path, TrainProcess] = {}  # runs this app started
        self.selected_run: Path | None = None  # the run last trained, opened or evaluated: Evaluate and Chat start from it
        self.run_model: str | None = None  # ... and its base model
        self.picks: dict = {}  # what RUNS/.mlxft-tui.json remembers (tui.picks)
        self.remembered: set[str] = set()  # the picks that came from it and were not changed since: shown as "last used"

    async def on_event(self, event) -> None:
        if isinstance(event, events.Key) and event.key in ALT_DIGIT_KEYS and not isinstance(self.screen, ModalScreen):
            self.switch_mode(SCREENS[ALT_DIGIT_KEYS[event.key] - 1][0])  # alt+digit from a terminal, even from a text field
            return
        await super().on_event(event)

    def on_mount(self) -> None:
        self.restore_picks()
        self.switch_mode(self.start_mode)

    # -- screens: built on first visit (Textual queues keys typed meanwhile for the new screen) -------------
    def action_goto(self, mode: str) -> None:
        self.switch_mode(mode)

    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("goto", "help", "quit") and in_field(self.focused):
            return False  # the key is the field's; alt+digit (switch_mode) and ctrl+q (quit_anywhere) work from a field
        return True

    async def action_quit_anywhere(self) -> None:
        await self.action_quit()

    # -- remembered picks (per runs folder) -------------------------------------------------------
    def restore_picks(self) -> None:
        self.picks, problem = read_picks(self.runs_dir)
        if problem:
            self.notify(problem, severity="warning", timeout=8, markup=False)
        p = self.picks
        self.selected_model = p.get("model")
        self.selected_backbone = p.get("backbone")
        kind = p.get("train_kind")
        spec = self.selected_backbone if kind == "vision" else self.selected_model
        self.train_pick = (spec, "vision" if kind == "vision" else "llm") if spec else None
        self.data_path = p.get("data")
        self.data_pick = {"format": p.get("data_format"), "class_weights": None}
        run = Path(p["run"]) if p.get("run") else None
        if run is not None and run.is_dir():
            self.selected_run, self.run_model = run, p.get("run_model")
        self.remembered = {k for k in ("model", "backbone", "data", "run") if p.get(k)}

    def remember(self, **values) -> None:
        """Keep picks for the next start in this project; a changed one is no longer "last used" but this session's."""
        self.remembered -= {k for k, v in values.items() if self.picks.get(k) != v}
        self.picks.update(values)
        problem = write_picks(self.runs_dir, self.picks)
        if problem:
            self.notify(problem, severity="warning", markup=False)

    def last_used(self, key: str) -> str:
        """" (last used)" after a value restored from the last session, for the labels that show it."""
        return " (last used)" if key in self.remembered else ""

    # -- shared state, for screens ---------------------------------------------------------------
    def select_model(self, spec: str) -> None:
        self.selected_model = spec
        self.train_pick = (spec, "llm")
        self.remember(model=spec, train_kind="llm")
        self.notify(f"model: {spec} (used by Train, Evaluate and Chat)")
        for name in ("train", "evaluate", "chat"):
            screen = self._screen_if_made(name)
            if screen is not None and hasattr(screen, "model_selected"):
                screen.model_selected(spec)

    def select_backbone(self, spec: str) -> None:
        """A vision backbone: Train makes an image-classify recipe of it (Evaluate and Chat keep their language model)."""
        self.selected_backbone = spec
        self.train_pick = (spec, "vision")
        self.remember(backbone=spec, train_kind="vision")
        self.notify(f"backbone: {spec} (Train: an image-classify recipe; point data.path at <split>/<label>/<image> folders)")
        screen = self._screen_if_made("train")
        if screen is not None and hasattr(screen, "backbone_selected"):
            screen.backbone_selected(spec)

    def use_data(self, path: str, data_format: str | None = None, class_weights: dict | None = None) -> None:
        """Data -> Train: the path, and for a labelled set its format (the classifier kind) and class weights."""
        self.data_path = path
        self.data_pick = {"format": data_format, "class_weights": class_weights}
        self.remember(data=path, data_format=data_format)
        screen = self._screen_if_made("train")
        if screen is not None and hasattr(screen, "data_selected"):
            screen.data_selected(path, data_format, class_weights)

    def use_run(self, run: Path, model: str | None) -> None:
        """A run trained, opened or evaluated: Evaluate and Chat start from it (its adapter, its base model)."""
        self.selected_run, self.run_model = Path(run), model
        self.remember(run=str(run), run_model=model)
        for name in ("evaluate", "chat"):
            screen = self._screen_if_made(name)
            if screen is not None and screen is not self.screen and hasattr(screen, "run_selected"):
                screen.run_selected(Path(run), model)

    def _screen_if_made(self, mode: str):
        stack = self._screen_stacks.get(mode)
        return stack[0] if stack else None

    def show_error(self, exc: BaseException | str, hint: str | None = None) -> None:
        """Errors go to a dialog with their hint; nothing is swallowed."""
        if isinstance(exc, MlxftError):
            self.push_screen(ErrorDialog(exc.message, exc.hint))
        else:
            self.push_screen(ErrorDialog(str(exc) if isinstance(exc, str) else f"{type(exc).__name__}: {exc}", hint))

    # -- actions ---------------------------------------------------------------------------------
    def action_help(self) -> None:
        extra = getattr(self.screen, "HELP", "")
        self.push_screen(HelpScreen(extra))

    def running_processes(self) -> list[TrainProcess]:
        return [p for p in self.train_processes.values() if p.running]

    async def action_quit(self) -> None:
        unsaved = [text for mode in self.MODES if (screen := self._screen_if_made(mode)) is not None
                   and hasattr(screen, "unsaved_work") and (text := screen.unsaved_work())]
        if unsaved:
            def decided(yes: bool | None) -> None:
                if yes:
                    self.call_later(self.quit_after_runs)

            self.push_screen(ConfirmDialog("\n".join(unsaved) + "\n\nQuit anyway?", yes="Quit"), decided)
            return
        await self.quit_after_runs()

    async def quit_after_runs(self) -> None:
        running = self.running_processes()
        if not running:
            self.exit()
            return

        def decided(choice: str | None) -> None:
            if choice == "stop":
                for proc in running:
                    proc.stop()
                self.exit(message="asked the training to stop; it saves a checkpoint first:\n" + "\n".join(f"  resume with: mlxft train --resume {p.run_path}" for p in running))
            elif choice == "leave":
                self.exit(message="still training:\n" + "\n".join(f"  {p.run_path}  (watch: mlxft tui; stop: mlxft stop {p.run_path})" for p in running))

        self.push_screen(QuitDialog([str(p.run_path) for p in running]), decided)
