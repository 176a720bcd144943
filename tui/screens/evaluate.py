"""Evaluate: base vs fine-tuned on a benchmark through `mlxft eval`, then the verdict, target vs rest,
regressions and fixes side by side, and for classifiers the per-class report and confusion matrices.

For an image-classify run the same tabs show its evaluation on a labelled split (per-class report, accuracy,
ROC AUC, the confusion matrix, the misclassified images), and its comparison with an earlier image run
(`mlxft eval RUN --against RUN_A`): A and B side by side, regressions and fixes by image, and the verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static, TabbedContent, TabPane

from mlxft.errors import MlxftError
from mlxft.runs import ADAPTER_DIR, RunDir
from mlxft.textsafe import escape_controls, escape_lines
from tui.runner import error_from_stderr, stream_command
from tui.screens.text_results import TextResults, is_text_summary, read_text_folder, text_of
from tui.screens.image_results import (ImageResults, comparison_file, is_image_summary, open_in_viewer, read_image_folder,
                                       read_json_lines, short_path)
from tui.widgets.nav import KeyFooter, NavBar, NavScreen, key_allowed
from tui.widgets.select import PickSelect

GRADERS = ("exact", "contains", "regex", "json", "one-of", "numeric")
VERDICT_STYLES = {"ship": "success", "investigate": "warning", "look at the training data": "warning", "stop": "error"}


@dataclass
class EvalResults:
    """What `mlxft eval` wrote into a folder: summary.json and the run log's rows (one per benchmark item)."""

    folder: Path
    summary: dict
    rows: list[dict] = field(default_factory=list)

    @property
    def regressions(self) -> list[dict]:
        return [r for r in self.rows if r.get("base_grade") and not r.get("tuned_grade")]

    @property
    def fixes(self) -> list[dict]:
        return [r for r in self.rows if not r.get("base_grade") and r.get("tuned_grade")]

    def confusion_png(self, phase: str) -> Path | None:
        path = self.folder / f"confusion-{phase}.png"
        return path if path.is_file() else None


def read_eval_folder(path: str | Path) -> EvalResults | ImageResults:
    """Results from an eval folder, or from a run directory that holds one in eval/; an image classifier's
    evaluation folder (RUN/eval/<split>), or one of its compare-<run>.json files, gives ImageResults."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.suffix == ".json" and folder.name.startswith("compare-"):
        return read_image_folder(folder.parent, comparison=folder)
    if not (folder / "summary.json").is_file() and (RunDir(folder).eval_dir / "summary.json").is_file():
        folder = RunDir(folder).eval_dir
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise MlxftError(f"{folder}: no summary.json here", hint="open the folder `mlxft eval` wrote (RUN_DIR/eval, or the --out folder)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MlxftError(f"{summary_path}: cannot read it ({exc})", hint="re-run the evaluation to write it again") from None
    if is_image_summary(summary):
        return read_image_folder(folder, summary)
    if is_text_summary(summary):
        return read_text_folder(folder, summary)
    if not isinstance(summary, dict) or "verdict" not in summary:
        raise MlxftError(f"{summary_path}: not an evaluation summary (no verdict)", hint="open the folder `mlxft eval` wrote")
    return EvalResults(folder, summary, read_json_lines(folder / "run-log.jsonl", "re-run the evaluation to write the log again"))


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _pts(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:+.1f} pts"


def _question(row: dict) -> str:
    if row.get("prompt") is not None:
        return str(row["prompt"])
    messages = row.get("messages") or []
    return str(messages[-1].get("content", "")) if messages else ""


def _one_line(value, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = escape_controls(" ".join(text.split()))  # Textual passes ESC from the benchmark straight to the terminal
    return text if len(text) <= width else text[: width - 1] + "…"


def confusion_table(report: dict, title: str) -> Table:
    """The confusion matrix as a terminal table: true labels down, predictions across, shaded by share of the row
    on the same blue scale as the PNG, the diagonal (right answers) in bold."""
    from mlxft.eval.classification import _shade

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    table.add_column("true \\ predicted", style="bold", no_wrap=True, max_width=18, overflow="ellipsis")
    for name in report["columns"]:
        table.add_column(_one_line(name, 12), justify="right", no_wrap=True, overflow="ellipsis", max_width=12)
    for i, (label, row) in enumerate(zip(report["labels"], report["confusion"])):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            r, g, b = _shade(share)
            ink = "white" if share > 0.6 else "black"
            cells.append(Text(f" {count} ", style=f"{ink} on rgb({r},{g},{b})" + (" bold underline" if i == j else "")))
        table.add_row(_one_line(label, 18), *cells)
    return table


class EvaluateScreen(NavScreen):
    HELP = """\
## Evaluate

Base (adapter off) and fine-tuned (adapter on) answer the same benchmark in one child process (`mlxft eval`).

- **Setup** tab: pick a run (fills adapter, model and results folder; shows its last evaluation if there is one),
  or type a model, an adapter folder or run directory, and a benchmark JSONL
  (`{"id", "prompt" or "messages", "expected", "cluster", "grader"}` a line).
  Targets are the clusters the fine-tune aims at (comma-separated; empty = every labelled cluster, or the whole
  benchmark when none is labelled).
  `ctrl+g` runs, `ctrl+t` stops, `ctrl+o` opens the results folder typed in the form without re-running.
  Results that are written or opened show on the Verdict tab.
- `f` takes the shown results' failures to Data > Review: pick a cluster, correct, build the training set.
- **Verdict** tab: the verdict, target clusters vs the rest (base, tuned, change), where the report and run log are.
- **Changes** tab: regressions (right before, wrong after) and fixes side by side; the highlighted item's prompt,
  expected answer, and base and tuned answers below.
- **Classes** tab (benchmarks graded one-of): per-class precision/recall/F1 and the confusion matrices.
- `s` / `v` / `c` / `l` (and `m` for a classifier) show the Setup / Verdict / Changes / Classes (/ Mistakes) tabs;
  `escape` leaves a form field so these and the number keys work again.

Headless: `mlxft eval --model M --adapter RUN_DIR --bench bench.jsonl [--target CLUSTER] [--out DIR]`;
curate the failures with `mlxft data failures DIR/run-log.jsonl` and `mlxft data review`.

### Image classifiers

Pick an image-classify run: the form asks for its images (empty: the folder it was trained on), the split
(test) and, optionally, an earlier image run to compare it with (**Against**). Its last evaluation shows at once.
`ctrl+g` evaluates it in a child process (`mlxft eval RUN [--against RUN_A]`), writing RUN/eval/<split>/.
- **Verdict** tab: accuracy, macro F1 and ROC AUC; with Against, A and B side by side and the verdict
  (the same rules as base vs tuned: B is "tuned").
- **Changes** tab (with Against): regressions (right under A, wrong under B) and fixes, by image.
- **Classes** tab: per-class precision/recall/F1/support and the confusion matrix (A's and B's with Against).
- **Mistakes** tab (`m`): the misclassified images, most confident first, with true and predicted label;
  `o` opens the grid PNG of them, `enter` the highlighted image, in the system's image viewer.

Headless: `mlxft eval RUN_B --against RUN_A [--split test] [--data IMAGES]`.

### Text classifiers

Pick an lm-classify run: the form asks for its labelled data (empty: the data it was trained on) and the split.
`ctrl+g` runs `mlxft eval RUN --split S`; the base is the zero-shot verbalizer (the untrained model scoring the
label words), where the run has label words.
- **Verdict** tab: accuracy and macro F1 of the zero-shot base and the tuned classifier, ROC AUC, calibration error.
- **Changes** tab: texts the base got right and the tuned classifier gets wrong, and the other way round.
- **Classes** tab: the per-class report, the tuned and the base confusion matrices.
- **Mistakes** tab (`m`): the misclassified texts, most confident first, with every label's probability.

Headless: `mlxft eval RUN --split test [--data DATA] [--no-base]`; `mlxft predict RUN "text"`.
"""

    BINDINGS = [
        Binding("ctrl+g", "run_eval", "Run"),
        Binding("ctrl+t", "stop_eval", "Stop"),
        Binding("ctrl+o", "open_results", "Open results"),
        Binding("escape", "leave_field", "Leave field"),
        Binding("f", "review_failures", "Review"),
        Binding("s", "show_tab('tab-setup')", "Tabs", key_display="s/v/c/l"),  # one footer entry for the tab keys
        Binding("v", "show_tab('tab-verdict')", "Verdict", show=False),
        Binding("c", "show_tab('tab-changes')", "Changes", show=False),
        Binding("l", "show_tab('tab-classes')", "Classes", show=False),
        Binding("m", "show_tab('tab-mistakes')", "Mistakes"),
        Binding("o", "open_grid", "Grid"),
    ]

    DEFAULT_CSS = """
    EvaluateScreen #eval-form { height: auto; max-height: 100%; padding: 0 1; }
    EvaluateScreen .field { height: 1; margin-bottom: 1; }
    EvaluateScreen .field-label { width: 12; color: $text-muted; }
    EvaluateScreen .field:focus-within .field-label { color: $accent; text-style: bold; }
    EvaluateScreen .field Input:focus { background: $boost; }
    EvaluateScreen .field Input, EvaluateScreen .field Select { width: 1fr; }
    EvaluateScreen #eval-grader { width: 16; }
    EvaluateScreen #max-tokens-label { width: auto; margin: 0 1 0 2; color: $text-muted; }
    EvaluateScreen #eval-max-tokens { width: 8; }
    EvaluateScreen #eval-buttons { height: auto; }
    EvaluateScreen #eval-buttons Button { min-width: 10; margin-right: 2; }
    EvaluateScreen #eval-progress-row { height: 1; margin-top: 1; }
    EvaluateScreen #eval-progress-row Bar { width: 1fr; }
    EvaluateScreen #eval-phase { width: auto; margin-left: 2; }
    EvaluateScreen #eval-status { color: $text-muted; width: 100%; height: auto; }
    EvaluateScreen #verdict { padding: 0 1; border: tall $panel; height: auto; }
    EvaluateScreen #verdict.-ship { border: tall $success; }
    EvaluateScreen #verdict.-investigate, EvaluateScreen #verdict.-look { border: tall $warning; }
    EvaluateScreen #verdict.-stop { border: tall $error; }
    EvaluateScreen #scores { height: auto; max-height: 6; margin: 1 0; }
    EvaluateScreen #verdict-facts { height: auto; padding: 0 1; }
    EvaluateScreen #changes-lists { height: 1fr; min-height: 5; }
    EvaluateScreen #changes-lists Vertical { width: 1fr; margin-right: 1; }
    EvaluateScreen #changes-lists DataTable:focus { background-tint: $foreground 5%; }
    EvaluateScreen #changes-lists DataTable { height: 1fr; }
    EvaluateScreen .list-title { text-style: bold; }
    EvaluateScreen #regressions-title { color: $error; }
    EvaluateScreen #fixes-title { color: $success; }
    EvaluateScreen #change-detail { height: 1fr; min-height: 6; border-top: solid $panel; padding: 0 1; }
    EvaluateScreen #change-question { height: auto; max-height: 4; }
    EvaluateScreen #change-answers { height: 1fr; }
    EvaluateScreen #change-answers VerticalScroll { width: 1fr; padding-right: 1; }
    EvaluateScreen #class-table { height: auto; max-height: 12; margin-bottom: 1; }
    EvaluateScreen #tab-classes VerticalScroll { padding: 0 1; }
    EvaluateScreen #confusions { height: auto; }
    EvaluateScreen #confusions.-stacked { layout: vertical; }
    EvaluateScreen #confusions Static { width: auto; margin: 0 3 1 0; }
    EvaluateScreen #eval-tabs { height: 1fr; }
    EvaluateScreen #eval-tabs ContentSwitcher { height: 1fr; }
    EvaluateScreen #eval-tabs TabPane { height: 1fr; }
    EvaluateScreen #eval-form .image-only { display: none; }
    EvaluateScreen #eval-form.-images .image-only { display: block; }
    EvaluateScreen #eval-form.-images .lm-only { display: none; }
    EvaluateScreen #eval-form.-texts .against { display: none; }
    EvaluateScreen #changes-lists.-stacked { layout: vertical; }
    EvaluateScreen #changes-lists.-stacked Vertical { width: 100%; margin-right: 0; }
    EvaluateScreen #mistakes-title { text-style: bold; color: $error; }
    EvaluateScreen #mistakes { height: 1fr; min-height: 4; }
    EvaluateScreen #mistake-detail { height: 4; border-top: solid $panel; padding: 0 1; }
    EvaluateScreen #tab-mistakes { padding: 0 1; }
    """

    def __init__(self):
        super().__init__()
        self.results: EvalResults | ImageResults | None = None
        self.image_runs: set[str] = set()  # the runs under the runs folder that are image-classify runs
        self.text_runs: set[str] = set()  # ... and lm-classify runs (evaluated like image runs: a labelled split)
        self.against_paths: set[str] = set()  # what Against offers
        self.bench_size = 0
        self.finished_line: dict | None = None
        self._worker = None

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield NavBar("evaluate")
        with TabbedContent(initial="tab-setup", id="eval-tabs"):
            with TabPane("Setup", id="tab-setup"):
                with VerticalScroll(id="eval-form", can_focus=False):
                    yield self._field("Run", PickSelect([], prompt="pick a run under the runs folder (optional)", compact=True, id="eval-runs"))
                    yield self._field("Model", Input(placeholder="base model: catalogue key, Hub id or folder", compact=True, id="eval-model"), "lm-only")
                    yield self._field("Adapter", Input(placeholder="adapter folder or run directory", compact=True, id="eval-adapter"), "lm-only")
                    yield self._field("Benchmark", Input(placeholder="benchmark .jsonl (or a folder with test.jsonl)", compact=True, id="eval-bench"), "lm-only")
                    yield self._field("Targets", Input(placeholder="target clusters, comma-separated (empty: every labelled cluster)", compact=True, id="eval-targets"), "lm-only")
                    yield self._field("Images", Input(placeholder="image folder: <split>/<label>/<image> (empty: the run's own data)", compact=True, id="eval-images"), "image-only")
                    yield self._field("Split", Input("test", placeholder="the labelled split to evaluate, e.g. test", compact=True, id="eval-split"), "image-only")
                    yield self._field("Against", PickSelect([], prompt="an earlier image run to compare with (optional)", compact=True, id="eval-against"), "image-only against")
                    with Horizontal(classes="field lm-only"):
                        yield Label("Grader", classes="field-label")
                        yield Select([(g, g) for g in GRADERS], value="exact", allow_blank=False, compact=True, id="eval-grader")
                        yield Label("Max tokens", id="max-tokens-label")
                        yield Input("128", type="integer", compact=True, id="eval-max-tokens")
                    yield self._field("Results", Input(placeholder="results folder (empty: RUN_DIR/eval, or eval/<time>)", compact=True, id="eval-out"))
                    with Horizontal(id="eval-buttons"):
                        # compact: one row each, so the form and its status fit 24 rows without scrolling
                        yield Button("Run ▶ ctrl+g", id="run", variant="success", compact=True)
                        yield Button("Stop ctrl+t", id="stop", variant="error", disabled=True, compact=True)
                        yield Button("Open results ctrl+o", id="open", compact=True)
                    with Horizontal(id="eval-progress-row"):
                        yield ProgressBar(total=1, show_eta=False, id="eval-progress")
                        yield Label("", id="eval-phase")
                    yield Label("fill the form and press ctrl+g, or open a results folder with ctrl+o", id="eval-status", markup=False)
            with TabPane("Verdict", id="tab-verdict"):
                with VerticalScroll():
                    yield Static("no results yet: run an evaluation or open a results folder", id="verdict")
                    yield DataTable(id="scores", cursor_type="none", show_cursor=False)
                    yield Static("", id="verdict-facts")
            with TabPane("Changes", id="tab-changes"):
                with Horizontal(id="changes-lists"):
                    with Vertical():
                        yield Label("Regressions: right → wrong", id="regressions-title", classes="list-title")
                        yield DataTable(id="regressions", cursor_type="row", zebra_stripes=True)
                    with Vertical():
                        yield Label("Fixes: wrong → right", id="fixes-title", classes="list-title")
                        yield DataTable(id="fixes", cursor_type="row", zebra_stripes=True)
                with Vertical(id="change-detail"):
                    yield Static("highlight a regression or a fix to see its answers", id="change-question")
                    with Horizontal(id="change-answers"):
                        with VerticalScroll():
                            yield Static("", id="change-base")
                        with VerticalScroll():
                            yield Static("", id="change-tuned")
            with TabPane("Classes", id="tab-classes"):
                with VerticalScroll():
                    yield Static("per-class reports appear for benchmarks whose every item is graded one-of", id="class-note")
                    yield DataTable(id="class-table", cursor_type="none", show_cursor=False)
                    with Horizontal(id="confusions"):
                        yield Static("", id="confusion-base")
                        yield Static("", id="confusion-tuned")
                    yield Static("", id="confusion-paths")
            with TabPane("Mistakes", id="tab-mistakes"):
                yield Label("", id="mistakes-title", markup=False)
                yield DataTable(id="mistakes", cursor_type="row", zebra_stripes=True)
                yield Static("", id="mistake-detail")
        yield KeyFooter()

    @staticmethod
    def _field(label: str, widget, only: str = "") -> Horizontal:
        return Horizontal(Label(label, classes="field-label"), widget, classes=f"field {only}".strip())

    def on_mount(self) -> None:
        if self.app.selected_model:
            self.query_one("#eval-model", Input).value = self.app.selected_model
        self.query_one("#scores", DataTable).add_columns("", "items", "base", "tuned", "change")
        for table_id in ("#regressions", "#fixes"):
            self.query_one(table_id, DataTable).add_columns("id", "cluster", "expected")
        self.query_one("#mistakes", DataTable).add_columns("image", "true", "predicted", "p")
        self.query_one("#eval-tabs", TabbedContent).hide_tab("tab-mistakes")  # shown with an image classifier's results
        self.refresh_runs()
        run = self.app.selected_run
        if run is not None and str(run) in self.run_paths():
            self.query_one("#eval-runs", Select).value = str(run)  # the run last trained, opened or evaluated
        self.query_one("#eval-tabs Tabs").focus()  # not a field: keys typed on arrival are keys

    def note_last_used(self, run: Path) -> None:
        """The status line says the picked run is the one remembered from the last session (after what use_run said)."""
        said = str(self.query_one("#eval-status", Label).render())
        self.set_status(escape_controls(f"last used here · {said}"))

    def run_paths(self) -> set:
        return {str(v) for _, v in self.query_one("#eval-runs", Select)._options if v is not Select.NULL}

    def check_action(self, action: str, parameters) -> bool | None:
        running = self._worker is not None and self._worker.is_running
        classifier = isinstance(self.results, (ImageResults, TextResults))
        shown = {"stop_eval": running, "run_eval": not running, "open_grid": isinstance(self.results, ImageResults),
                 "review_failures": self.results is not None and not classifier}
        if not shown.get(action, True):
            return False
        if action == "show_tab" and parameters == ("tab-mistakes",) and not classifier:
            return False
        return key_allowed(self, action)

    def run_selected(self, run: Path, model: str | None) -> None:
        """A run trained or opened on Train: picked here too (unless an evaluation is running)."""
        if (self._worker is None or not self._worker.is_running) and str(run) in self.run_paths():
            self.query_one("#eval-runs", Select).value = str(run)

    def on_resize(self, event) -> None:
        # Two matrices side by side need about 120 columns; below that they stack.
        self.query_one("#confusions").set_class(event.size.width < 120, "-stacked")
        self._stack_image_changes()

    def _stack_image_changes(self) -> None:
        # An image's regression row (image, true, A, B) needs about 50 columns: two side by side need 100.
        self.query_one("#changes-lists").set_class(isinstance(self.results, (ImageResults, TextResults)) and self.size.width < 100, "-stacked")

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def refresh_runs(self) -> None:
        from mlxft.runs import list_runs

        try:
            runs = list_runs(self.app.runs_dir)
        except OSError:
            runs = []
        options = [(f"{r.path.name}  ·  {r.status}  ·  {r.model or '?'}", str(r.path)) for r in runs]
        self.image_runs = {str(r.path) for r in runs if r.method.startswith("image-classify")}
        self.text_runs = {str(r.path) for r in runs if r.method.startswith("lm-classify")}
        select = self.query_one("#eval-runs", Select)
        current = select.value
        select.set_options(options)
        if current in {v for _, v in options}:
            select.value = current
        self.refresh_against(runs)

    def refresh_against(self, runs=None) -> None:
        """Against offers the other image-classify runs (those with a trained model to load)."""
        from mlxft.runs import list_runs

        picked = self.query_one("#eval-runs", Select).value
        runs = runs if runs is not None else list_runs(self.app.runs_dir)
        options = [(f"{r.path.name}  ·  {r.status}", str(r.path)) for r in runs if str(r.path) in self.image_runs and str(r.path) != picked]
        select = self.query_one("#eval-against", Select)
        current = select.value
        self.against_paths = {v for _, v in options}
        select.set_options(options)
        if current in {v for _, v in options}:
            select.value = current

    # -- app state ---------------------------------------------------------------------------------
    def model_selected(self, spec: str) -> None:
        self.query_one("#eval-model", Input).value = spec

    @on(Select.Changed, "#eval-runs")
    def run_picked(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.use_run(Path(str(event.value)))

    @property
    def image_mode(self) -> bool:
        return self.query_one("#eval-form").has_class("-images")

    def set_image_mode(self, on: bool, texts: bool = False) -> None:
        """The form asks for what the picked run's kind needs: images, split and Against (a text classifier: its data
        and split), or model, adapter and benchmark."""
        form = self.query_one("#eval-form")
        form.set_class(on, "-images")
        form.set_class(on and texts, "-texts")
        images = self.query_one("#eval-images", Input)
        images.placeholder = ("labelled data: a folder or file of text,label rows (empty: the run's own data)" if texts
                              else "image folder: <split>/<label>/<image> (empty: the run's own data)")
        images.parent.query_one(Label).update("Data" if texts else "Images")
        self.query_one("#eval-out", Input).placeholder = ("results folder (empty: RUN_DIR/eval/<split>)" if on
                                                          else "results folder (empty: RUN_DIR/eval, or eval/<time>)")

    def use_run(self, run: Path) -> None:
        """Fill the form for a run (its adapter, its base model) and show its last evaluation, if any."""
        from mlxft.runs import summarize_run

        self.app.use_run(run, summarize_run(RunDir(run)).model or None)  # Chat starts from the run picked here too
        self.fill_for_run(run)
        if "run" in self.app.remembered and Path(run) == self.app.selected_run:
            self.note_last_used(run)

    def fill_for_run(self, run: Path) -> None:
        from mlxft.runs import summarize_run

        self.set_image_mode(str(run) in self.image_runs or str(run) in self.text_runs, texts=str(run) in self.text_runs)
        if self.image_mode:
            self.use_image_run(run)
            return
        self.query_one("#eval-adapter", Input).value = str(run)
        self.query_one("#eval-out", Input).value = str(RunDir(run).eval_dir)
        model = summarize_run(RunDir(run)).model
        if model:
            self.query_one("#eval-model", Input).value = model  # the adapter only fits the base it was trained on
        if (RunDir(run).eval_dir / "summary.json").is_file():
            self.open_results(RunDir(run).eval_dir, switch=False)
            self.set_status(f"showing the last evaluation of {run.name}; ctrl+g evaluates again (replacing it)")

    def image_results_folder(self) -> Path | None:
        """Where the picked image run's evaluation of the chosen split is (or will be)."""
        out = self.query_one("#eval-out", Input).value.strip()
        if out:
            return Path(out).expanduser()
        run = self.query_one("#eval-runs", Select).value
        split = self.query_one("#eval-split", Input).value.strip() or "test"
        return RunDir(str(run)).eval_dir / split if run is not Select.NULL else None

    def use_image_run(self, run: Path) -> None:
        """An image run: Against offers the others; its last evaluation (and comparison) shows, if it has one."""
        self.query_one("#eval-out", Input).value = ""
        self.refresh_against()
        folder = self.image_results_folder()
        if folder is None or not (folder / "summary.json").is_file():
            self.set_status(escape_controls(f"{run.name}: not evaluated on this split yet; ctrl+g evaluates it"))
            return
        against = self.query_one("#eval-against", Select).value if str(run) in self.image_runs else Select.NULL
        wanted = comparison_file(folder, str(against)) if against is not Select.NULL else None
        if self.open_results(folder, switch=False, comparison=wanted if wanted and wanted.is_file() else None):
            if isinstance(self.results, ImageResults) and self.results.comparison:
                before = self.results.comparison.get("before", {}).get("path")
                same = [v for v in self.against_paths if before and Path(v).resolve() == Path(before).resolve()]
                if same:
                    self.query_one("#eval-against", Select).value = same[0]
            self.set_status(escape_controls(f"showing the last evaluation of {run.name}; ctrl+g evaluates again (replacing it)"))

    @on(Select.Changed, "#eval-against")
    def against_picked(self, event: Select.Changed) -> None:
        """A saved comparison with the run picked in Against shows at once."""
        folder = self.image_results_folder()
        if event.value is Select.NULL or folder is None:
            return
        saved = comparison_file(folder, str(event.value))
        showing = self.results.comparison_path if isinstance(self.results, ImageResults) else None
        if saved.is_file() and saved != showing and (folder / "summary.json").is_file():
            self.open_results(folder, switch=False, comparison=saved)

    # -- actions -----------------------------------------------------------------------------------
    def action_review_failures(self) -> None:
        """The failure-cluster workflow on these results: Data > Review opens their run log."""
        if isinstance(self.results, (ImageResults, TextResults)):
            self.notify("failure review works on benchmark evaluations; for a classifier see the Mistakes tab (m)", severity="warning")
            return
        if self.results is None or not (self.results.folder / "run-log.jsonl").is_file():
            self.notify("run or open an evaluation first: its run log holds the failures", severity="warning")
            return
        log = self.results.folder / "run-log.jsonl"
        self.app.switch_mode("data")
        self.app.call_later(lambda: self.app.screen.review_log(log))

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#eval-tabs", TabbedContent).active = tab
        if tab == "tab-changes":  # straight to the lists, so up/down walk the items
            self.query_one("#regressions" if self.results and self.results.regressions else "#fixes", DataTable).focus()
        elif tab == "tab-mistakes":
            if not isinstance(self.results, (ImageResults, TextResults)):
                self.notify("the Mistakes tab lists a classifier's misclassified images or texts: pick a classifier run", severity="warning")
                self.query_one("#eval-tabs", TabbedContent).active = "tab-setup"
                return
            self.query_one("#mistakes", DataTable).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"run": self.action_run_eval, "stop": self.action_stop_eval, "open": self.action_open_results}
        if event.button.id in actions:
            actions[event.button.id]()

    def action_open_results(self) -> None:
        if self.image_mode:
            folder = self.image_results_folder()
            raw = str(folder) if folder else ""
        else:
            raw = self.query_one("#eval-out", Input).value.strip() or self.query_one("#eval-adapter", Input).value.strip()
        if not raw:
            self.app.show_error("type a results folder in the Results field (or pick a run), then ctrl+o",
                                hint="the folder `mlxft eval` wrote: RUN_DIR/eval or its --out folder")
            return
        self.open_results(Path(raw))

    def open_results(self, folder: Path, switch: bool = True, comparison: Path | None = None) -> bool:
        try:
            results = read_image_folder(folder, comparison=comparison) if comparison else read_eval_folder(folder)
        except MlxftError as exc:
            self.app.show_error(exc)
            return False
        self.show_results(results)
        if switch:
            # To the result: focus leaves the Setup form first, else the focused field pulls its tab back.
            self.set_focus(None)
            self.query_one("#eval-tabs", TabbedContent).active = "tab-verdict"
            self.query_one("#tab-verdict VerticalScroll").focus()
        self.refresh_bindings()
        return True

    def form_command(self) -> list[str]:
        """The `mlxft eval` arguments from the form; MlxftError names the field that is wrong."""
        if self.image_mode:
            return self.image_command()
        model = self.query_one("#eval-model", Input).value.strip()
        adapter = self.query_one("#eval-adapter", Input).value.strip()
        bench = self.query_one("#eval-bench", Input).value.strip()
        problems = []
        if not model:
            problems.append("Model: empty; type a catalogue key, Hub id or folder (or pick one on Models)")
        if not adapter:
            problems.append("Adapter: empty; type an adapter folder or run directory (or pick a run)")
        elif not any((Path(adapter).expanduser() / p / "adapter_config.json").is_file() for p in (".", ADAPTER_DIR)):
            problems.append(f"Adapter: {adapter} holds no adapter_config.json (nor adapter/adapter_config.json)")
        if not bench:
            problems.append("Benchmark: empty; type a .jsonl file of {id, prompt, expected, cluster} rows")
        elif not Path(bench).expanduser().exists():
            problems.append(f"Benchmark: {bench} does not exist")
        raw_tokens = self.query_one("#eval-max-tokens", Input).value.strip()
        if not raw_tokens.isdigit() or int(raw_tokens) < 1:
            problems.append(f"Max tokens: {raw_tokens!r} is not a whole number >= 1")
        if problems:
            raise MlxftError("cannot start the evaluation:\n" + "\n".join(f"  {p}" for p in problems), hint="fix the fields on the Setup tab")
        args = ["eval", "--model", model, "--adapter", str(Path(adapter).expanduser()), "--bench", str(Path(bench).expanduser()),
                "--grader", str(self.query_one("#eval-grader", Select).value), "--max-tokens", raw_tokens, "--progress-json"]
        for target in self.query_one("#eval-targets", Input).value.split(","):
            if target.strip():
                args += ["--target", target.strip()]
        out = self.query_one("#eval-out", Input).value.strip()
        if out:
            args += ["--out", str(Path(out).expanduser())]
        return args

    def image_command(self) -> list[str]:
        """`mlxft eval RUN --split S [--data D] [--against RUN_A]` for the picked image run."""
        run = self.query_one("#eval-runs", Select).value
        split = self.query_one("#eval-split", Input).value.strip()
        images = self.query_one("#eval-images", Input).value.strip()
        problems = []
        if run is Select.NULL:
            problems.append("Run: pick the image-classify run to evaluate")
        if not split:
            problems.append("Split: empty; type the labelled split to evaluate, e.g. test")
        texts = str(run) in self.text_runs
        if images and not texts and not Path(images).expanduser().is_dir():
            problems.append(f"Images: {images} is not a folder (empty: the images the run was trained on)")
        if images and texts and not Path(images).expanduser().exists():
            problems.append(f"Data: {images} does not exist (empty: the data the run was trained on)")
        if problems:
            raise MlxftError("cannot start the evaluation:\n" + "\n".join(f"  {p}" for p in problems), hint="fix the fields on the Setup tab")
        args = ["eval", str(run), "--split", split, "--progress-json"]
        if images:
            args += ["--data", str(Path(images).expanduser())]
        against = self.query_one("#eval-against", Select).value
        if against is not Select.NULL and not texts:
            args += ["--against", str(against)]
        out = self.query_one("#eval-out", Input).value.strip()
        if out:
            args += ["--out", str(Path(out).expanduser())]
        return args

    def action_run_eval(self) -> None:
        if self._worker is not None and self._worker.is_running:
            self.notify("an evaluation is already running; ctrl+t stops it", severity="warning")
            return
        try:
            args = self.form_command()
        except MlxftError as exc:
            self.app.show_error(exc)
            return
        if "--out" in args and (Path(args[args.index("--out") + 1]) / "summary.json").is_file():
            self.notify(f"the results in {args[args.index('--out') + 1]} will be replaced when this run finishes")
        self.finished_line = None
        self.bench_size = 0
        self.query_one("#eval-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#eval-phase", Label).update("loading classifier…" if self.image_mode else "loading model…")
        self.set_status("$ mlxft " + " ".join(args))
        self.set_running(True)
        self._worker = self.run_command(args)
        self.refresh_bindings()

    def action_stop_eval(self) -> None:
        if self._worker is not None and self._worker.is_running:
            self._worker.cancel()

    def set_running(self, running: bool) -> None:
        self.query_one("#run", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running
        self.query_one(NavBar).set_status("evaluating…" if running else "")
        self.call_after_refresh(self.refresh_bindings)

    def set_status(self, text: str) -> None:
        self.query_one("#eval-status", Label).update(text)

    @work(exclusive=True, group="eval")
    async def run_command(self, args: list[str]) -> None:
        """`mlxft eval --progress-json` as a child process; its JSON lines move the progress bar."""
        import asyncio

        try:
            code, err = await stream_command(args, self.progress_line)
        except asyncio.CancelledError:
            self.set_running(False)
            self.query_one("#eval-phase", Label).update("stopped")
            self.set_status("stopped; nothing was written")
            raise
        except OSError as exc:
            code, err = 1, str(exc)
        self.set_running(False)
        if code != 0 or self.finished_line is None:
            self.query_one("#eval-phase", Label).update("failed")
            self.set_status(f"mlxft eval exited with {code}")
            message, hint = error_from_stderr(err, code, "mlxft eval")
            self.app.show_error(message, hint)
            return
        out = self.finished_line["out"]
        if not self.image_mode:  # an image run's results folder follows its split unless one was typed
            self.query_one("#eval-out", Input).value = out
        picked = self.query_one("#eval-runs", Select).value
        if picked is not Select.NULL:
            self.app.use_run(Path(str(picked)), self.query_one("#eval-model", Input).value.strip() or None)  # Chat starts from it
        self.query_one("#eval-phase", Label).update("done")
        self.set_status(f"results written to {out}")
        comparison = (self.finished_line.get("paths") or {}).get("comparison")
        self.open_results(Path(out), comparison=Path(comparison) if comparison else None)

    def progress_line(self, line: str) -> None:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return  # stray output (a library's warning) is not progress
        if data.get("finished"):
            self.finished_line = data
            return
        if "phase" not in data:
            return
        if "models" in data:  # an image classifier (and the run it is compared against): images per model
            total, models, model = int(data["total"]), int(data["models"]), int(data["model"])
            self.query_one("#eval-progress", ProgressBar).update(total=max(1, total * models), progress=(model - 1) * total + int(data["done"]))
            self.query_one("#eval-phase", Label).update(escape_controls(f"{data['phase']}: {data['done']}/{total} images"))
            return
        total = int(data["total"])
        self.bench_size = total
        done = int(data["done"]) + (total if data["phase"] == "tuned" else 0)
        self.query_one("#eval-progress", ProgressBar).update(total=2 * total, progress=done)
        self.query_one("#eval-phase", Label).update(f"{data['phase']}: {data['done']}/{total} answered")

    # -- results -----------------------------------------------------------------------------------
    def show_results(self, results: EvalResults | ImageResults) -> None:
        self.results = results
        tabs = self.query_one("#eval-tabs", TabbedContent)
        if isinstance(results, ImageResults):
            tabs.show_tab("tab-mistakes")
            self.show_image_results(results)
            return
        if isinstance(results, TextResults):
            tabs.show_tab("tab-mistakes")
            self.show_text_results(results)
            return
        if tabs.active == "tab-mistakes":
            tabs.active = "tab-verdict"
        tabs.hide_tab("tab-mistakes")
        self._stack_image_changes()
        self.set_columns("#scores", "", "items", "base", "tuned", "change")
        for table_id in ("#regressions", "#fixes"):
            self.set_columns(table_id, "id", "cluster", "expected")
        s = results.summary
        verdict = s["verdict"]
        banner = Text()
        banner.append(f" {verdict.upper()} ", style=f"bold reverse {'green' if verdict == 'ship' else 'red' if verdict == 'stop' else 'yellow'}")
        banner.append("  " + escape_controls(s.get("verdict_text", "")))
        box = self.query_one("#verdict", Static)
        box.update(banner)
        box.set_classes(f"-{verdict.split()[0]}")
        scores = self.query_one("#scores", DataTable)
        scores.clear()
        # With no target the whole benchmark is the target and there is no rest row (summary.json's target_name says which).
        name = s.get("target_name") or f"target ({', '.join(s.get('targets') or []) or 'none'})"
        groups = [(name, s.get("target", {}))] + ([("rest", s["rest"])] if (s.get("rest") or {}).get("size") else [])
        for name, group in groups:
            scores.add_row(_one_line(name, 40), str(group.get("size", 0)), _pct(group.get("base_accuracy")), _pct(group.get("tuned_accuracy")), _pts(group.get("change")))
        facts = [f"regressions: {s.get('regressions', 0)}   fixes: {s.get('fixes', 0)}"]
        if s.get("regression_clusters"):
            facts.append("regressions by cluster: " + ", ".join(f"{k} {v}" for k, v in sorted(s["regression_clusters"].items(), key=lambda kv: -kv[1])))
        held = s.get("heldout")
        if held:
            facts.append(f"held-out loss ({held['split']}, {held['samples']} samples): base {held['base']['loss']:.4f} → tuned {held['tuned']['loss']:.4f}")
        settings = s.get("settings") or {}
        how = ("labels ranked by log-probability" if settings.get("score") == "labels"
               else f"greedy, max {settings.get('max_tokens', '?')} tokens")
        facts += [
            "",
            f"model:     {s.get('model')}",
            f"adapter:   {s.get('adapter')}",
            f"benchmark: {s.get('bench')} ({len(results.rows)} items, {how})",
            f"training examples: {s.get('training_examples') if s.get('training_examples') is not None else 'unknown'}",
            f"report:    {results.folder / 'report.md'}",
            f"run log:   {results.folder / 'run-log.jsonl'}  (f: review its failures; headless: mlxft data failures / review)",
        ]
        self.query_one("#verdict-facts", Static).update(Text(escape_lines(facts)))
        self.show_changes(results)
        self.show_classes(results)

    def show_changes(self, results: EvalResults) -> None:
        for table_id, rows, title_id, title in (("#regressions", results.regressions, "#regressions-title", "Regressions"),
                                                ("#fixes", results.fixes, "#fixes-title", "Fixes")):
            table = self.query_one(table_id, DataTable)
            table.clear()
            for row in rows:
                table.add_row(_one_line(str(row.get("id", "")), 16), _one_line(row.get("cluster") or "-", 14), _one_line(row.get("expected"), 40))
            kind = "right → wrong" if table_id == "#regressions" else "wrong → right"
            self.query_one(title_id, Label).update(f"{title} ({len(rows)}): {kind}")
        first = results.regressions[:1] or results.fixes[:1]
        self.show_change(first[0] if first else None)

    @on(DataTable.RowHighlighted, "#regressions, #fixes")
    def change_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.has_focus:  # filling a table highlights its first row too; only the one in use counts
            self.show_highlighted(event.data_table)

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, DataTable) and event.widget.id in ("regressions", "fixes"):
            self.show_highlighted(event.widget)

    def show_highlighted(self, table: DataTable) -> None:
        if self.results is None or not table.row_count:
            return
        rows = self.results.regressions if table.id == "regressions" else self.results.fixes
        if 0 <= table.cursor_row < len(rows):
            self.show_change(rows[table.cursor_row])

    def show_change(self, row: dict | None) -> None:
        if isinstance(self.results, ImageResults):
            self.show_image_change(row)
            return
        if isinstance(self.results, TextResults):
            self.show_text_change(row)
            return
        question, base, tuned = (self.query_one(f"#change-{n}", Static) for n in ("question", "base", "tuned"))
        if row is None:
            question.update("no regressions and no fixes: base and tuned agree on every item")
            base.update("")
            tuned.update("")
            return
        head = Text()
        # Benchmark text and answers may hold terminal escapes; a multi-line answer keeps its lines.
        head.append(escape_controls(f"{row.get('id')} "), style="bold")
        head.append(escape_controls(f"[{row.get('cluster') or 'no cluster'}]  "), style="dim")
        head.append(escape_controls(_question(row), keep="\n"))
        head.append("\nexpected: ", style="bold")
        expected = row["expected"] if isinstance(row.get("expected"), str) else json.dumps(row.get("expected"), ensure_ascii=False)
        head.append(escape_controls(expected, keep="\n"))
        question.update(head)
        for widget, phase in ((base, "base"), (tuned, "tuned")):
            passed = row.get(f"{phase}_grade")
            text = Text()
            text.append(f"{phase}: ", style="bold")
            text.append("right" if passed else "wrong", style="green" if passed else "red")
            reason = row.get(f"{phase}_reason")
            if reason:
                text.append(escape_controls(f" ({reason})"), style="dim")
            text.append("\n" + escape_controls(str(row.get(f"{phase}_answer", "")), keep="\n"))
            widget.update(text)

    def show_classes(self, results: EvalResults) -> None:
        reports = results.summary.get("classification")
        if not reports:
            self.query_one("#class-note", Static).update("per-class reports appear for benchmarks whose every item is graded one-of")
            self.query_one("#class-table", DataTable).display = False
            for phase in ("base", "tuned"):
                self.query_one(f"#confusion-{phase}", Static).update("")
            self.query_one("#confusion-paths", Static).update("")
            return
        base, tuned = reports["base"], reports["tuned"]
        note = Text.assemble(("accuracy ", "bold"), f"base {_pct(base['accuracy'])} → tuned {_pct(tuned['accuracy'])}",
                             f"   ({tuned['other']} tuned answers were none of the labels)" if tuned.get("other") else "")
        pngs = [str(p) for p in (results.confusion_png("base"), results.confusion_png("tuned")) if p]
        self.show_class_pair(base, tuned, ("base", "tuned"), note, pngs)

    def show_class_pair(self, base: dict, tuned: dict, names: tuple[str, str], note: Text, pngs: list[str]) -> None:
        """Two classification reports (base and tuned, or image runs A and B): per class side by side, both matrices."""
        table = self.query_one("#class-table", DataTable)
        table.clear(columns=True)
        self.query_one("#class-note", Static).update(note)
        table.display = True
        table.add_columns("class", "n", f"{names[0]} P", "R", "F1", f"{names[1]} P", "R", "F1")
        for label in base["labels"]:
            b, t = base["per_class"][label], tuned["per_class"][label]
            table.add_row(_one_line(label, 24), str(b["support"]), *(f"{b[k]:.2f}" for k in ("precision", "recall", "f1")),
                          *(Text(f"{t[k]:.2f}", style="green" if t[k] > b[k] else "red" if t[k] < b[k] else "") for k in ("precision", "recall", "f1")))
        for name in ("macro", "weighted"):
            b, t = base[name], tuned[name]
            table.add_row(Text(f"{name} avg", style="italic"), str(b["support"]), *(f"{b[k]:.2f}" for k in ("precision", "recall", "f1")),
                          *(f"{t[k]:.2f}" for k in ("precision", "recall", "f1")))
        for phase, name, report in (("base", names[0], base), ("tuned", names[1], tuned)):
            self.query_one(f"#confusion-{phase}", Static).update(confusion_table(report, f"{name}: accuracy {_pct(report['accuracy'])}"))
        self.query_one("#confusion-paths", Static).update(Text(escape_controls("PNG: " + "   ".join(pngs)) if pngs else "", style="dim"))

    def per_class_table(self, per_class: dict, auc: dict) -> DataTable:
        """The Classes tab's table for one classifier evaluation: a row per class with its ROC AUC."""
        table = self.set_columns("#class-table", "class", "n", "precision", "recall", "F1", "ROC AUC")
        table.display = True
        for label, m in per_class.items():
            value = auc.get(label)
            table.add_row(_one_line(label, 24), str(m["support"]), *(f"{m[k]:.2f}" for k in ("precision", "recall", "f1")),
                          "" if value is None else "n/a" if value != value else f"{value:.3f}")
        return table

    def set_columns(self, table_id: str, *columns: str) -> DataTable:
        table = self.query_one(table_id, DataTable)
        table.clear(columns=True)
        table.add_columns(*columns)
        return table

    # -- image classifiers -------------------------------------------------------------------------
    def show_image_results(self, results: ImageResults) -> None:
        """One image run's evaluation, and its comparison with an earlier run when there is one."""
        s, c = results.summary, results.comparison
        box = self.query_one("#verdict", Static)
        banner = Text()
        if c:
            verdict = c["verdict"]
            banner.append(f" {verdict.upper()} ", style=f"bold reverse {'green' if verdict == 'ship' else 'red' if verdict == 'stop' else 'yellow'}")
            banner.append("  " + escape_controls(c.get("verdict_text", "")))
            box.set_classes(f"-{verdict.split()[0]}")
        else:
            banner.append(f" ACCURACY {_pct(s.get('accuracy'))} ", style="bold reverse")
            banner.append(escape_controls(f"  macro F1 {s.get('macro_f1', float('nan')):.3f}, {s.get('mistakes', 0)} of {s.get('images', 0)} "
                                          f"'{s.get('split', '?')}' images misclassified"))
            box.set_classes("")
        box.update(banner)
        if c:
            a, b = c["before"], c["after"]
            scores = self.set_columns("#scores", "", _one_line(f"A {a['name']}", 24), _one_line(f"B {b['name']}", 24), "change")
            scores.add_row("accuracy", _pct(a["accuracy"]), _pct(b["accuracy"]), _pts(b["accuracy"] - a["accuracy"]))
            scores.add_row("macro F1", f"{a['macro_f1']:.3f}", f"{b['macro_f1']:.3f}", f"{b['macro_f1'] - a['macro_f1']:+.3f}")
            scores.add_row(f"right of {c['images']}", str(a["correct"]), str(b["correct"]), f"{b['correct'] - a['correct']:+d}")
        else:
            scores = self.set_columns("#scores", "", "value")
            scores.add_row("accuracy", _pct(s.get("accuracy")))
            scores.add_row("macro F1", f"{s.get('macro_f1', float('nan')):.3f}")
            for name, value in (s.get("auc") or {}).items():
                scores.add_row(_one_line(f"ROC AUC {name}", 30), "n/a" if value != value else f"{value:.3f}")
        facts = []
        if c:
            facts += [f"regressions: {len(c['regressions'])}   fixes: {len(c['fixes'])}", c.get("mcnemar", {}).get("note", ""), "",
                      f"A (before): {a['name']}  {a.get('path') or ''}", f"B (after):  {b['name']}  {b.get('path') or ''}",
                      f"images:     {c['images']} of the '{c['split']}' split of {c.get('data') or '?'}",
                      f"comparison: {results.comparison_path.with_suffix('.md')}  (and .json)"]
        else:
            op = s.get("operating_point")
            if op:
                facts.append(f"threshold P({op['label']}) >= {op['threshold']:.4f} (recall {op['valid_recall']:.3f} on validation): "
                             f"recall {op['recall']:.3f}, precision {op['precision']:.3f}, {op['flagged']} flagged")
            facts += ["", "compare with an earlier image run: pick it in Against on Setup, then ctrl+g"]
        facts += [f"report:     {results.folder / 'report.md'}"]
        facts += [f"{name + ':':<11} {path}" for name, png in (("confusion", "confusion.png"), ("mistakes", "misclassified.png"))
                  if (path := results.png(png))]
        self.query_one("#verdict-facts", Static).update(Text(escape_lines(facts)))
        self.show_image_changes(results)
        self.show_image_classes(results)
        self.show_mistakes(results)
        self._stack_image_changes()

    def show_image_changes(self, results: ImageResults) -> None:
        for table_id, rows, title_id, title, kind in (("#regressions", results.regressions, "#regressions-title", "Regressions", "right under A → wrong under B"),
                                                      ("#fixes", results.fixes, "#fixes-title", "Fixes", "wrong under A → right under B")):
            table = self.set_columns(table_id, "image", "true", "A", "B")
            for row in rows:
                table.add_row(_one_line(short_path(row["image"]), 22), _one_line(row["label"], 10), _one_line(f"{row['before']} {row['before_p']:.2f}", 14),
                              _one_line(f"{row['after']} {row['after_p']:.2f}", 14))
            self.query_one(title_id, Label).update(f"{title} ({len(rows)}): {kind}" if results.comparison else f"{title}: compare two runs to see them")
        first = results.regressions[:1] or results.fixes[:1]
        self.show_image_change(first[0] if first else None)

    def show_image_change(self, row: dict | None) -> None:
        question, base, tuned = (self.query_one(f"#change-{n}", Static) for n in ("question", "base", "tuned"))
        c = self.results.comparison if isinstance(self.results, ImageResults) else None
        if row is None or c is None:
            question.update("no regressions and no fixes: A and B are right on the same images" if c else
                            "pick an earlier image run in Against on Setup and press ctrl+g: its regressions and fixes show here")
            base.update("")
            tuned.update("")
            return
        head = Text()
        head.append(escape_controls(row["image"]), style="bold")
        head.append("\ntrue label: ", style="bold")
        head.append(escape_controls(row["label"]))
        question.update(head)
        for widget, side, who in ((base, "before", f"A {c['before']['name']}"), (tuned, "after", f"B {c['after']['name']}")):
            right = row[side] == row["label"]
            text = Text()
            text.append(escape_controls(f"{who}: "), style="bold")
            text.append("right" if right else "wrong", style="green" if right else "red")
            text.append("\npredicted " + escape_controls(f"{row[side]} with p = {row[f'{side}_p']:.3f}"))
            widget.update(text)

    def show_image_classes(self, results: ImageResults) -> None:
        c, s = results.comparison, results.summary
        pngs = [str(p) for p in (results.png("confusion.png"),) if p]
        if c:
            pngs = [f"(B) {p}" for p in pngs]
            a, b = c["before"]["classification"], c["after"]["classification"]
            note = Text.assemble(("accuracy ", "bold"), f"A {_pct(a['accuracy'])} → B {_pct(b['accuracy'])}", ("   macro F1 ", "bold"),
                                 f"A {a['macro']['f1']:.3f} → B {b['macro']['f1']:.3f}")
            self.show_class_pair(a, b, ("A", "B"), note, pngs)
            return
        auc = s.get("auc") or {}
        table = self.per_class_table(s.get("per_class") or {}, auc)
        for name in ("macro", "weighted"):
            if name in s:
                m = s[name]
                table.add_row(Text(f"{name} avg", style="italic"), str(m["support"]), *(f"{m[k]:.2f}" for k in ("precision", "recall", "f1")),
                              f"{auc['macro']:.3f}" if name == "macro" and auc.get("macro") == auc.get("macro") and "macro" in auc else "")
        self.query_one("#class-note", Static).update(Text.assemble(("accuracy ", "bold"), _pct(s.get("accuracy")), ("   macro F1 ", "bold"),
                                                                   f"{s.get('macro_f1', float('nan')):.3f}", f"   ({s.get('images', 0)} '{s.get('split', '?')}' images)"))
        confusion = s.get("confusion") or {"labels": [], "matrix": []}
        report = {"labels": confusion["labels"], "columns": confusion["labels"], "confusion": confusion["matrix"]}
        self.query_one("#confusion-base", Static).update(confusion_table(report, f"{s.get('split', '?')}: accuracy {_pct(s.get('accuracy'))}"))
        self.query_one("#confusion-tuned", Static).update("")
        self.query_one("#confusion-paths", Static).update(Text(escape_controls("PNG: " + "   ".join(pngs)) if pngs else "", style="dim"))

    # -- text classifiers --------------------------------------------------------------------------
    def show_text_results(self, results: TextResults) -> None:
        """A text classifier's evaluation: accuracy, macro F1, ROC AUC and calibration, next to the zero-shot base."""
        s = results.summary
        base = s.get("base")
        box = self.query_one("#verdict", Static)
        banner = Text()
        banner.append(f" ACCURACY {_pct(s.get('accuracy'))} ", style="bold reverse")
        tail = f"  macro F1 {s.get('macro_f1', float('nan')):.3f} on {s.get('texts', 0)} '{s.get('split', '?')}' texts"
        if base:
            tail += f"; zero-shot base {_pct(base.get('accuracy'))} ({_pts(s['accuracy'] - base['accuracy'])})"
        banner.append(escape_controls(tail))
        box.set_classes("")
        box.update(banner)
        if base:
            scores = self.set_columns("#scores", "", "zero-shot base", "tuned", "change")
            scores.add_row("accuracy", _pct(base["accuracy"]), _pct(s["accuracy"]), _pts(s["accuracy"] - base["accuracy"]))
            scores.add_row("macro F1", f"{base['macro_f1']:.3f}", f"{s['macro_f1']:.3f}", f"{s['macro_f1'] - base['macro_f1']:+.3f}")
        else:
            scores = self.set_columns("#scores", "", "tuned")
            scores.add_row("accuracy", _pct(s.get("accuracy")))
            scores.add_row("macro F1", f"{s.get('macro_f1', float('nan')):.3f}")
        for name, value in (s.get("auc") or {}).items():
            scores.add_row(_one_line(f"ROC AUC {name}", 30), *([""] if base else []), "n/a" if value != value else f"{value:.3f}", *([""] if base else []))
        scores.add_row("calibration error (ECE)", *([""] if base else []), f"{s.get('ece', float('nan')):.4f}", *([""] if base else []))
        facts = []
        if base:
            words = ", ".join(f"{k} {v!r}" for k, v in (base.get("words") or {}).items())
            facts.append(f"zero-shot base: the untrained model scoring the label words ({words})")
            facts.append(f"regressions: {len(results.regressions)} (base right, tuned wrong)   fixes: {len(results.fixes)}")
        else:
            facts.append("no zero-shot base: the run's label words were not given (classify.verbalizer), or it was skipped (--no-base)")
        if s.get("truncated"):
            facts.append(f"{s['truncated']} text(s) were cut to fit the prompt's length")
        facts += ["", f"report:      {results.folder / 'report.md'}"]
        facts += [f"{name + ':':<12} {path}" for name, png in (("confusion", "confusion.png"), ("reliability", "reliability.png"))
                  if (path := results.png(png))]
        self.query_one("#verdict-facts", Static).update(Text(escape_lines(facts)))
        for table_id, rows, title_id, title, kind in (("#regressions", results.regressions, "#regressions-title", "Regressions", "base right → tuned wrong"),
                                                      ("#fixes", results.fixes, "#fixes-title", "Fixes", "base wrong → tuned right")):
            table = self.set_columns(table_id, "text", "true", "base", "tuned")
            for row in rows:
                table.add_row(_one_line(text_of(row), 30), _one_line(row["label"], 10), _one_line(row["base_predicted"], 10), _one_line(row["predicted"], 10))
            self.query_one(title_id, Label).update(f"{title} ({len(rows)}): {kind}" if base else f"{title}: need a zero-shot base to compare with")
        first = results.regressions[:1] or results.fixes[:1]
        self.show_text_change(first[0] if first else None)
        self.show_text_classes(results)
        self.show_mistakes(results)
        self._stack_image_changes()

    def show_text_change(self, row: dict | None) -> None:
        question, base, tuned = (self.query_one(f"#change-{n}", Static) for n in ("question", "base", "tuned"))
        if row is None:
            has_base = isinstance(self.results, TextResults) and self.results.summary.get("base")
            question.update("no regressions and no fixes: base and tuned agree on every text" if has_base else
                            "the zero-shot base was not scored, so there is nothing to compare with")
            base.update("")
            tuned.update("")
            return
        head = Text()
        head.append(escape_controls(text_of(row), keep="\n"))
        head.append("\ntrue label: ", style="bold")
        head.append(escape_controls(str(row["label"])))
        question.update(head)
        probs = row.get("probabilities") or {}
        for widget, who, predicted in ((base, "zero-shot base", row["base_predicted"]), (tuned, "tuned", row["predicted"])):
            right = predicted == row["label"]
            text = Text()
            text.append(f"{who}: ", style="bold")
            text.append("right" if right else "wrong", style="green" if right else "red")
            text.append("\npredicted " + escape_controls(str(predicted)))
            if who == "tuned" and probs:
                text.append("\n" + escape_controls("  ".join(f"P({k}) {v:.3f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))))
            widget.update(text)

    def show_text_classes(self, results: TextResults) -> None:
        s = results.summary
        auc = s.get("auc") or {}
        self.per_class_table(s.get("per_class") or {}, auc)
        self.query_one("#class-note", Static).update(Text.assemble(("accuracy ", "bold"), _pct(s.get("accuracy")), ("   macro F1 ", "bold"),
                                                                   f"{s.get('macro_f1', float('nan')):.3f}", f"   ({s.get('texts', 0)} '{s.get('split', '?')}' texts)"))
        confusion = s.get("confusion") or {"labels": [], "matrix": []}
        labels = confusion["labels"]
        tuned = {"labels": labels, "columns": labels, "confusion": confusion["matrix"]}
        self.query_one("#confusion-base", Static).update(confusion_table(tuned, f"tuned: accuracy {_pct(s.get('accuracy'))}"))
        base = s.get("base")
        self.query_one("#confusion-tuned", Static).update(
            confusion_table({"labels": labels, "columns": labels, "confusion": base["confusion"]}, f"zero-shot base: accuracy {_pct(base['accuracy'])}")
            if base and base.get("confusion") else "")
        pngs = [str(p) for p in (results.png("confusion.png"), results.png("reliability.png")) if p]
        self.query_one("#confusion-paths", Static).update(Text(escape_controls("PNG: " + "   ".join(pngs)) if pngs else "", style="dim"))

    def show_mistakes(self, results: ImageResults | TextResults) -> None:
        mistakes = results.mistakes()
        table = self.query_one("#mistakes", DataTable)
        texts = isinstance(results, TextResults)
        table.clear(columns=True)
        table.add_columns("text" if texts else "image", "true", "predicted", "p")
        for row in mistakes:
            probs = row.get("probabilities") or {}
            table.add_row(_one_line(text_of(row) if texts else short_path(row["image"]), 34), _one_line(row["label"], 12), _one_line(row["predicted"], 12),
                          f"{probs.get(row['predicted'], float('nan')):.2f}")
        grid = None if texts else results.png("misclassified.png")
        title = f"{len(mistakes)} misclassified of {len(results.predictions)} ({results.summary.get('split', '?')}), most confident first"
        self.query_one("#mistakes-title", Label).update(escape_controls(title + ("; o: grid, enter: image" if grid else "")))
        self.show_mistake(mistakes[0] if mistakes else None)

    def show_mistake(self, row: dict | None) -> None:
        detail = self.query_one("#mistake-detail", Static)
        texts = isinstance(self.results, TextResults)
        grid = self.results.png("misclassified.png") if isinstance(self.results, ImageResults) else None
        lines = []
        if row is not None:
            probs = row.get("probabilities") or {}
            lines += [text_of(row) if texts else row["image"], "  ".join(f"P({k}) {v:.3f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))]
        else:
            lines.append(f"no {'text' if texts else 'image'} is misclassified")
        if not texts:
            lines.append(f"grid: {grid}" if grid else "grid: none (nothing misclassified)")
        detail.update(Text(escape_lines(lines)))

    @on(DataTable.RowHighlighted, "#mistakes")
    def mistake_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(self.results, (ImageResults, TextResults)):
            mistakes = self.results.mistakes()
            if 0 <= event.cursor_row < len(mistakes):
                self.show_mistake(mistakes[event.cursor_row])

    @on(DataTable.RowSelected, "#mistakes")
    def mistake_selected(self, event: DataTable.RowSelected) -> None:
        if isinstance(self.results, ImageResults):
            mistakes = self.results.mistakes()
            if 0 <= event.cursor_row < len(mistakes):
                self.open_file(Path(mistakes[event.cursor_row]["image"]))

    def action_open_grid(self) -> None:
        grid = self.results.png("misclassified.png") if isinstance(self.results, ImageResults) else None
        if grid is None:
            self.notify("no grid of misclassified images to open: evaluate an image run with mistakes first", severity="warning")
            return
        self.open_file(grid)

    def open_file(self, path: Path) -> None:
        problem = open_in_viewer(path)
        if problem:
            self.notify(escape_controls(problem), severity="warning")
        else:
            self.notify(escape_controls(f"opened {path}"))
