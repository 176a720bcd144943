"""The Data screen: open a data set, see every problem and jump to its row, browse, statistics, split, and the review workflow.

Validation is `mlxft data validate --json` in a child process, with or without a model: the same
report the command prints, a child that can be stopped when another file is opened (a thread
could not be), and the tokenizer (which goes through mlx-lm) never loads in the UI process.
Reading a page of rows, splitting, and the review files are pure Python on worker threads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Group
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Input,
    Label,
    Select,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)

from mlxft.data.formats import FORMATS
from mlxft.errors import DataError, MlxftError
from mlxft.recipe import kinds_for_format
from tui.runner import stream_command
from tui.widgets.bars import BarChart, balance_bars, histogram_bars
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.example import example_renderable, row_summary, turns_parts
from tui.widgets.nav import KeyFooter, NavBar, NavScreen, key_allowed

TABS = ("report", "browse", "stats", "split", "review")
TAB_FOCUS = {"report": "#report-findings", "browse": "#browse-rows", "stats": "StatsPane", "split": "#split-fractions", "review": "#review-log"}
PAGE_ROWS = 200  # rows read and listed at a time in Browse; the rest stay on disk
FINDINGS_SHOWN = 2000  # problems, duplicates and leaks listed in Report; `mlxft data validate --json` has all

HELP = """\
## Data

| key | what |
|---|---|
| ctrl+o / enter in a field | open (validate) the data file or folder; with a model, token lengths too (tab reaches the fields) |
| F2-F6 | the Report, Browse, Stats, Split and Review tabs (from a field too) |
| ctrl+t | stop a validation that is running |
| escape | leave a field, so the letter and number keys work |
| u | use the opened data for training (the Train screen picks it up) |
| enter on a problem | jump to that row in **Browse** |
| [ / ] | previous / next page of rows in Browse |
| a / s | review: accept the corrected output / skip the item (each saves the review file) |
| n / p | review: next / previous item (the footer shows them as n/p) |
| e, escape | review: edit the corrected output, leave the editor |
| ctrl+s | review: save the review file |
| b | review: build the training sets from the review file |

Format and map: leave `auto-detect` unless detection guesses wrong; `map` names your columns
(`prompt=question, completion=answer` reads `question` as the prompt).

Same as: `mlxft data validate PATH [--model M] [--format F] [--map COLUMN=YOURS] [--json]`, `mlxft data show PATH --at FILE:LINE`,
`mlxft data split`, `mlxft data failures LOG`, `mlxft data review LOG --cluster C --out FILE`,
`mlxft data build FILE --out DIR`.
"""


def short_where(where: str, base: Path | None) -> str:
    """`/long/path/data/train.jsonl:12` as `train.jsonl:12` when it lies under the opened folder."""
    if base is not None:
        prefix = str(base).rstrip("/") + "/"
        if where.startswith(prefix):
            return where[len(prefix):]
    return where


def error_from_stderr(stderr: str, code: int) -> MlxftError:
    """A headless command's `error: ...` / `hint: ...` lines as an error for the dialog (or its last lines)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = next((line.removeprefix("error: ") for line in lines if line.startswith("error: ")), None)
    hint = next((line.strip().removeprefix("hint: ") for line in lines if line.strip().startswith("hint: ")), None)
    if message is None:
        message = "\n".join(lines[-8:]) or f"the command exited with code {code}"
    return MlxftError(message, hint)


def trained_by(fmt: str) -> str:
    """`with kind lm-classify` for classification data: the kinds whose recipes can train this format (Train's `kind`)."""
    kinds = kinds_for_format(fmt)
    return f"with kind {' or '.join(kinds)}" + (" (u sets it in Train)" if len(kinds) == 1 else "")


def findings(report: dict, base: Path | None = None) -> list[tuple[str, str, str, str]]:
    """(kind, split, where, detail) for every located problem in a validation report: bad rows, then warnings."""
    out = [("bad", p["split"], p["where"], (f"{p['field']}: " if p["field"] else "") + p["reason"]) for p in report["problems"]]
    for name, s in report["splits"].items():
        out += [("dropped", name, *d.split(": ", 1)) for d in s["dropped_where"]]
        out += [("duplicate", name, a, f"repeats {short_where(b, base)}") for a, b in s["duplicates"]]
        out += [("near-dup", name, a, f"nearly repeats {short_where(b, base)}") for a, b in s["near_duplicates"]]
        out += [("leak", name, a, f"also in train at {short_where(b, base)}") for a, b in s["leaked"]]
    return out


# -- Report ----------------------------------------------------------------------------------------


class ReportPane(Vertical):
    """The verdict, errors and warnings, and a table of every located problem; enter jumps to the row."""

    class Jump(Message):
        def __init__(self, split: str, where: str):
            super().__init__()
            self.split, self.where = split, where

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="report-verdict-box"):
            yield Static("Nothing opened yet.", id="report-verdict")
        yield DataTable(id="report-findings", cursor_type="row", zebra_stripes=True)

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, str]] = []  # (split, where) of each table row

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("kind", "split", "where", "problem")

    def show(self, report: dict, base: Path | None) -> None:
        found = findings(report, base)
        self.rows = [(split, where) for _kind, split, where, _detail in found[:FINDINGS_SHOWN]]
        table = self.query_one(DataTable)
        table.clear()
        styles = {"bad": "bold red", "dropped": "yellow", "leak": "yellow"}
        for i, (kind, split, where, detail) in enumerate(found[:FINDINGS_SHOWN]):
            table.add_row(Text(kind, style=styles.get(kind, "dim")), split, Text(short_where(where, base)), Text(detail), key=str(i))
        self.query_one("#report-verdict", Static).update(self._verdict(report, len(found)))
        table.display = bool(found)

    @staticmethod
    def _verdict(report: dict, n_found: int) -> str:
        lines = [f"[bold green]usable for training[/] {escape(trained_by(report['format']))}" if report["usable"] and report["format"]
                 else "[bold green]usable for training[/]" if report["usable"] else "[bold red]NOT usable for training[/]: fix the errors and bad rows below"]
        lines += [f"[red]error:[/] {escape(e)}" for e in report["errors"]]
        if report["problems"]:
            lines.append(f"[red]{len(report['problems'])} bad row(s)[/] (enter on a row below shows it)")
        lines += [f"[yellow]warning:[/] {escape(w)}" for w in report["warnings"]]
        if report.get("class_weights"):
            lines.append("suggested class weights: " + ", ".join(f"{escape(k)}: {v:.3g}" for k, v in report["class_weights"].items()))
        if n_found > FINDINGS_SHOWN:
            lines.append(f"[yellow]listing the first {FINDINGS_SHOWN:,} of {n_found:,}[/]; `mlxft data validate --json PATH` has them all")
        if not n_found and report["usable"]:
            lines.append("no bad rows, duplicates or leaks")
        return "\n".join(lines)

    @on(DataTable.RowSelected, "#report-findings")
    def jump(self, event: DataTable.RowSelected) -> None:
        split, where = self.rows[int(event.row_key.value)]
        self.post_message(self.Jump(split, where))


# -- Browse ----------------------------------------------------------------------------------------


class BrowsePane(Horizontal):
    """A page of rows of one split (never the whole file) and the highlighted row in full."""

    BINDINGS = [Binding("left_square_bracket", "page(-1)", "Pages", key_display="[ ]"), Binding("right_square_bracket", "page(1)", "Next page", show=False)]

    def check_action(self, action: str, parameters) -> bool | None:
        return key_allowed(self, action)

    def compose(self) -> ComposeResult:
        with Vertical(id="browse-list"):
            yield Select([], id="browse-split", prompt="split", compact=True)
            yield DataTable(id="browse-rows", cursor_type="row")
            yield Label("", id="browse-page", classes="muted")
        with VerticalScroll(id="browse-detail-box"):
            yield Static("Open a data set to browse its rows.", id="browse-detail")

    def __init__(self):
        super().__init__()
        self.path: str | None = None
        self.format: str | None = None
        self.base: Path | None = None
        self.totals: dict[str, int] = {}
        self.page = None

    def on_mount(self) -> None:
        self.query_one("#browse-rows", DataTable).add_columns("line", "row")

    def show(self, path: str, report: dict, base: Path | None) -> None:
        self.path, self.format, self.base = path, report["format"], base
        self.totals = {name: s["rows"] for name, s in report["splits"].items()}
        select = self.query_one("#browse-split", Select)
        with self.prevent(Select.Changed):
            select.set_options([(f"{name} ({n:,} rows)", name) for name, n in self.totals.items()])
            if self.totals:
                select.value = next(iter(self.totals))
        self.query_one("#browse-rows", DataTable).clear()
        self.query_one("#browse-detail", Static).update("")
        if self.totals:
            self.load(next(iter(self.totals)))

    def go_to(self, split: str, where: str) -> None:
        select = self.query_one("#browse-split", Select)
        with self.prevent(Select.Changed):
            select.value = split
        self.load(split, at=where)

    @on(Select.Changed, "#browse-split")
    def split_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and self.path:
            self.load(event.value)

    def action_page(self, step: int) -> None:
        if self.page is None:
            return
        start = self.page.start + step * PAGE_ROWS
        if start < 0 or (step > 0 and not self.page.more):
            self.app.bell()
            return
        self.load(self.page.split, start=start)

    @work(thread=True, exclusive=True, group="browse")
    def load(self, split: str, start: int = 0, at: str | None = None) -> None:
        from mlxft.data.readers import read_page

        self.app.call_from_thread(self.query_one("#browse-page", Label).update, "reading…")
        try:
            page = read_page(self.path, split, start=start, count=PAGE_ROWS, at=at)
        except MlxftError as exc:
            self.app.call_from_thread(self.app.show_error, exc)
            return
        self.app.call_from_thread(self._show_page, page)

    def _show_page(self, page) -> None:
        self.page = page
        table = self.query_one("#browse-rows", DataTable)
        table.clear()
        for i, row in enumerate(page.rows):
            # An image file has no line: its label folder and name say which it is.
            where = str(row.line) if row.line else "/".join(Path(row.source).parts[-2:])
            table.add_row(where, Text(row_summary(row, self.format)), key=str(i))
        end = page.start + len(page.rows)
        total = self.totals.get(page.split)
        paging = f"rows {page.start + 1:,}-{end:,}" + (f" of {total:,}" if total is not None else "") + (" · [ ] pages" if page.start or page.more else "")
        self.query_one("#browse-page", Label).update(paging if page.rows else "no rows in this split")
        if page.rows:
            table.move_cursor(row=page.found or 0)
            self._show_row(page.found or 0)
            if page.found is not None:
                table.focus()

    @on(DataTable.RowHighlighted, "#browse-rows")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.page is not None and event.row_key.value is not None:
            self._show_row(int(event.row_key.value))

    def _show_row(self, index: int) -> None:
        if self.page is not None and index < len(self.page.rows):
            self.query_one("#browse-detail", Static).update(example_renderable(self.page.rows[index], self.format))


# -- Stats -----------------------------------------------------------------------------------------


class StatsPane(VerticalScroll):
    """Token-length histogram per split (bins past max_seq_length in red) and label balance."""

    def compose(self) -> ComposeResult:
        yield Static("Open a data set to see its statistics.", classes="muted")

    def show(self, report: dict) -> None:
        self.remove_children()
        widgets = []
        limit = report["max_seq_length"]
        for name, s in report["splits"].items():
            t = s.get("token_lengths")
            if t:
                over = s["over_max_length"]
                widgets.append(Static(f"[b]{name}: token lengths of {s['good']:,} rows[/]  min {t['min']} · median {t['median']:g} · p95 {t['p95']:g} · max {t['max']} · "
                                      + (f"[red]{over:,} over max_seq_length {limit}[/]" if over else f"none over max_seq_length {limit}"), classes="stats-title"))
                widgets.append(BarChart(histogram_bars(t["histogram"]["edges"], t["histogram"]["counts"], limit)))
        if not widgets and any(s["good"] for s in report["splits"].values()) and report["format"] != "image-classification":
            widgets.append(Static("Token lengths need a tokenizer: type a model in the Model field (or pick one on Models) and open again.", classes="muted"))
        for name, s in report["splits"].items():
            if s["labels"]:
                widgets.append(Static(f"[b]{name}: labels[/] ({len(s['labels'])} classes)", classes="stats-title"))
                widgets.append(BarChart(balance_bars(s["labels"])))
                if name == "train" and report.get("class_weights"):
                    weights = report["class_weights"]
                    ratio = max(s["labels"].values()) / max(1, min(s["labels"].values()))
                    widgets.append(Label("class weights from this balance (inverse frequency): "
                                         + " · ".join(f"{k} {v:.2f}" for k, v in weights.items())
                                         + f"; most/least common {ratio:.1f}x. w: put them in the Train form", markup=False, classes="muted"))
        for name, s in report["splits"].items():
            if s.get("image_sizes"):
                w, h = s["image_sizes"]["width"], s["image_sizes"]["height"]
                modes = ", ".join(f"{m}: {n}" for m, n in s["image_modes"].items())
                widgets.append(Label(f"{name}: images {w['min']}-{w['max']} wide (median {w['median']:g}), {h['min']}-{h['max']} high (median {h['median']:g}); {modes}", markup=False))
        self.mount_all(widgets or [Static("No statistics: no good rows.", classes="muted")])


# -- Split -----------------------------------------------------------------------------------------


class SplitPane(Vertical):
    """Seeded (optionally stratified) train/valid/test split of the train split, written as JSONL; never over the input."""

    def compose(self) -> ComposeResult:
        yield Static("Open a data set, then split its train split into train / valid / test files.", id="split-intro", classes="muted")
        with Horizontal(classes="form-row"):
            yield Label("fractions", classes="field-label")
            yield Input("0.8,0.1,0.1", id="split-fractions", compact=True)
            yield Label("seed", classes="field-label")
            yield Input("0", id="split-seed", type="integer", compact=True)
            yield Label("stratify by", classes="field-label")
            yield Input(placeholder="column (optional)", id="split-label", compact=True)
        with Horizontal(classes="form-row"):
            yield Label("out folder", classes="field-label")
            yield Input(id="split-out", compact=True)
            yield Button("Save splits", id="split-save", compact=True, classes="-inline", variant="primary")
        yield Static("", id="split-result")

    def __init__(self):
        super().__init__()
        self.path: str | None = None

    def show(self, path: str, report: dict, base: Path | None) -> None:
        self.path = path
        train = report["splits"].get("train")
        rows = f" ({train['rows']:,} rows)" if train else ""
        self.query_one("#split-intro", Static).update(f"Split the train split of {path}{rows} into train / valid / test, seeded; stratify by a label column to keep its balance in every split.")
        self.query_one("#split-label", Input).value = "label" if train and train["labels"] else ""
        self.query_one("#split-out", Input).value = str((base or Path(".")) / "split")
        self.query_one("#split-result", Static).update("")

    @on(Button.Pressed, "#split-save")
    @on(Input.Submitted, "#split-out")
    def save(self) -> None:
        if not self.path:
            self.app.show_error("open a data set first", hint="type its path at the top and press enter")
            return
        try:
            fractions = [float(x) for x in self.query_one("#split-fractions", Input).value.replace(" ", "").split(",") if x]
        except ValueError:
            self.app.show_error(f"fractions: {self.query_one('#split-fractions', Input).value!r} is not a list of numbers", hint="e.g. 0.8,0.1,0.1 (train, valid, test) or 0.9,0.1")
            return
        seed_text = self.query_one("#split-seed", Input).value.strip() or "0"
        out = self.query_one("#split-out", Input).value.strip()
        if not out:
            self.app.show_error("out folder: empty", hint="the folder that gets train.jsonl, valid.jsonl and test.jsonl")
            return
        label = self.query_one("#split-label", Input).value.strip() or None
        existing = [n for n in ("train", "valid", "test")[: len(fractions)] if (Path(out).expanduser() / f"{n}.jsonl").exists()]
        if existing:
            def decided(yes: bool | None) -> None:
                if yes:
                    self.write(fractions, int(seed_text), label, out, True)

            self.app.push_screen(ConfirmDialog(f"{out} already holds {', '.join(f'{n}.jsonl' for n in existing)}. Replace them with the new split?", yes="Replace"), decided)
            return
        self.write(fractions, int(seed_text), label, out, False)

    @work(thread=True, exclusive=True, group="split")
    def write(self, fractions: list[float], seed: int, label: str | None, out: str, overwrite: bool) -> None:
        from mlxft.data.sources import read_split
        from mlxft.data.split import split_rows, write_splits

        try:
            records = read_split(self.path, "train")
            if records is None:
                raise DataError(f"{self.path}: no train split to split")
            splits = split_rows([r.data for r in records], fractions=fractions, seed=seed, label_key=label)
            # The files the rows came from, so no split is ever written over one of them.
            paths = write_splits(splits, Path(out).expanduser(), input_paths={r.source for r in records}, overwrite=overwrite)
        except MlxftError as exc:
            self.app.call_from_thread(self.app.show_error, exc)
            return
        text = "\n".join(f"{name}: {len(splits[name]):,} rows -> {path}" for name, path in paths.items())
        self.app.call_from_thread(self._written, text, str(Path(out).expanduser()))

    def _written(self, text: str, folder: str) -> None:
        self.query_one("#split-result", Static).update(text)

        def decided(yes: bool | None) -> None:
            if yes:
                self.app.use_data(folder)
                self.app.notify(f"data: {folder} (used by Train)")

        self.app.push_screen(ConfirmDialog(f"Wrote the splits:\n{text}\n\nUse {folder} for training?", yes="Use for training"), decided)


# -- Review ----------------------------------------------------------------------------------------


def review_file_for(log: Path, cluster: str) -> Path:
    """Where a cluster's review goes: next to its eval log, named after the cluster."""
    slug = re.sub(r"[^\w.-]+", "-", cluster).strip("-") or "cluster"
    return log.parent / f"review-{slug}.jsonl"


class ReviewSession:
    """The items of one review file, in memory: each accepted (corrected filled), skipped, or not yet seen.

    It is written whole and atomically on every accept and skip, in the format `mlxft data review`
    exports; a file changed on disk since it was read is not written over.
    """

    def __init__(self, path: Path, entries: list[dict], resumed: bool):
        self.path, self.entries, self.resumed = path, entries, resumed
        self.status = ["accepted" if (e.get("corrected") or "").strip() else "open" for e in entries]
        self.drafts: dict[int, str] = {}
        self.index = next((i for i, s in enumerate(self.status) if s == "open"), 0)
        self.saved_stamp = path.stat().st_mtime_ns if path.exists() else None

    @classmethod
    def open(cls, path: Path, rows=()) -> ReviewSession:
        """Resume the review file at `path` when it exists (never replaced), else start one from `rows` (EvalRows)."""
        from mlxft.data.curation import read_review_entries, review_entry

        if path.exists():
            return cls(path, read_review_entries(path), resumed=True)
        return cls(path, [review_entry(r) for r in rows], resumed=False)

    def counts(self) -> dict[str, int]:
        return {k: self.status.count(k) for k in ("accepted", "skipped", "open")}

    def set(self, index: int, corrected: str, status: str) -> None:
        self.entries[index]["corrected"] = corrected
        self.status[index] = status
        self.drafts.pop(index, None)
        self.save()

    def save(self) -> None:
        from mlxft.data.curation import write_review_entries

        now = self.path.stat().st_mtime_ns if self.path.exists() else None
        if now != self.saved_stamp:
            raise DataError(f"{self.path}: changed on disk since it was opened here; not written over", hint="load it again (the Load button) to pick up those edits, then redo the last item")
        write_review_entries(self.entries, self.path)
        self.saved_stamp = self.path.stat().st_mtime_ns

    def next_open(self, after: int) -> int:
        order = list(range(after + 1, len(self.entries))) + list(range(after + 1))
        return next((i for i in order if self.status[i] == "open"), min(after + 1, len(self.entries) - 1))


class BuildDialog(ModalScreen[dict | None]):
    """Where to build the training sets, and whether passing items join them."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, review: Path, out: Path, log: Path | None):
        super().__init__(classes="dialog-screen")
        self.review, self.out, self.eval_log = review, out, log

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Build training sets", classes="dialog-title")
            yield Static(f"from {self.review}\ninto this folder's sft/ (train.jsonl, valid.jsonl) and preference/ pairs:", markup=False)
            yield Input(str(self.out), id="build-out")
            if self.eval_log is not None:
                yield Checkbox("mix in items the model already passes (one per correction)", id="build-keep")
            yield Checkbox("replace the sets if the folder is not empty", id="build-overwrite")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Build", id="build", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#build")
    def build(self) -> None:
        keep = self.query("#build-keep")
        self.dismiss({"out": self.query_one("#build-out", Input).value.strip(), "overwrite": self.query_one("#build-overwrite", Checkbox).value,
                      "keep_passing": bool(keep) and keep.first(Checkbox).value})

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class ReviewPane(Vertical):
    """Eval run log -> failure clusters -> each failing item: prompt, model output, expected, an editable correction."""

    BINDINGS = [
        Binding("a", "accept", "Accept"), Binding("s", "skip", "Skip"), Binding("n", "move(1)", "Next/Back", key_display="n/p"),
        Binding("p", "move(-1)", "Back", show=False), Binding("e", "edit", "Edit"), Binding("ctrl+s", "save", "Save", show=False),
        Binding("b", "build", "Build"), Binding("escape", "leave_editor", show=False),
    ]

    def check_action(self, action: str, parameters) -> bool | None:
        return key_allowed(self, action)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label("eval log", classes="field-label")
            yield Input(placeholder="run-log.jsonl from `mlxft eval`, or a review file", id="review-log", compact=True)
            yield Button("Load", id="review-load", compact=True, classes="-inline")
        with Horizontal(id="review-body"):
            with Vertical(id="review-side"):
                yield DataTable(id="review-clusters", cursor_type="row")
                yield Static("", id="review-file", classes="muted")
            with Vertical(id="review-item"):
                with VerticalScroll(id="review-text"):  # the item scrolls; the editor and the buttons stay on screen
                    yield Static("Load an evaluation run log, then pick a failure cluster (enter).", id="review-position")
                    yield Static("", id="review-question")
                    with Horizontal(id="review-answers"):  # side by side: what the model said, what was expected
                        yield Static("", id="review-model")
                        yield Static("", id="review-expected")
                yield Label("corrected output", classes="section-title")
                yield TextArea("", id="review-corrected", soft_wrap=True, show_line_numbers=False)
                with Horizontal(id="review-buttons"):
                    for label, action in (("Accept a", "accept"), ("Skip s", "skip"), ("Back p", "move(-1)"), ("Next n", "move(1)"), ("Build b", "build")):
                        yield Button(label, name=action, compact=True)

    def __init__(self):
        super().__init__()
        self.eval_log: Path | None = None
        self.clusters: list = []
        self.session: ReviewSession | None = None
        self._prefill = ""

    def on_mount(self) -> None:
        self.query_one("#review-clusters", DataTable).add_columns("cluster", "n", "share")
        newest = self.newest_eval_log()
        if newest is not None:
            self.query_one("#review-log", Input).value = str(newest)

    def newest_eval_log(self) -> Path | None:
        logs = sorted(Path(self.app.runs_dir).glob("*/eval/run-log.jsonl"), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None

    @on(Button.Pressed, "#review-buttons Button")
    async def button_pressed(self, event: Button.Pressed) -> None:
        await self.run_action(event.button.name)  # the buttons run the same actions as the keys

    # -- loading -------------------------------------------------------------------------------------
    @on(Button.Pressed, "#review-load")
    @on(Input.Submitted, "#review-log")
    def load(self) -> None:
        text = self.query_one("#review-log", Input).value.strip()
        if not text:
            self.app.show_error("eval log: empty", hint="give the run-log.jsonl that `mlxft eval` wrote (RUN_DIR/eval/run-log.jsonl), or a review file")
            return
        self.unless_unsaved(lambda: self.read_log(Path(text).expanduser()))

    def unless_unsaved(self, then) -> None:
        """Run `then` once the open item's edited text is either accepted or knowingly left."""
        s = self.session
        if s is None or not self._editor_changed():
            then()
            return

        def decided(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(ConfirmDialog(f"Item {s.index + 1} has edited text that is not accepted. Leave it?", yes="Leave it"), decided)

    @work(thread=True, exclusive=True, group="review")
    def read_log(self, path: Path) -> None:
        from mlxft.data.curation import failure_clusters, read_eval_log

        try:
            if _is_review_file(path):
                session = ReviewSession.open(path)
                self.app.call_from_thread(self._show_clusters, None, [])
                self.app.call_from_thread(self._start, session)
                return
            clusters = failure_clusters(read_eval_log(path))
        except MlxftError as exc:
            self.app.call_from_thread(self.app.show_error, exc)
            return
        except OSError as exc:
            self.app.call_from_thread(self.app.show_error, f"{path}: cannot read ({exc.strerror})", "check the path")
            return
        self.app.call_from_thread(self._show_clusters, path, clusters)

    def _show_clusters(self, log: Path | None, clusters: list) -> None:
        self.eval_log, self.clusters = log, clusters
        table = self.query_one("#review-clusters", DataTable)
        table.clear()
        for i, c in enumerate(clusters):
            table.add_row(c.label, str(c.count), f"{c.share:.0%}", key=str(i))
        if log is not None:
            self.query_one("#review-file", Static).update(f"{sum(c.count for c in clusters)} failure(s) in {len(clusters)} cluster(s); enter picks one" if clusters else "No failures: every item passed.")
            table.focus()

    @on(DataTable.RowSelected, "#review-clusters")
    def cluster_chosen(self, event: DataTable.RowSelected) -> None:
        cluster = self.clusters[int(event.row_key.value)]
        path = review_file_for(self.eval_log, cluster.label)

        def start() -> None:
            try:
                self._start(ReviewSession.open(path, cluster.rows))
            except MlxftError as exc:
                self.app.show_error(exc)

        self.unless_unsaved(start)

    def _start(self, session: ReviewSession) -> None:
        self.session = session
        self._show_item()
        if session.resumed:
            c = session.counts()
            self.app.notify(f"resumed {session.path.name}: {c['accepted']} accepted, {c['open']} to review")

    # -- one item --------------------------------------------------------------------------------------
    def _show_item(self) -> None:
        s = self.session
        entry = s.entries[s.index]
        status = {"accepted": "[green]accepted[/]", "skipped": "[yellow]skipped[/]", "open": "not reviewed"}[s.status[s.index]]
        self.query_one("#review-position", Static).update(f"[b]item {s.index + 1} of {len(s.entries)}[/] · id {escape(str(entry['id']))} · {escape(entry.get('failure') or '')} · {status}")
        if entry.get("messages"):
            question = Group(Text("conversation", style="bold cyan"), *turns_parts(entry["messages"]))
        else:
            question = Text("prompt\n", style="bold cyan") + Text(str(entry.get("prompt", "")))
        self.query_one("#review-question", Static).update(question)
        self.query_one("#review-model", Static).update(Text("model output\n", style="bold red") + Text(entry.get("model_answer") or "(empty)"))
        expected = entry.get("expected")
        self.query_one("#review-expected", Static).update(Text("expected\n", style="bold green") + Text(expected if expected is not None else "(none given)", style="" if expected is not None else "dim"))
        editor = self.query_one("#review-corrected", TextArea)
        self._prefill = s.drafts.get(s.index) or entry.get("corrected") or entry.get("expected") or entry.get("model_answer") or ""
        editor.load_text(self._prefill)
        self.query_one("#review-text", VerticalScroll).scroll_home(animate=False)
        self._show_file_status()

    def _show_file_status(self) -> None:
        s = self.session
        c = s.counts()
        saved = "saved" if s.path.exists() else "not written yet"
        self.query_one("#review-file", Static).update(f"{s.path.name} ({saved})\n{c['accepted']} accepted · {c['skipped']} skipped · {c['open']} open")

    def _editor_changed(self) -> bool:
        return self.session is not None and self.query_one("#review-corrected", TextArea).text != self._prefill and self.session.status[self.session.index] != "accepted"

    def _need_session(self) -> bool:
        if self.session is None:
            self.app.notify("load an eval log and pick a cluster first", severity="warning")
            return False
        return True

    def action_accept(self) -> None:
        if not self._need_session():
            return
        text = self.query_one("#review-corrected", TextArea).text
        if not text.strip():
            self.app.notify("the corrected output is empty; write it, or skip the item (s)", severity="warning")
            return
        self._record(text, "accepted")

    def action_skip(self) -> None:
        if self._need_session():
            self._record("", "skipped")

    def _record(self, corrected: str, status: str) -> None:
        s = self.session
        try:
            s.set(s.index, corrected, status)
        except MlxftError as exc:
            self.app.show_error(exc)
            return
        except OSError as exc:
            self.app.show_error(f"{s.path}: cannot write ({exc.strerror})", "check the folder is writable")
            return
        s.index = s.next_open(s.index)
        self._show_item()

    def action_move(self, step: int) -> None:
        if not self._need_session():
            return
        s = self.session
        if self._editor_changed():
            s.drafts[s.index] = self.query_one("#review-corrected", TextArea).text  # kept while the app runs
        s.index = max(0, min(len(s.entries) - 1, s.index + step))
        self._show_item()

    def action_edit(self) -> None:
        self.query_one("#review-corrected", TextArea).focus()

    def action_leave_editor(self) -> None:
        self.query_one("#review-clusters", DataTable).focus()

    def action_save(self) -> None:
        if not self._need_session():
            return
        try:
            self.session.save()
        except MlxftError as exc:
            self.app.show_error(exc)
            return
        self._show_file_status()
        self.app.notify(f"saved {self.session.path}")

    # -- build ---------------------------------------------------------------------------------------
    def action_build(self) -> None:
        if not self._need_session():
            return
        s = self.session
        out = s.path.parent / f"train-{s.path.stem.removeprefix('review-')}"

        def chosen(choice: dict | None) -> None:
            if choice and choice["out"]:
                self.build(s.path, Path(choice["out"]).expanduser(), choice["overwrite"], self.eval_log if choice["keep_passing"] else None)

        self.app.push_screen(BuildDialog(s.path, out, self.eval_log), chosen)

    @work(thread=True, exclusive=True, group="review-build")
    def build(self, review: Path, out: Path, overwrite: bool, keep_from: Path | None) -> None:
        from mlxft.data.curation import build_training_sets, read_eval_log

        try:
            passing = read_eval_log(keep_from) if keep_from is not None else None
            result = build_training_sets(review, out_dir=out, keep_passing=passing, overwrite=overwrite)
        except MlxftError as exc:
            self.app.call_from_thread(self.app.show_error, exc)
            return
        self.app.call_from_thread(self._built, result)

    def _built(self, result) -> None:
        sft = str(result.out_dir / "sft")

        def decided(yes: bool | None) -> None:
            if yes:
                self.app.use_data(sft)
                self.app.notify(f"data: {sft} (used by Train)")

        self.app.push_screen(ConfirmDialog(f"{result.summary()}\n\nUse {sft} for training?", yes="Use for training"), decided)


def _is_review_file(path: Path) -> bool:
    """A review file (its lines have `corrected`) rather than an eval run log."""
    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        return "corrected" in json.loads(first)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
        return False


# -- the screen ------------------------------------------------------------------------------------


class DataScreen(NavScreen):
    HELP = HELP
    BINDINGS = [
        Binding("ctrl+o", "open", "Open"), Binding("ctrl+t", "stop_validation", "Stop"), Binding("u", "use_data", "Use to train"),
        Binding("w", "use_weights", "Weights"),
        Binding("escape", "leave_field", "Leave field"),
        *(Binding(f"f{n}", f"show_tab('{tab}')", "Tabs" if n == 2 else tab, key_display="F2-F6", show=n == 2) for n, tab in enumerate(TABS, start=2)),
    ]

    DEFAULT_CSS = """
    DataScreen #data-open { height: 1; margin: 1 1 0 1; }
    DataScreen #data-columns { height: 1; margin: 0 1; }
    DataScreen #data-format { width: 24; }
    DataScreen #data-map { width: 1fr; }
    DataScreen .field-label { padding: 0 1; color: $text-muted; }
    DataScreen #data-path { width: 3fr; }
    DataScreen #data-model { width: 2fr; }
    DataScreen #data-max-len { width: 6; }
    DataScreen Button.-inline { min-width: 0; width: auto; margin-left: 1; }
    DataScreen #data-summary { margin: 0 1; height: auto; max-height: 2; }
    DataScreen #data-tabs { height: 1fr; }
    DataScreen TabPane { padding: 0 1; }
    DataScreen ReportPane, DataScreen BrowsePane, DataScreen StatsPane, DataScreen SplitPane, DataScreen ReviewPane { height: 1fr; }
    DataScreen #report-verdict-box { height: auto; max-height: 35%; }
    DataScreen #report-findings { height: 1fr; }
    DataScreen #browse-list { width: 2fr; min-width: 30; }
    DataScreen #browse-rows { height: 1fr; }
    DataScreen #browse-detail-box { width: 3fr; padding: 0 1; border-left: vkey $panel; }
    DataScreen .form-row { height: 1; margin-bottom: 1; }
    DataScreen .form-row Input { width: 1fr; }
    DataScreen #split-seed { width: 8; }
    DataScreen #split-intro { margin-bottom: 1; }
    DataScreen .stats-title { margin-top: 1; color: $accent; }
    DataScreen #review-body { height: 1fr; }
    DataScreen #review-side { width: 28; }
    DataScreen #review-clusters { height: 1fr; }
    DataScreen #review-file { height: auto; }
    DataScreen #review-item { width: 1fr; padding: 0 1; }
    DataScreen #review-text { height: 1fr; }
    DataScreen #review-answers { margin: 0; height: auto; }
    DataScreen #review-answers Static { width: 1fr; margin-right: 2; }
    DataScreen #review-corrected { height: 5; }
    DataScreen #review-buttons { height: 1; }
    DataScreen #review-buttons Button { margin-right: 1; min-width: 0; width: auto; }
    """

    def compose(self) -> ComposeResult:
        yield NavBar("data")
        with Horizontal(id="data-open"):
            yield Label("data", classes="field-label")
            yield Input(placeholder="a file, folder or Hub id", id="data-path", compact=True)
            yield Label("model", classes="field-label")
            yield Input(placeholder="optional: token lengths", id="data-model", compact=True)
            yield Label("max", classes="field-label")
            yield Input("2048", id="data-max-len", type="integer", compact=True, tooltip="max_seq_length: longer rows are marked")
            yield Button("Open", id="data-open-button", compact=True, classes="-inline", variant="primary")
        with Horizontal(id="data-columns"):
            yield Label("format", classes="field-label")
            yield Select([("auto-detect", "auto"), *((f, f) for f in FORMATS)], value="auto", allow_blank=False, id="data-format", compact=True)
            yield Label("map", classes="field-label")
            yield Input(placeholder="your columns, e.g. prompt=question, completion=answer", id="data-map", compact=True)
        yield Static("tab to the data field, type a file, folder or Hub id, enter: every row is checked, every problem listed.", id="data-summary", classes="muted")
        with TabbedContent(id="data-tabs"):
            with TabPane("Report", id="tab-report"):
                yield ReportPane()
            with TabPane("Browse", id="tab-browse"):
                yield BrowsePane()
            with TabPane("Stats", id="tab-stats"):
                yield StatsPane()
            with TabPane("Split", id="tab-split"):
                yield SplitPane()
            with TabPane("Review", id="tab-review"):
                yield ReviewPane()
        yield KeyFooter()

    def __init__(self):
        super().__init__()
        self.path: str | None = None
        self.report: dict | None = None

    def on_mount(self) -> None:
        self.prefill()
        self.query_one("#data-tabs Tabs").focus()  # not the path field: a digit typed on arrival switches screens, it is not text

    def on_screen_resume(self) -> None:
        self.prefill()

    def prefill(self) -> None:
        """Empty fields take what other screens chose: the data offered to Train, the model picked on Models."""
        for field, value in (("#data-path", self.app.data_path), ("#data-model", self.app.selected_model)):
            box = self.query_one(field, Input)
            if value and not box.value:
                box.value = value
        if self.report is None and self.app.data_path and "data" in self.app.remembered:
            self.query_one("#data-summary", Static).update(
                f"last used data: {escape(self.app.data_path)} (in the field above; tab to it and press enter to open it)")

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "stop_validation" and not self.validating:
            return False
        if action == "use_data" and self.report is None:
            return False
        if action == "use_weights" and not (self.report or {}).get("class_weights"):
            return False
        return key_allowed(self, action)

    @property
    def validating(self) -> bool:
        return any(w.is_running for w in self.workers if w.group == "validate")

    @on(Input.Submitted, "#data-path, #data-model, #data-max-len, #data-map")
    @on(Button.Pressed, "#data-open-button")
    def action_open(self) -> None:
        path = self.query_one("#data-path", Input).value.strip()
        if not path:
            self.app.show_error("data: empty", hint="type a data file (.jsonl .json .csv .tsv .parquet), a folder of train/valid/test files, an image folder or a Hub id")
            return
        max_len = self.query_one("#data-max-len", Input).value.strip() or "2048"
        if not max_len.isdigit() or int(max_len) < 1:
            self.app.show_error(f"max: {max_len!r} is not a positive whole number", hint="the longest sequence training keeps (max_seq_length), e.g. 2048")
            return
        columns = []
        for pair in filter(None, (p.strip() for p in self.query_one("#data-map", Input).value.split(","))):
            if "=" not in pair or not all(part.strip() for part in pair.split("=", 1)):
                self.app.show_error(f"map: {pair!r} is not column=your_column", hint="e.g. prompt=question, completion=answer (the columns the format reads = yours)")
                return
            columns += ["--map", "=".join(part.strip() for part in pair.split("=", 1))]
        fmt = str(self.query_one("#data-format", Select).value)
        self.validate(path, self.query_one("#data-model", Input).value.strip() or None, int(max_len), ["--format", fmt, *columns])

    @work(exclusive=True, group="validate")
    async def validate(self, path: str, model: str | None, max_len: int, reading: list[str] = ()) -> None:
        summary = self.query_one("#data-summary", Static)
        summary.update(f"validating {path}" + (f", counting tokens with {model}" if model else "") + " … (ctrl+t stops)")
        args = ["data", "validate", "--json", "--max-seq-length", str(max_len), *reading, path] + (["--model", model] if model else [])
        lines: list[str] = []
        self.call_after_refresh(self.refresh_bindings)  # ctrl+t Stop in the footer while it runs
        try:
            code, stderr = await stream_command(args, lines.append)
        finally:
            self.call_after_refresh(self.refresh_bindings)
        try:
            report = json.loads("\n".join(lines))
        except json.JSONDecodeError:
            summary.update(f"could not validate {path}")
            self.app.show_error(error_from_stderr(stderr, code))
            return
        self.show_report(path, report)

    def review_log(self, log: Path) -> None:
        """Open an evaluation's run log on the Review tab (from Evaluate's `f`)."""
        self.action_show_tab("review")
        pane = self.query_one(ReviewPane)
        pane.query_one("#review-log", Input).value = str(log)
        pane.load()

    def unsaved_work(self) -> str | None:
        """What quitting now would lose (asked by the app before it exits)."""
        review = self.query_one(ReviewPane)
        if review._editor_changed():
            return f"Data > Review: item {review.session.index + 1} has an edited correction that is not accepted"
        return None

    def action_stop_validation(self) -> None:
        if self.workers.cancel_group(self, "validate"):
            self.query_one("#data-summary", Static).update("validation stopped")

    def show_report(self, path: str, report: dict) -> None:
        self.path, self.report = path, report
        local = Path(path).expanduser()
        base = (local if local.is_dir() else local.parent) if local.exists() else None
        self.query_one("#data-summary", Static).update(self._summary(report))
        self.query_one(ReportPane).show(report, base)
        self.query_one(BrowsePane).show(path, report, base)
        self.query_one(StatsPane).show(report)
        self.query_one(SplitPane).show(path, report, base)
        # A new data set shows its verdict: the Report tab, its problem table focused (enter jumps to the row).
        self.action_show_tab("report")
        table = self.query_one("#report-findings", DataTable)
        (table if table.display else self.query_one("#data-tabs Tabs")).focus()
        self.refresh_bindings()

    @staticmethod
    def _summary(report: dict) -> str:
        splits = " · ".join(f"{name} {s['rows']:,}" + (f" ([red]{s['bad']:,} bad[/])" if s["bad"] else "") for name, s in report["splits"].items())
        verdict = "[green]usable[/]" if report["usable"] else "[red]not usable[/]"
        return f"{escape(report['source'])} · format {escape(report['format'] or 'unknown')} · {splits or 'no splits'} · {verdict}"

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = f"tab-{tab}"
        # Focus follows, else focus left in the hidden pane would switch the tabs straight back.
        target = self.query_one(TAB_FOCUS[tab])
        (target if target.display and target.focusable else self.query_one("#data-tabs Tabs")).focus()

    @on(ReportPane.Jump)
    def jump(self, event: ReportPane.Jump) -> None:
        self.action_show_tab("browse")
        self.query_one(BrowsePane).go_to(event.split, event.where)

    def action_use_weights(self) -> None:
        """The train split's label balance as class weights (inverse frequency) in the Train form, with the data."""
        weights = (self.report or {}).get("class_weights")
        if self.path is None or not weights:
            self.app.notify("open a labelled data set first (a classification set with a train split)", severity="warning")
            return
        self.app.use_data(self.path, self.report["format"], weights)
        shown = ", ".join(f"{k}: {v:.2f}" for k, v in list(weights.items())[:6]) + (" ..." if len(weights) > 6 else "")
        where = "vision.class_weights auto (the same inverse frequency)" if self.report["format"] == "image-classification" else "classify.class_weights"
        self.app.notify(f"Train: {where} = {shown}", markup=False)

    def action_use_data(self) -> None:
        if self.path is None or self.report is None:
            self.app.notify("open a data set first", severity="warning")
            return
        self.app.use_data(self.path, self.report["format"])
        if self.report["usable"]:
            self.app.notify(f"data: {self.path} (used by Train)")
        else:
            self.app.notify(f"data: {self.path} (used by Train), but it is not usable yet: see the Report tab", severity="warning")
