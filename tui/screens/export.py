"""Export and push a run from the TUI: the formats its kind takes (the engine's one table, with each summary), the options
each format reads, and `mlxft export ... --json` / `mlxft push ... --json` as child processes, which a person can cancel.

The dialog never exports in its own process (no MLX in the UI). A cancelled command gets SIGINT, so its own clean-up
runs: the engine writes every export into a temp folder and publishes it by a rename, so a cancelled export leaves
nothing behind, and an earlier export at the same place stays as it was. The Hub token is never read here: the child
finds it (HF_TOKEN or `hf auth login`) and says so when there is none.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, LoadingIndicator, OptionList, Select, Static
from textual.widgets.option_list import Option

from mlxft.errors import RunError
from mlxft.export import EXPORT_STAMP, ExportFormat, default_folder, formats_for
from mlxft.export.formats import IMAGE_KINDS
from mlxft.export.push import default_push_folder
from mlxft.runs import RunDir
from mlxft.textsafe import escape_controls
from tui.runner import error_from_stderr, stream_command


@dataclass(frozen=True)
class ExportRun:
    """What the dialog needs of a run: where it is, its kind (which formats it takes) and its recorded base model."""

    path: Path
    kind: str
    model: str


def read_export_run(path: str | Path) -> ExportRun:
    """The run at `path` as the dialog shows it; a RunError naming the file when it is not a run that exports."""
    run = RunDir.containing(path)
    if run is None:
        raise RunError(f"{path}: not an mlxft run directory (no recipe.yaml and metrics.jsonl)",
                       hint="pick a run on the Runs tab, or type its folder there and Open it")
    try:
        data = yaml.safe_load(run.recipe_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunError(f"{run.recipe_path}: cannot be read ({type(exc).__name__})", hint="`mlxft validate` on it says what is wrong") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str) or not formats_for(kind):
        raise RunError(f"{run.recipe_path}: kind {kind!r} is not a kind of run that exports",
                       hint="`mlxft export --help` lists the formats and the kinds of run each takes")
    return ExportRun(run.path, kind, str(data.get("model") or ""))


@dataclass
class ExportChoices:
    """The dialog's fields, as the options of `mlxft export` / `mlxft push` (None / False: left to the format)."""

    format: str
    dtype: str | None = None
    quantize: int | None = None
    base: str | None = None
    with_base: bool = False
    out: str | None = None


def export_args(run: ExportRun, spec: ExportFormat, choices: ExportChoices) -> list[str]:
    """`mlxft export` with the options this format reads (and no other: a format refuses options it does not read)."""
    args = ["export", str(run.path), "--format", spec.name]
    if choices.out:
        args += ["--out", choices.out]
    if spec.dtypes and choices.dtype and (not spec.with_base or choices.with_base):
        args += ["--dtype", choices.dtype]
    if spec.quantize and choices.quantize:
        args += ["--quantize", str(choices.quantize)]
    if spec.base and choices.base:
        args += ["--base", choices.base]
    if spec.with_base and choices.with_base:
        args.append("--with-base")
    return args + ["--json"]


def push_args(run: ExportRun, spec: ExportFormat, choices: ExportChoices, repo: str, *, private: bool, dry_run: bool) -> list[str]:
    """`mlxft push` of the export the dialog describes; --base also names the base in the model card, for every format."""
    args = ["push", str(run.path), "--repo", repo, "--format", spec.name]
    if private:
        args.append("--private")
    if dry_run:
        args.append("--dry-run")
    if spec.dtypes and choices.dtype and not spec.with_base:
        args += ["--dtype", choices.dtype]
    if spec.quantize and choices.quantize:
        args += ["--quantize", str(choices.quantize)]
    if choices.base and run.kind not in IMAGE_KINDS:
        args += ["--base", choices.base]
    return args + ["--json"]


def command_line(args: list[str]) -> str:
    """The command a person would type for `args` (the dialog's own --json left out)."""
    return "$ mlxft " + escape_controls(shlex.join([a for a in args if a != "--json"]))


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def is_warning(note: str) -> bool:
    return str(note).lstrip().lower().startswith("warning")


def result_text(what: str, data: dict) -> Text:
    """A finished export or push as a person reads it: where it is, the warnings and notes first (what was measured,
    what to watch: the first thing a person must read), then its files with their sizes."""
    folder = Path(str(data.get("folder", "")))
    files = [str(f) for f in data.get("files") or []]
    text = Text()
    if what == "export":
        text.append(f"{data.get('format')} export: ", style="bold")
    elif data.get("dry_run"):
        text.append(f"dry run: Push would upload this folder to {data.get('repo')}: ", style="bold")
    else:
        text.append(f"uploaded to {data.get('repo')} from ", style="bold")
    text.append(escape_controls(str(folder)) + "\n")
    notes = [escape_controls(str(n)) for n in data.get("notes") or []]
    for note in sorted(notes, key=lambda n: not is_warning(n)):  # warnings first, otherwise in the engine's order
        said = note.lower().startswith(("warning", "note:"))  # a note that names itself is not named twice
        text.append(note + "\n" if said else f"note: {note}\n", style="bold yellow" if is_warning(note) else "")
    text.append(f"{len(files)} file(s):\n", style="bold")
    width = max((len(f) for f in files), default=0)
    for name in files:
        try:
            size = _size((folder / name).stat().st_size)
        except OSError:
            size = "?"
        text.append(f"  {escape_controls(name).ljust(width)}  {size:>9}\n")
    if what == "push" and data.get("dry_run"):
        text.append("nothing was uploaded; Push sends these files with the token of HF_TOKEN or `hf auth login`\n", style="dim")
    elif what == "push":
        text.append(escape_controls(str(data.get("commit_url") or data.get("url") or "")) + "\n", style="bold green")
    return text


def last_json(lines: list[str]) -> dict | None:
    """The command's --json result: its last stdout line that is a JSON object (a library's stray output is skipped)."""
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "folder" in data:
            return data
    return None


BEFORE = ("Export writes the folder above. Dry run writes what Push would upload (the export, its README.md model card "
          "and loss curve, in {push}) and lists it; Push uploads it, with the token of HF_TOKEN or `hf auth login`.")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class ExportDialog(ModalScreen[None]):
    """Export the run in a format its kind takes, or push it to the Hub; the result (folder, files, notes) stays on screen."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),   # while a command runs: stop it (check_action shows one of the two)
        Binding("escape", "close", "Close"),
        Binding("ctrl+g", "export", "Export"),
    ]

    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog #export-box {
        width: 100%; max-width: 120; height: 100%; max-height: 40;
        border: round $primary; border-title-style: bold; background: $surface; padding: 0 1;
    }
    ExportDialog #export-top { height: auto; }
    ExportDialog #formats { width: 16; height: auto; max-height: 9; margin-right: 1; }
    ExportDialog #export-form { width: 1fr; height: auto; }
    ExportDialog #format-summary { color: $text-muted; height: auto; max-height: 3; margin-bottom: 1; }
    ExportDialog .form-row { height: 1; }
    ExportDialog .form-row Label { width: auto; padding-right: 1; }
    ExportDialog .form-row Select { width: 26; margin-right: 2; }
    ExportDialog #quantize { width: 12; }
    ExportDialog .form-row Input { width: 1fr; }
    ExportDialog .form-row Button { width: auto; min-width: 0; margin-left: 1; }
    ExportDialog .form-row Checkbox { width: auto; margin-left: 1; }
    ExportDialog #export-busy { height: 1; margin-top: 1; }
    ExportDialog #busy { width: 6; height: 1; min-height: 1; display: none; }
    ExportDialog #export-status { width: 1fr; color: $text-muted; }
    ExportDialog #cancel { display: none; width: auto; min-width: 0; }
    ExportDialog.-busy #busy, ExportDialog.-busy #cancel { display: block; }
    ExportDialog #export-result { height: 1fr; min-height: 3; border: round $panel; }
    """

    def __init__(self, run: ExportRun):
        super().__init__()
        self.run = run
        self.formats = formats_for(run.kind)
        self.spec = self.formats[0]
        self._default_out = ""
        self.result: dict | None = None  # the last command's --json answer (tests and the lead read it)

    def compose(self) -> ComposeResult:
        lm = self.run.kind not in IMAGE_KINDS
        with Vertical(id="export-box"):
            with Horizontal(id="export-top"):
                yield OptionList(*[Option(f.name, id=f.name) for f in self.formats], id="formats", compact=True)
                with Vertical(id="export-form"):
                    yield Static("", id="format-summary", markup=False)
                    with Horizontal(classes="form-row", id="options-row"):
                        yield Label("dtype", id="dtype-label")
                        yield Select([], id="dtype", compact=True)
                        yield Label("quantize", id="quantize-label")
                        yield Select([(f"{b}-bit", b) for b in (4, 8)], prompt="no", id="quantize", compact=True)
                        yield Checkbox("with base", id="with-base", compact=True)
                    with Horizontal(classes="form-row", id="base-row"):
                        yield Label("base  ")
                        yield Input(placeholder=f"recorded: {self.run.model}" if lm else "", id="base", compact=True)
                    with Horizontal(classes="form-row"):
                        yield Label("folder")
                        yield Input(id="out", compact=True)
                        yield Button("Export", id="export", variant="primary", compact=True)
                    with Horizontal(classes="form-row"):
                        yield Label("Hub   ")
                        yield Input(placeholder="OWNER/NAME", id="repo", compact=True)
                        yield Checkbox("private", id="private", compact=True)
                        yield Button("Dry run", id="dry-run", compact=True)
                        yield Button("Push", id="push", variant="warning", compact=True)
            with Horizontal(id="export-busy"):
                yield LoadingIndicator(id="busy")
                yield Label("", id="export-status", markup=False)
                yield Button("Cancel", id="cancel", variant="error", compact=True)
            with VerticalScroll(id="export-result"):
                yield Static("", id="result-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        box = self.query_one("#export-box")
        box.border_title = escape_controls(f"Export / push: {self.run.path.name} ({self.run.kind})")
        self.query_one("#base-row").display = self.run.kind not in IMAGE_KINDS
        self.show_format(self.spec)
        formats = self.query_one("#formats", OptionList)
        formats.highlighted = 0
        formats.focus()

    # -- the format and its options ----------------------------------------------------------------
    @on(OptionList.OptionHighlighted, "#formats")
    def _format_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        spec = next(f for f in self.formats if f.name == event.option.id)
        if spec is not self.spec:
            self.show_format(spec)

    @on(OptionList.OptionSelected, "#formats")
    def _format_chosen(self) -> None:
        self.query_one("#export", Button).focus()  # enter on a format: the next enter exports it

    def show_format(self, spec: ExportFormat) -> None:
        """The summary and only the options `spec` reads; the folder follows the format unless the user typed one."""
        self.spec = spec
        self.query_one("#format-summary", Static).update(f"{spec.name}: {spec.summary}")
        dtype = self.query_one("#dtype", Select)
        dtype.prompt = f"{spec.dtype_default} (default)" if spec.dtype_default else "default"  # before the options: the blank one shows it
        dtype.set_options([(d, d) for d in spec.dtypes])
        self.query_one("#quantize", Select).clear()
        self.query_one("#with-base", Checkbox).value = False
        for selector, shown in (("#dtype", bool(spec.dtypes)), ("#dtype-label", bool(spec.dtypes)), ("#quantize", bool(spec.quantize)),
                                ("#quantize-label", bool(spec.quantize)), ("#with-base", spec.with_base)):
            self.query_one(selector).display = shown
        self.query_one("#options-row").display = bool(spec.dtypes or spec.quantize or spec.with_base)
        self._sync_dtype()
        out = self.query_one("#out", Input)
        new_default = str(default_folder(RunDir(self.run.path), spec.name))
        if out.value.strip() in ("", self._default_out):
            out.value = new_default
        self._default_out = new_default
        if self.result is None and not self.is_busy:
            self.show_text(Text(BEFORE.format(push=default_push_folder(RunDir(self.run.path), spec.name)), style="dim"))

    @on(Checkbox.Changed, "#with-base")
    def _sync_dtype(self) -> None:
        """gguf-adapter: --dtype is the type of the base file --with-base writes, so it waits for that switch."""
        if self.spec.with_base:
            self.query_one("#dtype", Select).disabled = not self.query_one("#with-base", Checkbox).value
        else:
            self.query_one("#dtype", Select).disabled = False

    def choices(self) -> ExportChoices:
        dtype = self.query_one("#dtype", Select).value
        quantize = self.query_one("#quantize", Select).value
        out = self.query_one("#out", Input).value.strip()
        return ExportChoices(
            format=self.spec.name,
            dtype=None if dtype is Select.NULL else str(dtype),
            quantize=None if quantize is Select.NULL else int(quantize),
            base=self.query_one("#base", Input).value.strip() or None,
            with_base=self.query_one("#with-base", Checkbox).value,
            out=None if out == self._default_out else (str(Path(out).expanduser()) if out else None),
        )

    # -- running ---------------------------------------------------------------------------------
    @property
    def is_busy(self) -> bool:
        return self.has_class("-busy")

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "cancel":
            return self.is_busy
        if action in ("close", "export"):
            return not self.is_busy
        return True

    def action_close(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        if self.is_busy:
            self.set_status("cancelling: the command is asked to stop and remove what it half wrote…")
            self.workers.cancel_group(self, "export")

    def action_export(self) -> None:
        self.start("export", export_args(self.run, self.spec, self.choices()))

    def push(self, dry_run: bool) -> None:
        choices = self.choices()
        repo = self.query_one("#repo", Input).value.strip()
        if not repo:
            self.app.show_error("type the Hub repo to push to in the Hub field: OWNER/NAME",
                                hint="e.g. your-name/smollm2-support-lora; Dry run writes and lists what would go up, without the network")
            return
        if choices.with_base:
            self.app.show_error("'with base' is an export option: a push uploads the adapter GGUF and its Modelfile, not the base",
                                hint="clear 'with base' to push, or Export to write the base GGUF beside the adapter")
            return
        self.start("push", push_args(self.run, self.spec, choices, repo, private=self.query_one("#private", Checkbox).value, dry_run=dry_run))

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        actions = {"export": self.action_export, "dry-run": lambda: self.push(True), "push": lambda: self.push(False), "cancel": self.action_cancel}
        if event.button.id in actions:
            actions[event.button.id]()

    @on(Input.Submitted, "#repo")
    def _repo_entered(self) -> None:
        self.push(True)  # enter in the repo field: the dry run, never the upload

    def start(self, what: str, args: list[str]) -> None:
        if self.is_busy:
            self.notify("a command is running already; escape cancels it", severity="warning")
            return
        shown = Text(command_line(args) + "\n", style="bold")
        earlier = self.replaces(args)
        if earlier is not None:
            shown.append(f"(replaces the earlier export in {escape_controls(str(earlier))} when it is done)\n", style="dim")
        self.show_text(shown)
        self.set_status(f"{'exporting' if what == 'export' else 'pushing' if '--dry-run' not in args else 'writing the dry run'} "
                        f"{self.spec.name}… (escape cancels)")
        self.set_busy(True)  # at once, so a second press cannot start a second command
        self.run_command(what, args, shown, earlier is not None)

    def set_busy(self, busy: bool) -> None:
        self.set_class(busy, "-busy")
        for selector in ("#export", "#dry-run", "#push"):
            self.query_one(selector, Button).disabled = busy
        if not busy and self.focused is None:
            self.query_one("#formats").focus()  # the button that had focus was disabled
        self.refresh_bindings()

    def set_status(self, text: str) -> None:
        self.query_one("#export-status", Label).update(text)

    def show_text(self, text: Text) -> None:
        self.query_one("#result-text", Static).update(text)
        self.query_one("#export-result", VerticalScroll).scroll_home(animate=False)

    def target(self, args: list[str]) -> Path:
        """The folder this command writes."""
        if "--out" in args:
            return Path(args[args.index("--out") + 1])
        if args[0] == "push":
            return default_push_folder(RunDir(self.run.path), self.spec.name)
        return Path(self._default_out)

    def replaces(self, args: list[str]) -> Path | None:
        """The earlier export that this command's folder holds (the engine replaces it; anything else it refuses to touch)."""
        folder = self.target(args)
        return folder if (folder / EXPORT_STAMP).is_file() else None

    @work(exclusive=True, group="export")
    async def run_command(self, what: str, args: list[str], shown: Text, earlier: bool) -> None:
        """`mlxft export|push ... --json` as a child process: its last JSON line is the result, its stderr the error."""
        lines: list[str] = []
        stamp = self.target(args) / EXPORT_STAMP
        before = _mtime(stamp)
        try:
            code, err = await stream_command(args, lines.append, interrupt=True)
        except asyncio.CancelledError:
            self.set_busy(False)
            if _mtime(stamp) not in (None, before):  # the command published before the stop reached it
                self.set_status(f"mlxft {what} had finished before the stop arrived: the export is complete")
                self.show_text(shown + Text(f"finished before the cancel: {stamp.parent} is complete\n"))
            else:
                self.set_status(f"cancelled: mlxft {what} was stopped; nothing was published")
                self.show_text(shown + Text("cancelled: nothing was published" + (", the earlier export is as it was" if earlier else "") + "\n"))
            raise
        except OSError as exc:
            code, err = 1, str(exc)
        self.set_busy(False)
        data = last_json(lines)
        if code != 0 or data is None:
            message, hint = error_from_stderr(err, code, f"mlxft {what}")
            self.set_status(f"mlxft {what} failed (exit code {code})")
            self.show_text(shown + Text(escape_controls(f"error: {message}", keep="\n") + "\n", style="red")
                           + Text(escape_controls(f"hint: {hint}\n", keep="\n") if hint else "", style="yellow"))
            self.app.show_error(message, hint)
            return
        self.result = data
        done = {"export": "exported", "push": "dry run written" if data.get("dry_run") else "pushed"}[what]
        warned = sum(is_warning(n) for n in data.get("notes") or [])
        self.set_status(f"{done}" + (f", with {warned} warning(s): read them below" if warned else "") + f": {escape_controls(str(data['folder']))}")
        self.show_text(shown + result_text(what, data))
        self.query_one("#export-result", VerticalScroll).focus()  # arrows scroll the result; escape still closes
