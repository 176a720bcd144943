"""The Train screen: recipe form, scripted runs driving the chart, the runs list, and a real start/stop/resume."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlxft.events import CheckpointSaved, EvalReport, LogMessage, RunFinished, RunStarted, StepReport, event_to_dict
from mlxft.recipe import load_recipe, recipe_from_dict
from tests.conftest import lm_recipe
from tui.app import MlxftApp
from tui.widgets.chart import LineChart
from tui.widgets.recipe_form import RecipeForm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The app writes the recipe it starts and the run's console log under MLXFT_CACHE/tui: keep tests out of ~/.cache."""
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))


def write_run(root: Path, name: str, events: list, recipe: dict | None = None) -> Path:
    """A run directory as `mlxft train` leaves it: recipe.yaml and metrics.jsonl."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    recipe = recipe or {"kind": "lm-lora", "model": "smollm2-135m-instruct", "data": {"path": "data"}, "train": {"steps": 40}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    append_events(run, events)
    return run


def append_events(run: Path, events: list) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        for e in events:
            f.write(json.dumps(event_to_dict(e)) + "\n")


def started(run: Path, total: int = 40, resumed: int = 0, pid: int | None = None) -> RunStarted:
    return RunStarted(run_dir=str(run), model="smollm2-135m-instruct", method="lora", total_steps=total, trainable_parameters=1000,
                      total_parameters=100000, train_samples=64, valid_samples=8, compute_dtype="float32", device="cpu",
                      resumed_from_step=resumed, pid=os.getpid() if pid is None else pid)


def step(n: int, loss: float, total: int = 40) -> StepReport:
    return StepReport(step=n, total_steps=total, epoch=n / 10, loss=loss, learning_rate=1e-4 * (1 - n / total), tokens=512,
                      tokens_per_second=100.0 + n, peak_memory_gb=1.5, elapsed_s=n * 2.0, eta_s=(total - n) * 2.0)


async def memory_planned(app, pilot) -> None:
    """Wait for the memory line's data measurement (a form change cancels the one before it)."""
    from textual.worker import WorkerCancelled

    for worker in list(app.workers):
        try:
            await worker.wait()
        except WorkerCancelled:
            pass
    await pilot.pause()


def screen_text(widget) -> str:
    return str(widget.render())


async def test_form_shows_each_problem_next_to_its_field(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        form = screen.query_one(RecipeForm)
        form.set_field("model", "smollm2-135m-instruct")
        form.set_field("data.path", str(tmp_path / "missing"))
        form.set_field("train.batch_size", "0")
        form.set_field("train.learning_rate", "fast")
        await pilot.pause()
        assert screen.check_recipe() is None
        errors = {row.spec.key: screen_text(row.query_one(".field-error")) for row in form.query("FieldRow") if row.has_class("-invalid")}
        assert set(errors) == {"data.path", "train.batch_size", "train.learning_rate"}
        assert "greater than 0" in errors["train.batch_size"]
        assert "no such file or folder" in errors["data.path"]
        assert "3 problem(s)" in screen_text(screen.query_one("#memory-line"))
        # fixing them clears the marks, and the memory plan appears for a catalogue model
        (tmp_path / "missing").mkdir()
        form.set_field("train.batch_size", "4")
        form.set_field("train.learning_rate", "1e-4")
        await pilot.pause()
        assert screen.check_recipe() is not None
        assert not [row for row in form.query("FieldRow") if row.has_class("-invalid")]
        await memory_planned(app, pilot)
        assert "GB peak" in screen_text(screen.query_one("#memory-line"))


async def test_memory_line_plans_from_the_data_with_the_numbers_mlxft_plan_prints(tmp_path, tiny_llama, chat_data, monkeypatch):
    monkeypatch.setenv("MLXFT_MEMORY_GB", "16")
    raw = lm_recipe(tiny_llama, chat_data, tmp_path / "runs")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    cli = subprocess.run([sys.executable, "-m", "mlxft.cli", "plan", str(tmp_path / "r.yaml")], capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    basis = lines[2].strip()
    total, against = re.fullmatch(r"\s*total\s+([\d.]+ GB)\s+(of .*)", next(line for line in lines if line.strip().startswith("total "))).groups()
    assert basis.startswith("planned from the data: batch 4 x ") and against == "of 16.00 GB available (" + against.split("(")[1]
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        screen.query_one(RecipeForm).set_values(raw)
        await pilot.pause()
        assert screen.check_recipe() is not None
        await memory_planned(app, pilot)
        line = screen_text(screen.query_one("#memory-line"))
        assert f"~{total} peak {against}" in line and basis in line, (line, cli.stdout)


def fill(form: RecipeForm, fields: dict) -> None:
    for key, value in fields.items():
        form.set_field(key, value)


def checked_recipe(screen, form: RecipeForm):
    recipe = screen.check_recipe()
    assert recipe is not None, [screen_text(r.query_one(".field-error")) for r in form.query("FieldRow") if r.has_class("-invalid")]
    return recipe


async def test_the_form_makes_an_image_classifier_recipe_from_its_own_fields(tmp_path):
    images = tmp_path / "images" / "train" / "cat"
    images.mkdir(parents=True)
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        form = screen.query_one(RecipeForm)
        fill(form, {"kind": "image-classify", "model": "efficientnet-lite0", "data.path": str(tmp_path / "images"), "vision.image_size": "128",
                    "vision.sampler": "balanced"})
        await pilot.pause()
        recipe = checked_recipe(screen, form)
        assert recipe.kind == "image-classify" and recipe.vision.image_size == 128 and recipe.vision.sampler == "balanced"
        values = form.values()
        assert "lora" not in values and "preference" not in values and values["vision"]["image_size"] == 128
        line = screen_text(screen.query_one("#memory-line"))  # the catalogue's measured peak, at 224 px: this recipe differs
        assert "phase 2 of efficientnet-lite0 at batch 16 x 224 px" in line and "differs" in line
        form.set_field("kind", "lm-lora")  # the vision section is not written into an LM recipe
        await pilot.pause()
        assert "vision" not in form.values()


async def test_the_form_makes_a_text_classifier_recipe_from_its_own_fields(tmp_path):
    data = tmp_path / "reviews"
    data.mkdir()
    (data / "train.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        form = screen.query_one(RecipeForm)
        fill(form, {"kind": "lm-classify", "model": "smollm2-135m-instruct", "data.path": str(data), "classify.head": "verbalizer",
                    "classify.prompt_template": "Review: {text}\\nSentiment:",  # typed as one line, the line break as \n
                    "classify.verbalizer": "{0: ' negative', 1: ' positive'}"})
        await pilot.pause()
        recipe = checked_recipe(screen, form)
        assert recipe.kind == "lm-classify" and recipe.classify.head == "verbalizer" and recipe.method == "lora"
        assert recipe.classify.prompt_template == "Review: {text}\nSentiment:" and recipe.classify.verbalizer == {"0": " negative", "1": " positive"}
        values = form.values()
        assert "vision" not in values and "preference" not in values and values["classify"]["head"] == "verbalizer"
        form.set_values(values)  # shown again as it was typed
        assert form.query_one("#f-classify-prompt-template").value == "Review: {text}\\nSentiment:"
        form.set_field("classify.prompt_template", "{nothing")
        await pilot.pause()
        assert screen.check_recipe() is None and "not a valid template" in screen_text(form.query_one("#row-f-classify-prompt-template .field-error"))
        form.set_field("kind", "lm-lora")  # the classify section is not written into an SFT recipe
        await pilot.pause()
        assert "classify" not in form.values()


async def test_every_recipe_in_the_repo_round_trips_through_the_form(tmp_path):
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        form = app.screen.query_one(RecipeForm)
        for path in sorted((REPO / "recipes").glob("*.yaml")):
            raw = yaml.safe_load(path.read_text())
            form.set_values(raw)
            await pilot.pause()
            expected = recipe_from_dict(raw).model_dump()
            assert recipe_from_dict(form.values()).model_dump() == expected, path.name


async def test_load_and_save_recipe_never_overwrites_without_asking(tmp_path, chat_data):
    target = tmp_path / "mine.yaml"
    target.write_text("# my notes\nkind: lm-lora\n")
    app = MlxftApp(runs_dir=tmp_path / "runs", start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        form = screen.query_one(RecipeForm)
        form.set_field("model", "smollm2-135m-instruct")
        form.set_field("data.path", str(chat_data))
        form.set_field("train.steps", "25")
        screen.query_one("#recipe-path").value = str(target)
        await pilot.pause()
        screen.action_save_recipe()
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmDialog"
        await pilot.press("n")
        await pilot.pause()
        assert target.read_text() == "# my notes\nkind: lm-lora\n"  # untouched
        screen.action_save_recipe()
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        saved = load_recipe(target)
        assert saved.train.steps == 25 and saved.model == "smollm2-135m-instruct"
        # loading it into a cleared form brings the values back
        form.set_values({})
        await pilot.pause()
        screen.action_load_recipe()
        await pilot.pause()
        assert form.values()["train"]["steps"] == 25


async def test_scripted_run_events_drive_chart_progress_and_log(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "scripted", [started(runs / "scripted")] + [step(n, 3.0 - n * 0.1) for n in range(1, 6)])
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        await pilot.pause()
        screen.open_run(run)
        await pilot.pause()
        chart = screen.query_one(LineChart)
        assert chart.point_count("train loss") == 5 and chart.point_count("val loss") == 0
        assert chart.x_max == 40
        assert "step 5/40" in screen_text(screen.query_one("#run-stats"))
        assert screen.query_one("#progress").progress == 5
        assert not screen.query_one("#stop").disabled  # its process (this test) is alive: it can be stopped

        append_events(run, [step(6, 2.4), EvalReport(step=6, val_loss=2.5, val_perplexity=12.2, best_val_loss=2.5, is_best=True, tokens=100, seconds=0.5),
                            CheckpointSaved(step=6, path=str(run / "checkpoints" / "step-000006")), LogMessage(level="warning", message="disk is slow")])
        screen.poll_run()
        await pilot.pause()
        assert chart.point_count("train loss") == 6 and chart.point_count("val loss") == 1
        log = "\n".join(str(line.text) for line in screen.query_one("#run-log").lines)
        assert "val loss 2.5000" in log and "checkpoint step-000006" in log and "warning: disk is slow" in log
        rendered = screen_text(chart)
        assert "train loss 2.4000" in rendered and "val loss 2.5000" in rendered
        assert any(0x2800 < ord(ch) <= 0x28FF for ch in rendered)  # braille dots were drawn

        # a resume after a crash at step 6 from the checkpoint at step 4 drops the repeated steps
        append_events(run, [started(run, resumed=4), step(5, 2.6)])
        screen.poll_run()
        assert [x for x, _ in chart.series["train loss"].points] == [1, 2, 3, 4, 5]

        append_events(run, [RunFinished(step=40, status="completed", adapter_path=str(run / "adapter"), best_val_loss=2.5, final_train_loss=2.0, seconds=80.0)])
        screen.poll_run()
        await pilot.pause()
        assert screen.query_one("#stop").disabled
        assert "completed at step 40" in "\n".join(str(line.text) for line in screen.query_one("#run-log").lines)


async def test_a_jobs_charted_metrics_get_lines_and_the_stats_line_shows_them_alone(tmp_path):
    runs = tmp_path / "runs"
    dpo = {"kind": "lm-dpo", "model": "smollm2-135m-instruct", "data": {"path": "data"}, "train": {"steps": 40}}
    from dataclasses import replace

    first = replace(started(runs / "dpo"), unit="pair", charted=["rewards/margins", "rewards/accuracies"])
    metrics = [{"rewards/margins": 0.1 * n, "rewards/accuracies": 0.5 + 0.05 * n, "logps/chosen": -50.0 + n, "logps/rejected": -52.0} for n in range(1, 5)]
    steps = [replace(step(n, 0.69 - 0.05 * n), metrics=m) for n, m in zip(range(1, 5), metrics)]
    run = write_run(runs, "dpo", [first, *steps], recipe=dpo)
    sft = write_run(runs, "sft", [started(runs / "sft"), step(1, 3.0)])
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        screen.open_run(run)
        await pilot.pause()
        chart = screen.query_one(LineChart)
        assert chart.point_count("rewards/margins") == 4 and chart.point_count("rewards/accuracies") == 4
        assert chart.series["rewards/margins"].points[-1] == (4.0, pytest.approx(0.4))
        stats = screen_text(screen.query_one("#run-stats"))
        assert "rewards/margins 0.400" in stats and "pair/s" in stats and "logps/chosen" not in stats
        screen.open_run(sft)  # another job: the DPO lines go
        await pilot.pause()
        assert set(chart.series) == {"train loss", "val loss"}


async def test_runs_list_shows_headless_runs_with_their_status(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "done", [started(runs / "done"), step(40, 1.25), RunFinished(step=40, status="completed", adapter_path="a", best_val_loss=1.5, final_train_loss=1.25, seconds=9)])
    write_run(runs, "crashed", [started(runs / "crashed", pid=2**22 + 12345), step(7, 2.0)])  # its process is gone
    write_run(runs, "live", [started(runs / "live"), step(3, 2.2)])
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(120, 32)) as pilot:
        screen = app.screen
        screen.set_focus(None)
        await pilot.press("l")  # the Runs tab
        await pilot.pause()
        table = screen.query_one("#runs-table")
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
        assert rows["done"][1] == "completed" and rows["done"][2] == "40/40" and rows["done"][4] == "1.5000"
        assert rows["crashed"][1] == "interrupted"
        assert rows["live"][1] == "running"
        # enter on a row opens it in the Run tab
        table.focus()
        table.move_cursor(row=[table.get_row_at(i)[0] for i in range(table.row_count)].index("done"))
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#train-tabs").active == "tab-run"
        assert screen.run_path == runs / "done"
        assert screen.query_one(LineChart).point_count("train loss") == 1


async def wait_until(pilot, condition, timeout: float, what: str) -> None:
    """Poll the UI until `condition()` holds (a deadline for a hung run, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.25)


@pytest.mark.parametrize("ranks", ["1", "default"])
async def test_train_screen_starts_stops_and_resumes_a_real_run(tmp_path, tiny_llama, chat_data, monkeypatch, ranks):
    if ranks == "default":
        monkeypatch.delenv("MLXFT_RANKS")  # what a user's app runs: `mlxft train` without --ranks, 2 ranks on a 2-core CPU
    runs = tmp_path / "runs"
    recipe = lm_recipe(tiny_llama, chat_data, runs, name="e2e", train={"steps": 400, "eval_every": 50, "save_every": 1000})
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        form = screen.query_one(RecipeForm)
        form.set_values(recipe)
        await pilot.pause()
        await pilot.press("ctrl+g")
        await pilot.pause()
        run = runs / "e2e"
        assert screen.run_path == run and screen.query_one("#train-tabs").active == "tab-run"
        chart = screen.query_one(LineChart)
        await wait_until(pilot, lambda: chart.point_count("train loss") >= 3, 180, "the chart to receive steps")

        await pilot.press("x")  # stop: the run saves a checkpoint and ends as 'stopped'
        proc = app.train_processes[run]
        await wait_until(pilot, lambda: not proc.running, 120, "the run to stop")
        assert proc.returncode == 130
        screen.poll_run()
        await pilot.pause()
        assert screen.finished is not None and screen.finished.status == "stopped"
        stopped_at = screen.finished.step
        assert 3 <= stopped_at < 400
        assert not screen.query_one("#resume").disabled

        await pilot.press("r")  # resume from the checkpoint the stop wrote
        resumed = app.train_processes[run]
        assert resumed is not proc and resumed.running
        await wait_until(pilot, lambda: chart.series["train loss"].points[-1][0] > stopped_at, 180, "steps after the resume")
        log = "\n".join(str(line.text) for line in screen.query_one("#run-log").lines)
        assert f"resumed at step {stopped_at}" in log
        # quitting while it trains asks; 'stop' saves a checkpoint and ends it
        await pilot.press("q")
        await pilot.pause()
        assert type(app.screen).__name__ == "QuitDialog"
        await pilot.press("s")
        await pilot.pause()
    await asyncio.get_running_loop().run_in_executor(None, resumed.popen.wait, 120)
    assert resumed.returncode == 130
    assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    parallel = [json.loads(line)["message"] for line in (run / "metrics.jsonl").read_text().splitlines() if "data-parallel over" in line]
    from mlxft.train.process import auto_ranks

    expected = 1 if ranks == "1" else auto_ranks(recipe_from_dict(recipe))[0]
    assert len(parallel) == (2 if expected > 1 else 0)  # the start and the resume each ran on the default's ranks
    assert all(f"data-parallel over {expected} ranks" in m for m in parallel)


def test_run_tab_snapshot(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths keep the picture free of temp folder names
    runs = Path("runs")
    events = [started(runs / "scripted")] + [step(n, 3.0 * 0.93 ** n + 0.05 * (n % 3)) for n in range(1, 25)]
    events += [EvalReport(step=n, val_loss=3.1 * 0.95 ** n, val_perplexity=10.0, best_val_loss=3.1 * 0.95 ** n, is_best=True, tokens=100, seconds=0.5) for n in (0, 8, 16, 24)]
    events.sort(key=lambda e: getattr(e, "step", 0))
    run = write_run(runs, "scripted", events)

    async def open_it(pilot):
        await pilot.pause()
        pilot.app.screen.open_run(run)
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir=runs, start="train"), terminal_size=(100, 32), run_before=open_it)


async def test_o_takes_the_shown_run_to_evaluate(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "done", [started(runs / "done"), step(40, 1.25), RunFinished(step=40, status="completed", adapter_path="a", best_val_loss=1.5, final_train_loss=1.25, seconds=9)])
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        app.screen.open_run(run)
        await pilot.pause()
        await pilot.press("o")
        await pilot.pause()
        assert app.current_mode == "evaluate"
        assert app.screen.query_one("#eval-adapter").value == str(run)
        assert app.screen.query_one("#eval-model").value == "smollm2-135m-instruct"


async def test_quit_while_training_asks_and_leave_keeps_the_process(tmp_path):
    import subprocess

    from tui.runner import TrainProcess

    stand_in = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a training process as far as the app can tell
    try:
        app = MlxftApp(runs_dir=tmp_path / "runs", start="models")
        async with app.run_test(size=(100, 32)) as pilot:
            app.train_processes[tmp_path / "runs" / "x"] = TrainProcess(stand_in, tmp_path / "runs" / "x", tmp_path / "log")
            await pilot.press("q")
            await pilot.pause()
            assert type(app.screen).__name__ == "QuitDialog"
            await pilot.press("escape")  # cancel: back to the app
            await pilot.pause()
            assert type(app.screen).__name__ != "QuitDialog" and app.is_running
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("l")  # leave it running
            await pilot.pause()
        assert stand_in.poll() is None  # the app is gone, the training is not
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_vision_backbone_in_an_lm_recipe_says_which_kind_it_needs():
    from tui.screens.train import memory_line

    recipe = recipe_from_dict({"kind": "lm-lora", "model": "resnet50", "data": {"path": "data"}}, source="test")
    assert memory_line(recipe) == "memory: resnet50 is a vision backbone: set kind to image-classify, or pick a language model"
