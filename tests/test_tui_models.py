"""The Models screen: catalogue and local models with memory and fit, filter, sort, detail pane, picking a model."""

import io

import pytest
from rich.console import Console
from test_cli_models import make_local_models
from textual.widgets import DataTable, Input, Label, Static

from mlxft.backend import GB
from mlxft.vision.catalogue import load_vision_catalogue, vision_fit
from tui.app import MlxftApp
from tui.screens.models import COLUMNS, VISION_COLUMNS
from tui.widgets.recipe_form import RecipeForm
from tui.widgets.dialogs import ErrorDialog

pytestmark = pytest.mark.anyio

COLUMN = {key: i for i, (key, _) in enumerate(COLUMNS)}
VCOLUMN = {key: i for i, (key, _) in enumerate(VISION_COLUMNS)}
BACKBONES = {e.key: e for e in load_vision_catalogue()}


@pytest.fixture
def models_env(tmp_path, monkeypatch):
    """Local models in tmp folders, and 16 GB to judge against: nothing depends on this machine's caches or memory."""
    for key, value in make_local_models(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLXFT_MEMORY_GB", "16")
    monkeypatch.setattr("mlxft.llm.memory.default_device_is_gpu", lambda: False)  # the CPU table, on a Mac too
    monkeypatch.chdir(tmp_path)  # ./models-local
    return tmp_path


def plain(renderable) -> str:
    console = Console(width=120, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def table_rows(app) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def names(app) -> list[str]:
    return [row[COLUMN["name"]][2:].removesuffix(" *") for row in table_rows(app)]


def detail(app) -> str:
    return plain(app.screen.query_one("#models-detail-text", Static).content)


async def opened(pilot):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_the_app_opens_on_models_at_both_sizes(models_env, size):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=size) as pilot:
        await opened(pilot)
        assert app.current_mode == "models"
        assert app.screen.has_class("-wide") == (size[0] >= 140)
        rows = table_rows(app)
        assert len(rows) > 30  # the catalogue and the local models
        header = str(app.screen.query_one("#models-header", Label).content)
        assert "16.0 GB (MLXFT_MEMORY_GB)" in header and "MLX CPU" in header and "none yet" in header
        assert names(app)[0] == "4bit-chat"  # sorted by name; the cursor stays where it was before the scan
        cursor = names(app)[app.screen.query_one(DataTable).cursor_row]
        assert cursor == "codellama-13b-instruct" and cursor in detail(app)
        assert not app.screen.query(ErrorDialog)


async def test_rows_show_memory_fit_and_local_models_with_their_problem(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot)
        rows = {name: row for name, row in zip(names(app), table_rows(app))}
        small = rows["smollm2-135m-instruct"]
        # GB are 10**9 bytes, as everywhere in mlxft (6.1 GB here read 5.7 when the screen counted 2**30).
        assert small[COLUMN["lora"]] == "6.5 GB" and small[COLUMN["qlora"]] == "6.1 GB" and small[COLUMN["fits"]] == "yes"
        assert rows["codellama-13b-instruct"][COLUMN["fits"]] == "no"
        # fits is the better of the two: LoRA is tight (13.1 of 16 GB), QLoRA fits.
        assert rows["gemma-3-270m-it"][COLUMN["lora"]] == "13.1 GB" and rows["gemma-3-270m-it"][COLUMN["fits"]] == "yes"
        assert rows["llama-3.2-1b-instruct"][COLUMN["fits"]] == "tight"
        assert rows["tiny-chat"][COLUMN["where"]] == "local" and rows["tiny-chat"][COLUMN["fits"]] == "yes"
        assert rows["Tiny.Q4_0-0123abcd"][COLUMN["where"]] == "gguf"
        assert rows["someone/tiny-mistral"][COLUMN["where"]] == "hf cache"
        assert rows["qwen3-0.6b"][COLUMN["disk"]] != "-"  # downloaded to the (tmp) Hub cache
        assert rows["bert-base"][COLUMN["fits"]] == "n/a" and "bert" in rows["bert-base"][COLUMN["note"]]
        assert rows["4bit-chat"][COLUMN["lora"]] == "-"


async def test_the_detail_pane_shows_ids_breakdown_and_the_command_line(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await opened(pilot)
        await pilot.press("slash", *"qwen3-0.6b", "enter")
        text = detail(app)
        for expected in ("Qwen/Qwen3-0.6B", "mlx-community/Qwen3-0.6B-4bit", "context 32,768", "apache-2.0", "batch 4 x 512",
                         "activations", "logits", "total", "QLoRA 4-bit", "mlxft train RECIPE.yaml model=qwen3-0.6b", "RECIPE.yaml: save one from Train"):
            assert expected in text, expected
        # Local problem rows say why, in the pane too.
        await pilot.press("slash", "ctrl+u", *"bert", "enter")
        assert names(app) == ["bert-base"]
        assert "model_type 'bert' is not a causal LM" in detail(app)


async def test_enter_picks_the_model_for_the_other_screens(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await opened(pilot)
        await pilot.press("slash", *"smollm2-135m", "enter", "enter")
        assert app.selected_model == "smollm2-135m-instruct"
        assert table_rows(app)[0][COLUMN["name"]].startswith("● smollm2-135m-instruct")
        assert "smollm2-135m-instruct" in str(app.screen.query_one("#models-header", Label).content)
        assert "● in use" in detail(app)
        # A local folder is picked by its path; the Use button does the same as enter.
        await pilot.press("slash", "ctrl+u", *"tiny-chat", "enter")
        await pilot.click("#models-use")
        assert app.selected_model == "models-local/tiny-chat"


async def test_a_model_that_cannot_be_trained_is_refused_with_the_reason(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await opened(pilot)
        await pilot.press("slash", *"no-weights", "enter", "u")
        await pilot.pause()
        assert isinstance(app.screen, ErrorDialog)
        assert "no model*.safetensors" in str(app.screen.query_one("#error-message", Label).content)
        assert app.selected_model is None


async def test_filter_by_family_and_typing_q_does_not_quit(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await opened(pilot)
        await pilot.press("slash", *"qwen3")
        assert app.is_running and app.screen.query_one("#models-filter", Input).value == "qwen3"
        assert names(app) and all("qwen3" in n for n in names(app))
        await pilot.press("ctrl+u", *"gemma2")
        assert names(app) == ["gemma-2-2b-it", "gemma-2-9b-it"]
        await pilot.press("ctrl+u", *"hf cache")
        assert names(app) == ["someone/tiny-mistral"]
        await pilot.press("ctrl+u", *"no such model")
        assert names(app) == [] and "No model matches" in detail(app)


async def test_sorting_by_key_and_by_clicking_a_header(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await opened(pilot)
        await pilot.press("s")  # name -> params
        params = [r for r in app.screen.visible() if r.parameters]
        assert [r.parameters for r in params] == sorted(r.parameters for r in params)
        await pilot.press("S")
        assert app.screen.sort_reversed and app.screen.visible()[0].parameters == max(r.parameters for r in params)
        assert "sort: params ↓" in str(app.screen.query_one("#models-sort", Label).content)
        table = app.screen.query_one(DataTable)
        x = sum(column.get_render_width(table) for column in table.ordered_columns[:COLUMN["qlora"]]) + 2
        await pilot.click(DataTable, offset=(x, 0))  # the QLoRA header
        await pilot.pause()
        totals = [r.fit.qlora.total for r in app.screen.visible() if r.fit]
        assert app.screen.sort_column == "qlora" and totals == sorted(totals)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_vision_tab_lists_every_backbone_with_its_phase_2_memory(models_env, size):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=size) as pilot:
        await opened(pilot)
        await pilot.press("k")
        assert app.screen.kind == "vision"
        assert names(app) == sorted(BACKBONES)
        assert "9 backbones · sort: backbone ↑".replace("9", str(len(BACKBONES))) in str(app.screen.query_one("#models-sort", Label).content)
        for row in table_rows(app):
            entry = BACKBONES[row[VCOLUMN["name"]].strip()]
            fit = vision_fit(entry, 16 * GB)
            assert row[VCOLUMN["last2"]] == f"{fit.unfreeze_2 / GB:.1f} GB" and row[VCOLUMN["all"]] == f"{fit.unfreeze_all / GB:.1f} GB"
            assert row[VCOLUMN["fits"]] == {"fits": "yes", "tight": "tight", "will-not-fit": "no"}[fit.unfreeze_2_verdict]
            assert row[VCOLUMN["where"]] in ("hub", "hf cache", "installed", "pip")
        # The name, both memories and the verdict fit on the screen.
        table = app.screen.query_one(DataTable)
        shown = sum(c.get_render_width(table) for c in table.ordered_columns[: VCOLUMN["fits"] + 1])
        assert shown <= table.size.width
        await pilot.press("slash", *"dinov2", "enter")
        assert names(app) == ["dinov2-small"]
        text = detail(app)
        for expected in ("facebook/dinov2-small", "apache-2.0", "none: features only", "768", "224 px crop", "bicubic",
                         "Memory of phase 2", "last 2 blocks", "all blocks", "MLX peak", "runtime",
                         "mlxft train RECIPE.yaml model=dinov2-small data.path=YOUR_IMAGES"):
            assert expected in text, expected
        # Back to the language models: their columns, their rows, the filter kept.
        await pilot.press("escape", "k")
        assert app.screen.kind == "llm" and table_rows(app) == [] and len(app.screen.query_one(DataTable).columns) == len(COLUMNS)
        assert not app.screen.query(ErrorDialog)


async def test_clicking_the_vision_tab_shows_the_backbones(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        await opened(pilot)
        await pilot.click("#kind-vision")
        await pilot.pause()
        assert app.screen.kind == "vision" and names(app) == sorted(BACKBONES)
        await pilot.click("#kind-llm")
        await pilot.pause()
        assert app.screen.kind == "llm" and "smollm2-135m-instruct" in names(app)


async def test_using_a_backbone_makes_trains_recipe_an_image_classifier(models_env):
    app = MlxftApp(runs_dir=models_env / "runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await opened(pilot)
        await pilot.press("k", "slash", *"resnet18", "enter", "enter")
        assert app.selected_backbone == "resnet18" and app.selected_model is None  # Evaluate and Chat keep their LM
        assert table_rows(app)[0][VCOLUMN["name"]].startswith("● resnet18") and "● in use" in detail(app)
        assert "resnet18" in str(app.screen.query_one("#models-header", Label).content)
        await pilot.press("3")  # Train, made now: it starts from the backbone
        await pilot.pause()
        form = app.screen.query_one(RecipeForm)
        assert form.get_field("kind") == "image-classify" and form.get_field("model") == "resnet18"
        # A language model picked afterwards turns the recipe back into an LM one, in the Train screen already made.
        await app.switch_mode("models")  # (a key would land in Train's focused recipe-path field)
        await pilot.pause()
        await pilot.press("k", "slash", "ctrl+u", *"smollm2-135m", "enter", "enter")
        assert app.selected_model == "smollm2-135m-instruct" and app.selected_backbone == "resnet18"
        assert form.get_field("kind") == "lm-lora" and form.get_field("model") == "smollm2-135m-instruct"
        await pilot.press("k", "slash", "ctrl+u", *"vit-small", "enter", "enter")
        assert form.get_field("kind") == "image-classify" and form.get_field("model") == "vit-small-patch16"


def test_models_screen_snapshot_80x24(models_env, snap_compare):
    async def settle(pilot):
        await opened(pilot)

    assert snap_compare(MlxftApp(runs_dir=models_env / "runs"), terminal_size=(80, 24), run_before=settle)


def test_models_screen_vision_snapshot_80x24(models_env, snap_compare):
    async def settle(pilot):
        await opened(pilot)
        await pilot.press("k")
        await pilot.pause()

    assert snap_compare(MlxftApp(runs_dir=models_env / "runs"), terminal_size=(80, 24), run_before=settle)
