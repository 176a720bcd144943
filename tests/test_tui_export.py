"""Export and push from the TUI, by keyboard at 80x24: `p` on the Train screen's run list opens the dialog, which offers
the formats the run's kind takes (with their options), runs the real `mlxft export` / `mlxft push` child process,
shows the folder, its files and the notes, shows failures in the error dialog with their hint, cancels a running
export without publishing anything, and never puts the Hub token on screen."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from textual.widgets import Button, Checkbox, Input, OptionList, Select

from tests.conftest import lm_recipe
from tui.app import MlxftApp
from tui.screens.export import ExportChoices, ExportDialog, ExportRun, export_args, push_args, read_export_run
from tui.widgets.dialogs import ErrorDialog

SIZE = (80, 24)
TOKEN = "hf_tuiFakeTokenThatMustNeverBeShown7"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXFT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained_run(tiny_llama, chat_data, tmp_path_factory) -> Path:
    """A 2-step lm-lora run of the tiny llama (its adapter saved)."""
    from mlxft.api import train

    run = train(lm_recipe(tiny_llama, chat_data, tmp_path_factory.mktemp("tui-export-runs"), name="tiny-lora",
                          train={"steps": 2, "eval_every": 2, "save_every": None}))
    assert run.ok, run.error
    return run.path


@pytest.fixture
def runs(trained_run, tmp_path) -> Path:
    """A runs folder holding a copy of the trained run, for one test to export into."""
    root = tmp_path / "runs"
    shutil.copytree(trained_run, root / trained_run.name, ignore=shutil.ignore_patterns("exports", ".lock"))
    return root


def image_run(runs: Path, name: str = "cnn") -> Path:
    """A run directory that reads as an image-classify run (never exported here: it has no model)."""
    run = runs / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("kind: image-classify\nmodel: resnet18\n")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "RunStarted", "run_dir": str(run), "model": "resnet18", "method": "image-classify (head 4 epochs)",
                                                   "total_steps": 10, "trainable_parameters": 1, "total_parameters": 2, "train_samples": 40,
                                                   "valid_samples": 12, "compute_dtype": "float32", "device": "cpu", "time": 1.0}) + "\n")
    return run


def text(widget) -> str:
    return str(widget.render())


def screen_text(app) -> str:
    """Everything the screens show: every widget's rendering, the fields' values, and the terminal picture."""
    parts = [app.export_screenshot()]
    for screen in app.screen_stack:
        for widget in screen.query("*"):
            parts.append(getattr(widget, "value", "") if isinstance(widget, Input) else "")
            try:
                parts.append(str(widget.render()))
            except Exception:  # containers render nothing of their own
                pass
    return "\n".join(str(p) for p in parts)


async def open_dialog(pilot) -> ExportDialog:
    """Train screen, Runs tab (l), `p` on the highlighted run."""
    await pilot.pause()
    await pilot.press("escape", "l")  # leave the recipe field, show the run list
    await pilot.pause()
    await pilot.press("p")
    await pilot.pause()
    dialog = pilot.app.screen
    assert isinstance(dialog, ExportDialog)
    return dialog


async def pick_format(pilot, dialog: ExportDialog, name: str) -> None:
    """Walk the format list down to `name` and choose it (enter puts the focus on Export)."""
    formats = dialog.query_one("#formats", OptionList)
    assert formats.has_focus
    while formats.get_option_at_index(formats.highlighted).id != name:
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause()
    assert dialog.spec.name == name and dialog.query_one("#export", Button).has_focus


async def wait_until(pilot, condition, timeout: float, what: str) -> None:
    """Poll the UI until `condition()` holds (a deadline for a hung child, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_p_exports_the_highlighted_run_as_peft_through_the_real_command(runs):
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        assert dialog.run.path == runs / "tiny-lora" and dialog.run.kind == "lm-lora"
        await pick_format(pilot, dialog, "peft")
        assert "Hugging Face PEFT" in text(dialog.query_one("#format-summary"))
        assert dialog.query_one("#out", Input).value == str(runs / "tiny-lora" / "exports" / "peft")  # the default, shown
        await pilot.press("enter")  # Export
        await pilot.pause()
        assert dialog.is_busy and "exporting peft" in text(dialog.query_one("#export-status"))
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not dialog.is_busy and not isinstance(app.screen, ErrorDialog)
        shown = text(dialog.query_one("#result-text"))
        folder = runs / "tiny-lora" / "exports" / "peft"
        assert f"$ mlxft export {runs / 'tiny-lora'} --format peft" in shown
        assert f"peft export: {folder}" in shown
        assert "adapter_model.safetensors" in shown and "adapter_config.json" in shown
        assert "note: LoRA r4, lora_alpha 8" in shown  # the engine's notes, for a person to read
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        assert dialog.result["files"] == ["adapter_config.json", "adapter_model.safetensors"]
        await pilot.press("escape")  # closes the dialog once nothing runs
        await pilot.pause()
        assert not isinstance(app.screen, ExportDialog)


async def test_a_run_is_offered_only_the_formats_its_kind_takes_with_their_options(runs):
    image_run(runs)
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # the image run (started at time 1.0) is the list's second row
        dialog = await open_dialog(pilot)
        formats = dialog.query_one("#formats", OptionList)
        assert [formats.get_option_at_index(i).id for i in range(formats.option_count)] == ["mlx", "fused", "peft", "gguf", "gguf-adapter"]
        # fused: dtype and quantize; gguf-adapter: dtype only with 'with base'; mlx: no options at all
        assert not dialog.query_one("#options-row").display
        await pick_format(pilot, dialog, "fused")
        assert dialog.query_one("#dtype").display and dialog.query_one("#quantize").display and not dialog.query_one("#with-base").display
        assert dialog.query_one("#dtype", Select).prompt == "the base's (default)"
        formats.focus()
        await pilot.pause()
        await pick_format(pilot, dialog, "gguf-adapter")
        assert dialog.query_one("#with-base").display and not dialog.query_one("#quantize").display
        assert dialog.query_one("#dtype", Select).disabled
        dialog.query_one("#with-base", Checkbox).value = True
        await pilot.pause()
        assert not dialog.query_one("#dtype", Select).disabled
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("down", "p")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ExportDialog) and dialog.run.kind == "image-classify"
        formats = dialog.query_one("#formats", OptionList)
        assert [formats.get_option_at_index(i).id for i in range(formats.option_count)] == ["mlx", "timm", "transformers"]
        assert not dialog.query_one("#base-row").display  # an image run has no base to name
        await pick_format(pilot, dialog, "timm")
        assert dialog.query_one("#dtype").display and not dialog.query_one("#quantize").display
        assert not (runs / "cnn" / "exports").exists()  # nothing is written until Export is pressed


async def test_dry_run_push_lists_the_staged_files_and_the_token_is_never_shown(runs, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        await pick_format(pilot, dialog, "peft")
        dialog.query_one("#repo", Input).value = "acme/tiny-peft"
        dialog.query_one("#repo", Input).focus()
        await pilot.press("enter")  # enter in the repo field: the dry run, never the upload
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, ErrorDialog), text(app.screen.query_one("#error-message"))
        shown = text(dialog.query_one("#result-text"))
        folder = runs / "tiny-lora" / "exports" / "hub-peft"
        assert "--dry-run" in shown and "dry run: Push would upload this folder to acme/tiny-peft" in shown
        for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", "loss_curve.png"):
            assert name in shown and (folder / name).is_file()
        assert dialog.result["dry_run"] is True and dialog.result["url"] is None
        assert TOKEN not in screen_text(app)
        # Push itself, where huggingface_hub is told to stay offline: the engine's error, before any upload, token unseen
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        dialog.query_one("#push", Button).press()
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "HF_HUB_OFFLINE is set" in text(app.screen.query_one("#error-message"))
        assert "--dry-run" in text(app.screen.query_one("#error-hint"))
        assert TOKEN not in screen_text(app)


async def test_push_without_a_token_says_hf_auth_login(runs, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token saved by `hf auth login` either
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        dialog.query_one("#repo", Input).value = "acme/tiny-lora"
        dialog.query_one("#push", Button).press()
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "no Hugging Face token" in text(app.screen.query_one("#error-message"))
        assert "hf auth login" in text(app.screen.query_one("#error-hint")) and "HF_TOKEN" in text(app.screen.query_one("#error-hint"))
        assert not (runs / "tiny-lora" / "exports").exists()  # refused before anything was staged


async def test_a_failing_export_shows_the_error_dialog_with_its_hint(runs, tmp_path):
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        await pick_format(pilot, dialog, "fused")
        dialog.query_one("#base", Input).value = str(tmp_path / "nowhere")
        await pilot.press("ctrl+g")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert f"--base {tmp_path / 'nowhere'}" in text(app.screen.query_one("#error-message"))
        assert "check the path" in text(app.screen.query_one("#error-hint"))
        await pilot.press("escape")  # the error closes; the dialog keeps what failed and why
        await pilot.pause()
        assert app.screen is dialog and "failed" in text(dialog.query_one("#export-status"))
        assert "hint: check the path" in text(dialog.query_one("#result-text"))
        assert not (runs / "tiny-lora" / "exports" / "fused").exists()


async def test_escape_cancels_a_running_export_and_nothing_is_published(runs):
    exports = runs / "tiny-lora" / "exports"
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_dialog(pilot)
        await pick_format(pilot, dialog, "fused")  # the slowest: fuses, then measures what survived
        await pilot.press("enter")
        # cancel once the engine is writing: its temp folder beside the export is there
        await wait_until(pilot, lambda: any(exports.glob(".fused.*")), 120, "the export to start writing")
        assert dialog.active_bindings["escape"].binding.action == "cancel"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not dialog.is_busy, 30, "the cancel")
        await pilot.pause()
        assert app.screen is dialog  # escape cancelled; it did not close the dialog
        if (exports / "fused").exists():  # on a loaded machine the command may publish before SIGINT reaches it: say so
            assert "finished before the cancel" in text(dialog.query_one("#result-text"))
            assert "complete" in text(dialog.query_one("#export-status"))
        else:
            assert "cancelled" in text(dialog.query_one("#export-status"))
            assert "nothing was published" in text(dialog.query_one("#result-text"))
            assert [p.name for p in exports.iterdir()] == []  # the half-written folder was removed by the command itself
        assert not any(exports.glob(".fused.*")), "no temp folder is left"
        assert dialog.active_bindings["escape"].binding.action == "close"


async def test_the_train_footer_shows_export_and_keeps_help_and_quit_at_80_columns(runs):
    app = MlxftApp(runs_dir=runs, start="train")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("escape", "l")
        await pilot.pause()
        keys = {k: b.binding.description for k, b in app.screen.active_bindings.items() if b.binding.show}
        assert keys.get("p") == "Export" and "question_mark" in keys and "q" in keys
        assert "x" not in keys and "r" not in keys  # Stop and Resume do not apply to a completed run
        footer = app.export_screenshot()
        assert "Export" in footer and "Help" in footer and "Quit" in footer
        await pilot.press("question_mark")
        await pilot.pause()
        assert "exports or pushes the highlighted run" in screen_text(app)


def test_the_commands_carry_only_the_options_each_format_reads():
    from mlxft.export import all_formats

    lm, image = ExportRun(Path("runs/a"), "lm-lora", "base"), ExportRun(Path("runs/b"), "image-classify", "resnet18")
    F = all_formats()
    every = ExportChoices(format="x", dtype="float16", quantize=4, base="acme/base", with_base=False)
    assert export_args(lm, F["mlx"], every) == ["export", "runs/a", "--format", "mlx", "--json"]
    assert export_args(lm, F["fused"], every) == ["export", "runs/a", "--format", "fused", "--dtype", "float16", "--quantize", "4", "--base", "acme/base", "--json"]
    assert export_args(lm, F["peft"], every) == ["export", "runs/a", "--format", "peft", "--dtype", "float16", "--base", "acme/base", "--json"]
    assert "--dtype" not in export_args(lm, F["gguf-adapter"], ExportChoices(format="gguf-adapter", dtype="q8_0"))
    assert export_args(lm, F["gguf-adapter"], ExportChoices(format="gguf-adapter", dtype="q8_0", with_base=True, out="/tmp/o"))[4:] == \
        ["--out", "/tmp/o", "--dtype", "q8_0", "--with-base", "--json"]
    assert export_args(image, F["timm"], every) == ["export", "runs/b", "--format", "timm", "--dtype", "float16", "--json"]
    # a push names the base in the model card whatever the format, and never for an image run
    assert push_args(lm, F["mlx"], every, "acme/x", private=True, dry_run=True) == \
        ["push", "runs/a", "--repo", "acme/x", "--format", "mlx", "--private", "--dry-run", "--base", "acme/base", "--json"]
    assert "--base" not in push_args(image, F["mlx"], every, "acme/x", private=False, dry_run=False)


def test_the_options_the_table_declares_are_the_ones_each_writer_takes():
    """The dialog offers what formats.py declares: held equal to what the writers themselves accept."""
    from mlxft.export import all_formats, fused, gguf_write, peft, vision_folder

    F = all_formats()
    assert set(F["fused"].dtypes) == set(fused.DTYPES) and F["fused"].quantize == (4, 8)
    assert set(F["peft"].dtypes) == set(peft.DTYPES)
    assert set(F["timm"].dtypes) == set(F["transformers"].dtypes) == set(vision_folder.DTYPES)
    assert set(F["gguf"].dtypes) == set(F["gguf-adapter"].dtypes) == set(gguf_write.TENSOR_TYPES)
    assert not F["mlx"].dtypes and not F["mlx"].base and not F["mlx"].quantize
    assert [f.name for f in F.values() if f.with_base] == ["gguf-adapter"]


def test_a_folder_that_is_not_a_run_or_a_kind_without_formats_is_a_clear_error(tmp_path):
    from mlxft.errors import RunError

    with pytest.raises(RunError, match="not an mlxft run directory"):
        read_export_run(tmp_path)
    (tmp_path / "recipe.yaml").write_text("kind: nonsense\n")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RunError, match="kind 'nonsense' is not a kind of run that exports"):
        read_export_run(tmp_path)


def test_export_dialog_snapshot(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths keep the picture free of temp folder names
    image_run(Path("runs"))

    async def open_it(pilot):
        await pilot.pause()
        await pilot.press("escape", "l")
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir="runs", start="train"), terminal_size=SIZE, run_before=open_it)


def test_the_result_puts_warnings_first_then_notes_then_the_files_with_their_sizes(tmp_path):
    from tui.screens.export import result_text

    (tmp_path / "model.safetensors").write_bytes(b"x" * 2500)
    data = {"folder": str(tmp_path), "format": "fused", "files": ["model.safetensors", "gone.json"],
            "notes": ["fidelity: KL 0.2 nats", "WARNING: the fine-tune is mostly lost in this export: KL 0.2 is 90% of the fine-tune's",
                      "note \x1b[2Jwith a terminal escape", "note: this export loses 19% of the fine-tune's effect"]}
    lines = result_text("export", data).plain.splitlines()
    assert lines[0] == f"fused export: {tmp_path}"
    assert lines[1].startswith("WARNING: the fine-tune is mostly lost") and lines[2] == "note: fidelity: KL 0.2 nats"
    assert lines[3] == "note: note \\x1b[2Jwith a terminal escape"  # shown, never sent to the terminal
    assert lines[4] == "note: this export loses 19% of the fine-tune's effect"  # not "note: note: ..."
    assert lines[5] == "2 file(s):" and lines[6].split() == ["model.safetensors", "2.5", "kB"] and lines[7].split() == ["gone.json", "?"]
