"""The export seam (`mlxft export RUN --format F`): formats by kind, where an export goes, what it never writes
over, atomic publication, and the `mlx` format (the run's result as saved, standing on its own)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import lm_recipe
from mlxft.api import train
from mlxft.errors import MlxftError, RunError
from mlxft.export import EXPORT_STAMP, ExportFormat, export_run, formats_for

MLXFT = [sys.executable, "-m", "mlxft"]


@pytest.fixture(scope="module")
def lora_run(tiny_llama, chat_data, tmp_path_factory):
    run = train(lm_recipe(tiny_llama, chat_data, tmp_path_factory.mktemp("export-runs"), train={"steps": 3, "eval_every": None, "save_every": None}))
    assert run.ok, run.error
    return run.path


def test_the_mlx_export_is_the_adapter_as_saved_plus_the_runs_readme_and_recipe(lora_run):
    result = export_run(lora_run, "mlx")
    assert result.folder == lora_run / "exports" / "mlx"
    assert {"adapters.safetensors", "adapter_config.json", "recipe.yaml"} <= set(result.files)
    assert (result.folder / "adapters.safetensors").read_bytes() == (lora_run / "adapter" / "adapters.safetensors").read_bytes()
    stamp = json.loads((result.folder / EXPORT_STAMP).read_text())
    assert stamp["format"] == "mlx" and stamp["kind"] == "lm-lora" and EXPORT_STAMP not in result.files
    # The export loads as an adapter on its own (mlx-lm's format).
    from mlxft.llm.adapters import load_adapter
    from mlxft.llm.loading import load_model

    cfg = load_adapter(load_model(json.loads((lora_run / "model.json").read_text())["model_path"]).model, result.folder)
    assert cfg["fine_tune_type"] == "lora"


def test_an_earlier_export_is_replaced_and_nothing_else_is_written_over(lora_run, tmp_path):
    first = export_run(lora_run, "mlx", out=tmp_path / "out")
    (first.folder / "stale.txt").write_text("from the first export")
    second = export_run(lora_run, "mlx", out=tmp_path / "out")
    assert not (second.folder / "stale.txt").exists()  # replaced as a whole, atomically
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(MlxftError, match="not an mlxft export; nothing is written over it"):
        export_run(lora_run, "mlx", out=mine)
    assert (mine / "notes.txt").read_text() == "the user's"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MlxftError, match="is a file"):
        export_run(lora_run, "mlx", out=tmp_path / "file")
    with pytest.raises(MlxftError, match="that is the run directory"):
        export_run(lora_run, "mlx", out=lora_run)
    with pytest.raises(MlxftError, match="inside the run directory but not under exports/"):
        export_run(lora_run, "mlx", out=lora_run / "adapter")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_run(lora_run, "mlx", out=empty).folder == empty  # an empty folder holds nothing to lose


def test_a_failing_writer_leaves_no_folder_and_no_temp_behind(lora_run, tmp_path, monkeypatch):
    import mlxft.export.formats as formats

    monkeypatch.setitem(formats.FORMATS, "broken", ExportFormat("broken", ("lm-lora",), "fails half way", "tests.broken_export_writer"))
    module = type(sys)("tests.broken_export_writer")
    monkeypatch.setitem(sys.modules, "tests.broken_export_writer", module)

    def write(run, recipe, folder, options):
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise OSError(28, "No space left on device", str(folder / "half.bin"))

    module.write = write
    with pytest.raises(MlxftError, match="No space left|no space"):
        export_run(lora_run, "broken", out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_unknown_formats_and_kinds_a_format_cannot_take_say_what_the_run_exports_as(lora_run, tmp_path):
    with pytest.raises(MlxftError, match="unknown export format 'onnx'") as err:
        export_run(lora_run, "onnx")
    assert "mlx" in err.value.hint
    assert "mlx" in [f.name for f in formats_for("lm-lora")] and "mlx" in [f.name for f in formats_for("image-classify")]
    with pytest.raises(RunError, match="not an mlxft run directory"):
        export_run(tmp_path, "mlx")


def test_the_command_prints_the_folder_and_files_and_json_for_programs(lora_run, tmp_path):
    out = subprocess.run(MLXFT + ["export", str(lora_run), "--format", "mlx", "--out", str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"mlx export: {tmp_path / 'e'}" and "  adapters.safetensors" in out.stdout
    out = subprocess.run(MLXFT + ["export", str(lora_run), "--format", "mlx", "--out", str(tmp_path / "e"), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout)["folder"] == str(tmp_path / "e")
    out = subprocess.run(MLXFT + ["export", str(lora_run), "--format", "nope"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "unknown export format 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_mlxft_train_stays_callable_after_its_subpackage_is_imported(tiny_llama, chat_data, tmp_path):
    import mlxft
    import mlxft.train.process  # noqa: F401  (sets the attribute mlxft.train to the subpackage)

    run = mlxft.train(lm_recipe(tiny_llama, chat_data, tmp_path, train={"steps": 1, "eval_every": None, "save_every": None}))
    assert run.ok, run.error
