"""Train: a recipe form, start/stop/resume, live loss chart and stats, and the list of past runs.

The screen never trains: it starts `mlxft train` in its own process (tui.runner.TrainProcess) and
follows the run directory's metrics.jsonl, so a run started headless in another terminal is
watched (and stopped) the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, RichLog, Sparkline, Static, TabbedContent, TabPane

from mlxft.atomic import atomic_write_text
from mlxft.errors import MlxftError
from mlxft.events import CheckpointSaved, EvalReport, LogMessage, RunFailed, RunFinished, RunStarted, StepReport
from mlxft.recipe import VISION_KINDS, Recipe, kinds_for_format, load_recipe
from mlxft.runs import RunDir, list_runs, summarize_run
from mlxft.textsafe import escape_controls
from tui.runner import MetricsFollower, TrainProcess, stop_run_dir
from tui.widgets.chart import LineChart, Series

from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.nav import KeyFooter, NavBar, NavScreen, key_allowed
from tui.widgets.recipe_form import FieldRow, RecipeForm, format_value

CHART_STYLES = ("green", "yellow")  # the lines of a job's charted metrics, beside train (cyan) and val (magenta) loss


NO_FIELD_HELP = "tab to a field: its help shows here · ctrl+g starts · e/v/l: the Recipe, Run and Runs tabs"


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def memory_line(recipe: Recipe, data=None) -> str:
    """The memory plan for the form's recipe when the model's config is at hand (catalogue or folder), in the words
    and numbers `mlxft plan` prints; `data` is the train split's measured lengths (None: not measured yet)."""
    from mlxft.llm.catalogue import config_at_hand
    from mlxft.llm.memory import format_plan_line, plan_memory
    from mlxft.vision.catalogue import find_backbone

    if find_backbone(recipe.model) is not None:
        return f"memory: {recipe.model} is a vision backbone: set kind to image-classify, or pick a language model"
    config = config_at_hand(recipe.model)
    if config is None:
        return "memory: estimated when the run starts (no config.json at hand for this model)"
    from mlxft.train.process import auto_ranks

    ranks, _ = auto_ranks(recipe, data)  # the app starts `mlxft train` without --ranks: plan what it will run
    return format_plan_line(plan_memory(recipe, config, data=data, ranks=ranks))


def detected_format(recipe: Recipe) -> str | None:
    """The format of the recipe's local data as `mlxft data validate` would name it (None: not local, or unclear, which
    training then reports itself). Reads the first rows of the train split only."""
    from itertools import islice

    from mlxft.data.encode import column_mapping
    from mlxft.data.formats import DETECT_ROWS, detect_format
    from mlxft.data.readers import find_splits, iter_rows

    path = Path(recipe.data.path).expanduser()
    if not path.exists():
        return None
    try:
        if "train" not in find_splits(path):
            return None
        return detect_format(islice(iter_rows(path, "train"), DETECT_ROWS), column_mapping(recipe.data))
    except (MlxftError, OSError):
        return None


def kind_problem(recipe: Recipe, fmt: str | None) -> str | None:
    """Why `recipe.kind` cannot train data of format `fmt`, naming the kinds that can; None when it can."""
    if fmt is None or recipe.kind in kinds_for_format(fmt):
        return None
    return f"{recipe.data.path} is {fmt} data: kind {recipe.kind} cannot train it; it trains with {' or '.join(kinds_for_format(fmt))}"


def planned_steps(run: Path) -> int | None:
    """train.steps of a run's recipe.yaml (the progress bar's length before the first event); None when unknown."""
    try:
        data = yaml.safe_load(RunDir(run).recipe_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    steps = (data.get("train") or {}).get("steps") if isinstance(data, dict) and isinstance(data.get("train"), dict) else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None


class TrainScreen(NavScreen):
    _unit = "tok"  # what throughput counts; RunStarted says
    AUTO_FOCUS = None  # on_mount decides: the recipe path, or nothing when a live run is shown
    HELP = """\
## Train

- **Recipe** tab: every field of the recipe schema with its default; the focused field's help shows in the line
  above the form (and beside every field from 130 columns); problems show under the field.
  `ctrl+o` loads a recipe YAML, `ctrl+s` saves one, `ctrl+g` starts training.
- **Run** tab: loss chart (train and validation), learning rate, tokens/s, peak memory, ETA and the log.
  `x` stops (saves a checkpoint first), `r` resumes from the last checkpoint, `o` opens the run on Evaluate
  (its adapter and base model filled in, its last results shown).
- **Runs** tab: every run under the runs folder, including runs started with `mlxft train` elsewhere.
  `enter` opens one (and follows it live if it is training). Type a run folder to attach to any run.
- `p` exports or pushes the highlighted run (on the Run tab: the shown one): the formats its kind takes (PEFT,
  fused, GGUF, timm, ...) with their options, the folder (default RUN/exports/FORMAT), Export; a Hub repo id,
  Dry run (writes and lists what would go up) and Push. `escape` cancels a running export. The same commands:
  `mlxft export RUN --format F`, `mlxft push RUN --repo OWNER/NAME`.
- The footer shows `x` Stop and `r` Resume only when they apply to the shown run.
- `e` / `v` / `l` show the Recipe / Run / Runs tabs; `escape` leaves a form field so these and the number keys work
  (`alt+1`-`alt+5` switch screens from inside a field too).
"""

    BINDINGS = [
        Binding("ctrl+g", "start", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("o", "evaluate_run", "Evaluate"),
        Binding("p", "export_run", "Export"),
        Binding("ctrl+o", "load_recipe", "Load", show=False),  # on the buttons instead: the footer keeps ? and q at 80 columns
        Binding("ctrl+s", "save_recipe", "Save", show=False),
        Binding("escape", "leave_field", "Leave field"),
        Binding("e", "tab('tab-recipe')", "Tabs", key_display="e/v/l"),  # one footer entry for the three tab keys
        Binding("v", "tab('tab-run')", "Run", show=False),
        Binding("l", "tab('tab-runs')", "Runs", show=False),
    ]

    DEFAULT_CSS = """
    TrainScreen #train-tabs { height: 1fr; }
    TrainScreen #train-tabs ContentSwitcher { height: 1fr; }
    TrainScreen TabPane { height: 1fr; padding: 0; }
    TrainScreen #recipe-form { height: 1fr; }
    TrainScreen #recipe-bar, TrainScreen #run-bar, TrainScreen #runs-bar { height: auto; }
    TrainScreen #recipe-bar { padding: 0 1; margin-top: 1; }
    TrainScreen #recipe-bar Input { width: 1fr; }
    TrainScreen #recipe-bar Button { margin-left: 2; width: auto; min-width: 0; }
    TrainScreen #memory-line { color: $text-muted; padding: 0 1; }
    TrainScreen #field-help { height: 2; padding: 0 1; background: $boost; }
    TrainScreen #run-title { text-style: bold; padding: 0 1; }
    TrainScreen #run-stats { padding: 0 1; }
    TrainScreen #run-progress { padding: 0 1; height: 1; }
    TrainScreen #run-stats { height: auto; width: 100%; }
    TrainScreen #run-progress Bar { width: 1fr; }
    TrainScreen #run-body { height: 1fr; }
    TrainScreen #loss-chart { height: 2fr; min-height: 7; border: round $primary; }
    TrainScreen .spark-row { height: 1; }
    TrainScreen .spark-row Label { width: 14; color: $text-muted; }
    TrainScreen .spark-row Sparkline { width: 1fr; }
    TrainScreen #run-log { height: 1fr; min-height: 4; max-height: 14; border: round $panel; }
    TrainScreen #runs-table { height: 1fr; }
    TrainScreen #attach-path { width: 1fr; }
    TrainScreen #run-bar Button { margin-right: 2; }
    """

    def __init__(self):
        super().__init__()
        self.run_path: Path | None = None
        self.follower: MetricsFollower | None = None
        self.total_steps = 0
        self.finished: RunFinished | RunFailed | None = None
        self._replaying = False
        self._check_timer = None
        self._planned: Recipe | None = None  # the recipe the memory line is (being) planned for
        self._reported_exit: set[int] = set()
        self._last_step: StepReport | None = None
        self._summaries: dict[Path, tuple] = {}  # run folder -> (metrics size and mtime, RunSummary)
        self._lr: list[float] = []
        self._tps: list[float] = []
        self._charted: tuple[str, ...] = ()  # the job's metrics drawn on the chart, from RunStarted

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield NavBar("train")
        with TabbedContent(initial="tab-recipe", id="train-tabs"):
            with TabPane("Recipe", id="tab-recipe"):
                with Horizontal(id="recipe-bar"):
                    yield Input(placeholder="recipe file (.yaml) to load or save", id="recipe-path", compact=True)
                    yield Button("Load ^o", id="load", compact=True)
                    yield Button("Save ^s", id="save", compact=True)
                    yield Button("Start ▶ ^g", id="start", variant="success", compact=True)
                yield Label("", id="memory-line", markup=False)
                yield Static(NO_FIELD_HELP, id="field-help", markup=False)
                yield RecipeForm(id="recipe-form")
            with TabPane("Run", id="tab-run"):
                yield Label("no run yet: fill the recipe and press ctrl+g, or open one from Runs", id="run-title", markup=False)
                with Horizontal(id="run-progress"):
                    yield ProgressBar(total=100, show_eta=False, id="progress")
                yield Label("", id="run-stats", markup=False)
                with Vertical(id="run-body"):
                    yield LineChart([Series("train loss", "cyan"), Series("val loss", "bold magenta", marker=True)], id="loss-chart")
                    with Horizontal(classes="spark-row"):
                        yield Label("learning rate", id="lr-label")
                        yield Sparkline([], id="lr-spark")
                    with Horizontal(classes="spark-row"):
                        yield Label("tokens/s", id="tps-label")
                        yield Sparkline([], id="tps-spark")
                    yield RichLog(id="run-log", max_lines=2000, wrap=True, markup=False)
                with Horizontal(id="run-bar"):
                    yield Button("Stop (x)", id="stop", variant="error", disabled=True, compact=True)
                    yield Button("Resume (r)", id="resume", disabled=True, compact=True)
            with TabPane("Runs", id="tab-runs"):
                yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="runs-bar"):
                    yield Input(placeholder="attach to a run folder: path/to/run", id="attach-path")
                    yield Button("Open", id="attach")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns("run", "status", "step", "loss", "best val", "model", "started")
        form = self.query_one(RecipeForm)
        form.set_field("output_dir", str(self.app.runs_dir))
        form.set_field("kind", "lm-lora")
        if self.app.train_pick is not None:
            spec, kind = self.app.train_pick
            (self.backbone_selected if kind == "vision" else self.model_selected)(spec)
        if self.app.data_path:
            self.data_selected(self.app.data_path, **self.app.data_pick)
        self.set_interval(0.5, self.poll_run)
        self.set_interval(3.0, self.refresh_runs)
        self.refresh_runs()
        # a run this app started before the screen was made (or still running) is shown again
        running = self.app.running_processes()
        if running:
            self.open_run(running[-1].run_path)
        else:
            self.query_one("#train-tabs Tabs").focus()  # not a field: keys typed on arrival are keys, not text

    def on_descendant_focus(self, event) -> None:
        """The focused field's help, in the line above the form that every width has room for."""
        row = next((node for node in event.widget.ancestors_with_self if isinstance(node, FieldRow)), None)
        if row is not None:
            s = row.spec
            default = "required" if s.required else f"default {format_value(s.default)}"
            self.query_one("#field-help", Static).update(f"{s.key} ({default}): {s.help or 'no help for this field'}")

    # -- shared state hooks (called by the app) -------------------------------------------------
    def model_selected(self, spec: str) -> None:
        form = self.query_one(RecipeForm)
        form.set_field("model", spec)
        if form.get_field("kind") in VISION_KINDS:
            form.set_field("kind", "lm-lora")  # a language model: back to the LM default

    def backbone_selected(self, spec: str) -> None:
        """A vision backbone from Models: the recipe becomes image-classify, its model the backbone's key."""
        form = self.query_one(RecipeForm)
        form.set_field("model", spec)
        form.set_field("kind", "image-classify")

    def data_selected(self, path: str, format: str | None = None, class_weights: dict | None = None) -> None:
        """Data -> Train. A classification set makes the recipe a classifier (lm-classify for texts, image-classify
        for image folders); class weights from Data's label balance go into the classifier's section."""
        form = self.query_one(RecipeForm)
        form.set_field("data.path", path)
        if format and form.get_field("kind") not in kinds_for_format(format):
            form.set_field("kind", kinds_for_format(format)[0])  # e.g. lm-classify for labelled texts, lm-dpo for pairs
        if class_weights is not None:
            if format == "image-classification":
                form.set_field("vision.class_weights", "auto")  # the image job computes inverse frequency itself
            else:
                form.set_field("classify.class_weights", {str(k): round(float(v), 4) for k, v in class_weights.items()})

    # -- the recipe --------------------------------------------------------------------------------
    @on(RecipeForm.Changed)
    def _form_changed(self) -> None:
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(0.4, self.check_recipe)

    def check_recipe(self) -> Recipe | None:
        if self._check_timer is not None:
            self._check_timer.stop()  # checked now: the pending re-check of the last edit would only repeat this
        form = self.query_one(RecipeForm)
        recipe = form.check()
        line = self.query_one("#memory-line", Label)
        if recipe is None:
            line.update(f"{form.problem_count} problem(s): see the fields marked in red")
        else:
            self.show_memory_plan(recipe)
        return recipe

    def show_memory_plan(self, recipe: Recipe) -> None:
        """The plan at once when the data is measured already; else measure it in a worker and show it when done."""
        from mlxft.llm.batch_shapes import cached_train_lengths

        self._planned = recipe
        if recipe.kind in VISION_KINDS:
            from mlxft.backend import memory_to_judge
            from mlxft.vision.catalogue import format_finetune_line

            try:
                line = format_finetune_line(recipe, memory_to_judge()[1])
            except MlxftError as exc:
                line = f"memory: {exc.message}"
            self.query_one("#memory-line", Label).update(line)
            return
        data = cached_train_lengths(recipe)
        if data is None:
            import mlxft.llm.loading  # noqa: F401  (imported here, on the main thread: it loads mlx)

            self.query_one("#memory-line", Label).update(f"memory: measuring the token lengths of {recipe.data.path} to plan the batch …")
            self.measure_data(recipe)
        else:
            self._show_plan(recipe, data)

    @work(thread=True, exclusive=True, group="memory-plan")
    def measure_data(self, recipe: Recipe) -> None:
        # Reading and tokenizing only (pure Python and Rust): no MLX on this thread.
        from mlxft.llm.batch_shapes import measure_train_lengths

        data = measure_train_lengths(recipe)
        self.app.call_from_thread(self._show_plan, recipe, data)

    def _show_plan(self, recipe: Recipe, data) -> None:
        if recipe != self._planned:
            return  # the form changed while the data was measured: a newer plan is on its way
        line = self.query_one("#memory-line", Label)
        try:
            line.update(memory_line(recipe, data))
        except MlxftError as exc:
            line.update(f"memory: {exc.message}")

    def action_tab(self, tab: str) -> None:
        self.set_focus(None)  # a focused field would pull its tab back into view
        self.query_one(TabbedContent).active = tab
        if tab == "tab-runs":
            self.refresh_runs()
            self.query_one("#runs-table", DataTable).focus()

    def action_load_recipe(self) -> None:
        raw = self.query_one("#recipe-path", Input).value.strip()
        if not raw:
            self.app.show_error("type the path of a recipe YAML in the field above, then Load", hint="e.g. recipes/chat-lora.yaml")
            return
        path = Path(raw).expanduser()
        try:
            recipe = load_recipe(path)  # reports every problem with its location, like `mlxft validate`
        except MlxftError as exc:
            if not path.is_file():
                self.app.show_error(exc)
                return
            recipe = None
            self.app.show_error(exc.message, "the form shows the file as it is; fix the fields marked in red")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if recipe is None else recipe.to_dict()
        self.query_one(RecipeForm).set_values(data if isinstance(data, dict) else {})
        self.notify(f"loaded {path}")

    def action_save_recipe(self, overwrite: bool = False) -> None:
        raw = self.query_one("#recipe-path", Input).value.strip()
        if not raw:
            self.app.show_error("type where to save the recipe (a .yaml path) in the field above, then Save")
            return
        path = Path(raw).expanduser()
        recipe = self.check_recipe()
        if recipe is None:
            self.app.show_error("the recipe has problems; fix the fields marked in red before saving")
            return
        if path.exists() and not overwrite:
            self.app.push_screen(ConfirmDialog(f"{path} exists. Replace it?", "Replace"), lambda yes: yes and self.action_save_recipe(overwrite=True))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# Saved by mlxft tui. Run:  mlxft train " + str(path) + "\n"
        atomic_write_text(path, header + yaml.safe_dump(self.query_one(RecipeForm).values(), sort_keys=False))
        self.app.remember(recipe=str(path))  # Models' headless commands name it
        self.notify(f"saved {path}")

    # -- starting, stopping, resuming --------------------------------------------------------------
    def action_start(self) -> None:
        recipe = self.check_recipe()
        if recipe is None:
            self.action_tab("tab-recipe")
            self.app.show_error("the recipe has problems; fix the fields marked in red", hint="every field shows its own problem")
            return
        if self.app.running_processes():
            self.app.show_error("a run started here is still training", hint="stop it first (x on the Run tab), or start this one with `mlxft train` in another terminal")
            return
        fmt = recipe.data.format if recipe.data.format != "auto" else (
            self.app.data_pick.get("format") if self.app.data_path == recipe.data.path and self.app.data_pick.get("format") else detected_format(recipe))
        problem = kind_problem(recipe, fmt)
        if problem:
            self.action_tab("tab-recipe")
            self.app.show_error(problem, hint=f"set kind to {kinds_for_format(fmt)[0]} in the form (Data's `u` does it for you), or pick other data")
            return
        recipe.name = RunDir.next_path(recipe.output_dir, recipe.name or time.strftime("run-%Y%m%d-%H%M%S")).name
        for attr, value in (("model", recipe.model), ("data", recipe.data.path)):
            p = Path(value).expanduser()
            if p.exists():  # absolute, so the run (and its resume) does not depend on this folder
                if attr == "model":
                    recipe.model = str(p.resolve())
                else:
                    recipe.data.path = str(p.resolve())
        run_path = Path(recipe.output_dir) / recipe.name
        proc = TrainProcess.start(recipe.to_yaml(), run_path)
        self.app.train_processes[run_path] = proc
        self.open_run(run_path)
        self.log_line(f"started: mlxft train (pid {proc.popen.pid}); output log {proc.log_path}")
        self.log_line(f"the same headless: mlxft train {proc.recipe_path}")
        self.app.remember(recipe=str(proc.recipe_path))  # Models' headless commands name the recipe the app saved

    def action_stop(self) -> None:
        if self.run_path is None:
            return
        proc = self.app.train_processes.get(self.run_path)
        if proc is not None and proc.running:
            proc.stop()
        elif summarize_run(RunDir(self.run_path)).status in ("running", "starting"):
            stop_run_dir(self.run_path)
        else:
            self.notify("this run is not training")
            return
        self.log_line("stop requested: saving a checkpoint after the current step...")
        self.query_one("#stop", Button).disabled = True
        self.refresh_bindings()

    def action_resume(self) -> None:
        if self.run_path is None:
            return
        summary = summarize_run(RunDir(self.run_path))
        if summary.status in ("running", "starting"):
            self.notify("this run is training already")
            return
        if RunDir(self.run_path).latest_checkpoint() is None:
            self.app.show_error(f"{self.run_path}: no checkpoint to resume from", hint="start it again from the Recipe tab")
            return
        if self.app.running_processes():
            self.app.show_error("a run started here is still training", hint="stop it first")
            return
        proc = TrainProcess.resume(self.run_path)
        self.app.train_processes[self.run_path] = proc
        self.finished = None
        self.log_line(f"resuming from {RunDir(self.run_path).latest_checkpoint().name} (pid {proc.popen.pid})")
        self._update_buttons()

    def check_action(self, action: str, parameters) -> bool | None:
        """Stop and Resume are in the footer when their buttons apply, so Export, Help and Quit fit at 80 columns."""
        if action in ("stop", "resume"):
            try:
                if self.query_one(f"#{action}", Button).disabled:
                    return False
            except NoMatches:
                return False
        return key_allowed(self, action)

    def export_target(self) -> Path | None:
        """The run `p` exports: the highlighted row on the Runs tab, else the run shown on the Run tab."""
        if self.query_one(TabbedContent).active == "tab-runs":
            table = self.query_one("#runs-table", DataTable)
            if table.row_count:
                return Path(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return self.run_path

    def action_export_run(self) -> None:
        from tui.screens.export import ExportDialog, read_export_run

        target = self.export_target()
        if target is None:
            self.notify("highlight a run on the Runs tab (l), or open one, then p")
            return
        try:
            run = read_export_run(target)
        except MlxftError as exc:
            self.app.show_error(exc)
            return
        self.app.push_screen(ExportDialog(run))

    def action_evaluate_run(self) -> None:
        """The shown run on the Evaluate screen: its adapter and base filled in, its last results shown."""
        if self.run_path is None:
            self.notify("open a run first (Runs tab)")
            return
        run = self.run_path
        self.app.switch_mode("evaluate")
        self.app.call_later(lambda: self.app.screen.use_run(run))

    # -- following a run ---------------------------------------------------------------------------
    def open_run(self, path: Path) -> None:
        """Show a run (ours, headless, finished or live): replay its metrics, then follow new lines."""
        self.run_path = Path(path)
        self.follower = MetricsFollower(RunDir(self.run_path).metrics_path)
        self.finished = None
        self.total_steps = 0
        chart = self.query_one(LineChart)
        chart.drop_series_except(("train loss", "val loss"))
        chart.clear()
        chart.x_max = None
        self._charted = ()
        self._lr, self._tps = [], []
        self._unit = "tok"  # what throughput counts, from RunStarted
        self._last_step = None
        for spark, label, text in (("#lr-spark", "#lr-label", "learning rate"), ("#tps-spark", "#tps-label", "tokens/s")):
            self.query_one(spark, Sparkline).data = []  # nothing of the run shown before stays on screen
            self.query_one(label, Label).update(text)
        self.query_one("#run-log", RichLog).clear()
        self.query_one("#run-title", Label).update(f"run: {self.run_path}")
        self.query_one("#run-stats", Label).update("waiting for the training process to load the model...")
        self.query_one("#progress", ProgressBar).update(total=planned_steps(self.run_path), progress=0)
        self.app.use_run(self.run_path, summarize_run(RunDir(self.run_path)).model or None)
        self._replaying = True
        try:
            self.poll_run()
        finally:
            self._replaying = False
        self.action_tab("tab-run")
        self._update_buttons()

    def poll_run(self) -> None:
        if self.follower is None:
            return
        for event in self.follower.poll_events():
            self.apply_event(event)
        self.show_latest_step()
        proc = self.app.train_processes.get(self.run_path)
        if proc is not None and not proc.running and id(proc) not in self._reported_exit:
            for event in self.follower.poll_events():  # the last lines written before it exited
                self.apply_event(event)
            self.show_latest_step()
            self._reported_exit.add(id(proc))
            code = proc.returncode
            if self.finished is None and code not in (0, 130):
                self.log_line(f"mlxft train exited with code {code}; its last output:")
                self.log_line(proc.log_tail(8))
                self.query_one("#run-stats", Label).update(f"failed: the training process exited with code {code} before its first step; its output is in the log below")
                self.app.show_error(f"training did not start or ended without a report (exit code {code})", hint="its output:\n" + proc.log_tail())
            self._update_buttons()
        self._update_nav()

    def apply_event(self, e) -> None:
        chart = self.query_one(LineChart)
        if isinstance(e, RunStarted):
            self.total_steps = e.total_steps
            self._unit = e.unit
            chart.x_max = e.total_steps
            self._charted = tuple(str(m) for m in e.charted)[: len(CHART_STYLES)]
            for name, style in zip(self._charted, CHART_STYLES):
                chart.ensure_series(name, style)  # the job's own metrics, e.g. DPO's reward margin and accuracy
            chart.truncate_after(e.resumed_from_step)  # steps after the checkpoint are trained again
            self.finished = None
            what = f"resumed at step {e.resumed_from_step}" if e.resumed_from_step else "started"
            self.log_line(f"{what}: {e.model} ({e.method}), {e.trainable_parameters:,} of {e.total_parameters:,} parameters trained, "
                          f"{e.train_samples} train / {e.valid_samples} valid samples, {e.compute_dtype} on {e.device}")
            self.query_one("#progress", ProgressBar).update(total=max(e.total_steps, 1), progress=e.resumed_from_step)
            self._update_buttons()
        elif isinstance(e, StepReport):
            chart.add_point("train loss", e.step, e.loss)
            for name in self._charted:
                if isinstance(e.metrics.get(name), (int, float)):
                    chart.add_point(name, e.step, e.metrics[name])
            self._lr.append(e.learning_rate)
            self._tps.append(e.tokens_per_second)
            self._last_step = e  # drawn once per batch of events (show_latest_step), not per line
        elif isinstance(e, EvalReport):
            chart.add_point("val loss", e.step, e.val_loss)
            best = " (best)" if e.is_best else f" (best {e.best_val_loss:.4f})"
            ppl = f", perplexity {e.val_perplexity:.2f}" if e.val_perplexity is not None else ""
            others = "".join(f", {k} {v:.4f}" for k, v in e.metrics.items() if k not in ("loss", "perplexity"))
            self.log_line(f"step {e.step}: val loss {e.val_loss:.4f}{ppl}{others}{best}")
        elif isinstance(e, CheckpointSaved):
            self.log_line(f"step {e.step}: checkpoint {Path(e.path).name}")
        elif isinstance(e, LogMessage):
            self.log_line(("warning: " if e.level == "warning" else "") + e.message)
        elif isinstance(e, RunFinished):
            self.finished = e
            best = f", best val loss {e.best_val_loss:.4f}" if e.best_val_loss is not None else ""
            self.log_line(f"{e.status} at step {e.step} in {format_duration(e.seconds)}{best}; adapter: {e.adapter_path}")
            if e.status == "stopped":
                self.log_line(f"resume: r here, or `mlxft train --resume {self.run_path}`")
            self._update_buttons()
        elif isinstance(e, RunFailed):
            self.finished = e
            self.log_line(f"failed at step {e.step}: {e.error}")
            self.query_one("#run-stats", Label).update(escape_controls(f"failed at step {e.step}: {e.error}"))
            if not self._replaying:
                self.app.show_error(f"training failed at step {e.step}: {e.error}", e.hint)
            self._update_buttons()

    def show_latest_step(self) -> None:
        """Stats, progress and sparklines for the newest step: once per poll, so replaying a long run stays linear."""
        e, self._last_step = self._last_step, None
        if e is None:
            return
        every = max(1, len(self._lr) // 1000)  # a sparkline shows a few hundred cells: keep the whole run's shape, thinned
        self.query_one("#lr-spark", Sparkline).data = self._lr[::every]
        self.query_one("#tps-spark", Sparkline).data = self._tps[::every]
        self.query_one("#lr-label", Label).update(f"lr {e.learning_rate:.1e}")
        unit = self._unit
        self.query_one("#tps-label", Label).update(f"{unit}/s {e.tokens_per_second:,.0f}")
        self.query_one("#progress", ProgressBar).update(total=max(e.total_steps, 1), progress=e.step)
        self.query_one("#run-stats", Label).update(
            f"step {e.step}/{e.total_steps} · loss {e.loss:.4f}{''.join(f' · {k} {v:.3f}' for k, v in e.metrics.items() if not self._charted or k in self._charted)} · ETA {format_duration(e.eta_s)} · {e.tokens_per_second:,.0f} {unit}/s · "
            f"peak {e.peak_memory_gb:.2f} GB · epoch {e.epoch:.2f} · elapsed {format_duration(e.elapsed_s)}")

    def log_line(self, text: str) -> None:
        # Log lines quote data rows and errors: their control characters are shown, never sent to the terminal.
        self.query_one("#run-log", RichLog).write(escape_controls(text, keep="\n"))  # markup is off in this log

    def _status(self) -> str:
        if self.run_path is None:
            return "none"
        proc = self.app.train_processes.get(self.run_path)
        if proc is not None and proc.running:
            return "running"
        return summarize_run(RunDir(self.run_path)).status if self.finished is None else getattr(self.finished, "status", "failed")

    def _update_buttons(self) -> None:
        status = self._status()
        self.query_one("#stop", Button).disabled = status not in ("running", "starting")
        can_resume = status in ("stopped", "failed", "interrupted") and self.run_path is not None and RunDir(self.run_path).latest_checkpoint() is not None
        self.query_one("#resume", Button).disabled = not can_resume
        self.refresh_bindings()

    def _update_nav(self) -> None:
        running = self.app.running_processes()
        text = ""
        if running:
            steps = self.query_one("#progress", ProgressBar)
            text = f"training {running[0].run_path.name}" + (f" · {int(steps.progress)}/{int(steps.total)}" if self.run_path == running[0].run_path and steps.total is not None else "")
        self.query_one(NavBar).set_status(text)

    # -- past runs ---------------------------------------------------------------------------------
    @on(TabbedContent.TabActivated, "#train-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-runs":
            self.refresh_runs()

    def refresh_runs(self) -> None:
        """The runs list, re-read every few seconds while it is on screen (each metrics.jsonl only when it changed)."""
        if self.query_one(TabbedContent).active != "tab-runs":
            return
        table = self.query_one("#runs-table", DataTable)
        keep = table.cursor_row
        table.clear()
        for r in list_runs(self.app.runs_dir, cache=self._summaries):
            loss = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
            best = f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "-"
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else "-"
            table.add_row(r.path.name, r.status, f"{r.step}/{r.total_steps}", loss, best, Path(r.model).name or "-", started, key=str(r.path))
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    @on(DataTable.RowSelected, "#runs-table")
    def _run_chosen(self, event: DataTable.RowSelected) -> None:
        self.open_run(Path(event.row_key.value))

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        actions = {"load": self.action_load_recipe, "save": self.action_save_recipe, "start": self.action_start,
                   "stop": self.action_stop, "resume": self.action_resume, "attach": self.attach_typed_path}
        if event.button.id in actions:
            actions[event.button.id]()

    @on(Input.Submitted, "#recipe-path")
    def _recipe_path_entered(self) -> None:
        self.action_load_recipe()

    @on(Input.Submitted, "#attach-path")
    def attach_typed_path(self) -> None:
        raw = self.query_one("#attach-path", Input).value.strip()
        path = Path(raw).expanduser()
        if not RunDir(path).recipe_path.is_file():
            self.app.show_error(f"{path} is not an mlxft run folder (no recipe.yaml)", hint="give the folder `mlxft train` printed, e.g. runs/my-run")
            return
        self.open_run(path)
