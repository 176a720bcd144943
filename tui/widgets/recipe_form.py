"""A form generated from the Recipe schema: every field with its default and help, errors next to the field.

The schema is the single source of truth: a field added to `mlxft.recipe` appears here without UI code.
Text fields are read as YAML (like `key=value` overrides), so `1e-4`, `null` and `[q_proj, v_proj]` work.
The form shows the sections the chosen kind reads (`sections_for_kind`); a section is built the first time it is shown,
and values given to it before then are kept and put into its fields when it is built.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic_core import PydanticUndefined
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from mlxft.errors import RecipeError
from mlxft.recipe import (CLASSIFY_KINDS, PREFERENCE_KINDS, VISION_KINDS, ClassifySection, DataSection, LoraSection, PreferenceSection, QuantizeSection,
                          Recipe, TrainSection, VisionSection, recipe_from_dict)

SECTIONS = (("", Recipe), ("data", DataSection), ("lora", LoraSection), ("quantize", QuantizeSection), ("preference", PreferenceSection),
            ("classify", ClassifySection), ("vision", VisionSection), ("train", TrainSection))
SECTION_TITLES = {"": "Job", "data": "Data", "lora": "Adapter (LoRA / DoRA)", "quantize": "Quantized base (QLoRA only)",
                  "preference": "Preference tuning (lm-dpo / lm-orpo only)", "classify": "Text classification (lm-classify only)",
                  "vision": "Image classification (image-classify only)", "train": "Training"}


# One-line inputs: a newline in these fields is typed and shown as \n (a prompt template's line break).
ESCAPED_FIELDS = {"classify.prompt_template"}


@dataclass
class FieldSpec:
    key: str  # dotted, as in overrides: "train.steps"
    widget: str  # select | switch | text
    options: tuple = ()
    default: Any = None
    required: bool = False
    raw_string: bool = False  # str fields keep what was typed ("123" stays a name, not a number)
    help: str = ""

    @property
    def dom_id(self) -> str:
        return "f-" + self.key.replace(".", "-").replace("_", "-")


def _literal_options(annotation) -> tuple | None:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def _is_plain_str(annotation) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) == {str, type(None)}
    return False


def field_specs() -> list[FieldSpec]:
    specs = []
    for section, model in SECTIONS:
        for name, info in model.model_fields.items():
            if section == "" and name in ("data", "lora", "quantize", "preference", "classify", "vision", "train"):
                continue
            required = info.default is PydanticUndefined and info.default_factory is None
            default = None if required else (info.default_factory() if info.default_factory else info.default)
            options = _literal_options(info.annotation)
            widget = "select" if options else "switch" if info.annotation is bool else "text"
            specs.append(FieldSpec(
                key=f"{section}.{name}" if section else name, widget=widget, options=options or (), default=default,
                required=required, raw_string=_is_plain_str(info.annotation), help=info.description or "",
            ))
    return specs


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        import json

        return json.dumps(value, ensure_ascii=False)  # JSON is YAML: the field reads it back as a mapping
    return str(value)


def _get(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return PydanticUndefined
        node = node[part]
    return node


def _set(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _section(spec: FieldSpec) -> str:
    return spec.key.split(".")[0] if "." in spec.key else ""


def _initial(spec: FieldSpec):
    """A field's widget value before anything is typed: the default option, the default switch, an empty text."""
    if spec.widget == "select":
        return spec.default if spec.default in spec.options else Select.NULL
    if spec.widget == "switch":
        return bool(spec.default)
    return ""


def sections_for_kind(kind: str | None) -> set[str]:
    """The form sections a job kind reads (no kind yet: an LM adapter's)."""
    shown = {"", "data", "train"}
    if kind not in VISION_KINDS:
        shown.add("lora")
    if kind == "lm-qlora":
        shown.add("quantize")
    if kind in PREFERENCE_KINDS:
        shown.add("preference")
    if kind in CLASSIFY_KINDS:
        shown.add("classify")
    if kind in VISION_KINDS:
        shown.add("vision")
    return shown


def field_label(spec: FieldSpec) -> str:
    return spec.key.split(".")[-1] + (" *" if spec.required else "")


class FieldRow(Vertical):
    SCOPED_CSS = False  # the rules below also look at the screen's -wide / -narrow class
    DEFAULT_CSS = """
    FieldRow { height: auto; padding: 0 1; }
    FieldRow > Horizontal { height: auto; }
    FieldRow .field-name { width: 20; text-wrap: nowrap; }
    FieldRow Input, FieldRow Select { width: 1fr; }
    FieldRow Checkbox { width: 6; }
    FieldRow .switch-gap { width: 1fr; }
    FieldRow .help-inline { display: none; width: 2fr; color: $text-muted; padding-left: 2; }
    FieldRow .field-error { color: $error; display: none; }
    FieldRow.-invalid .field-error { display: block; }
    FieldRow.-invalid .field-name { color: $error; }
    FieldRow:focus-within .field-name { text-style: bold; color: $accent; }
    .-wide FieldRow .help-inline { display: block; }
    """

    def __init__(self, spec: FieldSpec, name_width: int = 20, value: Any = None):
        super().__init__(id="row-" + spec.dom_id)
        self.spec, self.name_width = spec, name_width
        s = spec
        value = _initial(s) if value is None else value
        # The input is made here, so the form reads and sets its value before the row is mounted.
        if s.widget == "select":
            self.field = Select([(str(o), o) for o in s.options], value=value, allow_blank=s.default not in s.options, id=s.dom_id, compact=True)
        elif s.widget == "switch":
            self.field = Checkbox("", value=bool(value), id=s.dom_id, compact=True)
        else:
            placeholder = "required" if s.required else f"default: {format_value(s.default)}"
            self.field = Input(value=value, placeholder=placeholder, id=s.dom_id, compact=True)

    def compose(self) -> ComposeResult:
        s = self.spec
        with Horizontal():
            name = Label(field_label(s), classes="field-name")
            name.styles.width = self.name_width  # the longest name whole: `early_stopping_patience` never runs into its input
            yield name
            yield self.field
            if s.widget == "switch":
                yield Label("", classes="switch-gap")
            yield Static(s.help, classes="help-inline", markup=False)  # beside the field when the screen is wide
        error = Label("", classes="field-error", markup=False)
        error.styles.padding = (0, 0, 0, self.name_width)
        yield error

    def show_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Label).update(message or "")


class RecipeForm(VerticalScroll):
    """`values()` -> the dict a recipe YAML would hold; `check()` -> a Recipe, or None with errors shown."""

    DEFAULT_CSS = "RecipeForm > .form-section { height: auto; }"

    class Changed(Message):
        """Some field changed (the screen re-checks after a short pause)."""

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.specs = field_specs()
        self._loading = False
        self._name_width = max(len(field_label(s)) for s in self.specs) + 1
        self._rows: dict[str, FieldRow] = {}  # built rows by key
        self._stash: dict[str, Any] = {}  # values given to rows not built yet
        self._shown = sections_for_kind(None)

    def compose(self) -> ComposeResult:
        self._shown = shown = sections_for_kind(self.get_field("kind"))  # a kind set before mounting builds its sections
        for section in SECTION_TITLES:
            box = Vertical(Label(SECTION_TITLES[section], classes="section-title"), *self._make_rows(section) if section in shown else (),
                           id="sec-" + (section or "job"), classes="form-section")
            box.display = section in shown
            yield box
        yield Label("", id="form-error", classes="field-error", markup=False)

    # -- sections: only the kind's are built (a form of every field is ~700 widgets and seconds to open) ----------
    def _make_rows(self, section: str) -> list[FieldRow]:
        rows = []
        for spec in self.specs:
            if _section(spec) == section and spec.key not in self._rows:
                self._rows[spec.key] = row = FieldRow(spec, self._name_width, self._stash.pop(spec.key, _initial(spec)))
                rows.append(row)
        return rows

    def show_kind(self, kind: str | None) -> None:
        """Show the sections `kind` reads (building the ones never shown, with the values they were given meanwhile)."""
        shown = sections_for_kind(kind)
        if shown == self._shown:
            return
        self._shown = shown
        for section in SECTION_TITLES:
            box = self.query_one("#sec-" + (section or "job"), Vertical)
            if section in shown:
                rows = self._make_rows(section)
                if rows:
                    box.mount_all(rows)
            box.display = section in shown

    # -- values (a row not built keeps its value in the stash) --------------------------------------------------
    def _raw(self, spec: FieldSpec):
        row = self._rows.get(spec.key)
        return row.field.value if row is not None else self._stash.get(spec.key, _initial(spec))

    def _assign(self, spec: FieldSpec, value) -> None:
        row = self._rows.get(spec.key)
        if row is not None:
            row.field.value = value
        else:
            self._stash[spec.key] = value
        if spec.key == "kind" and self.is_mounted:
            self.show_kind(None if value is Select.NULL else value)

    def values(self) -> dict:
        data: dict = {}
        kind = None
        for spec in self.specs:
            raw = self._raw(spec)
            if spec.widget == "select":
                if raw is Select.NULL:
                    continue
                value = raw
            elif spec.widget == "switch":
                value = raw
                if value == spec.default:
                    continue  # keep saved recipes short: defaults are implied
            else:
                raw = raw.strip()
                if not raw:
                    continue
                value = raw if spec.raw_string and raw != "null" else _read_yaml(raw)
                if spec.key in ESCAPED_FIELDS and isinstance(value, str):
                    value = value.replace("\\n", "\n")
            if spec.key == "kind":
                kind = value
            _set(data, spec.key, value)
        if kind != "lm-qlora":
            data.pop("quantize", None)  # only QLoRA quantizes the base
        if kind not in PREFERENCE_KINDS:
            data.pop("preference", None)  # only DPO and ORPO read it
        if kind not in CLASSIFY_KINDS:
            data.pop("classify", None)
        if kind not in VISION_KINDS:
            data.pop("vision", None)
        else:
            data.pop("lora", None)  # an image classifier has no adapter section (its choices are LM defaults)
        for section in ("data", "lora", "train", "quantize", "preference", "classify", "vision"):
            if section in data and not data[section]:
                data.pop(section)
        return data

    def set_values(self, data: dict) -> None:
        """Fill the form from a recipe mapping (fields it does not name go back to their defaults)."""
        self._loading = True
        try:
            for spec in sorted(self.specs, key=lambda s: s.key != "kind"):  # the kind first: it decides which sections are built
                value = _get(data, spec.key)
                if spec.widget == "select":
                    if value is PydanticUndefined:
                        value = spec.default
                    self._assign(spec, value if value in spec.options else Select.NULL)
                elif spec.widget == "switch":
                    self._assign(spec, bool(spec.default if value is PydanticUndefined else value))
                elif value is PydanticUndefined or (value is None and spec.default is None):
                    self._assign(spec, "")
                else:
                    self._assign(spec, format_value(value).replace("\n", "\\n") if spec.key in ESCAPED_FIELDS else format_value(value))
        finally:
            self._loading = False
        self.post_message(self.Changed())

    def set_field(self, key: str, value: Any) -> None:
        spec = next(s for s in self.specs if s.key == key)
        self._assign(spec, format_value(value) if spec.widget == "text" else value)

    def get_field(self, key: str) -> Any:
        """A field's widget value as it stands: a select's option (None when blank), a switch's bool, a text's string."""
        spec = next(s for s in self.specs if s.key == key)
        value = self._raw(spec)
        return None if value is Select.NULL else value

    # -- checking ----------------------------------------------------------------------------------
    def check(self) -> Recipe | None:
        for row in self.query(FieldRow):
            row.show_error(None)
        form_error = self.query_one("#form-error", Label)
        form_error.update("")
        try:
            data = self.values()
        except ValueError as exc:
            form_error.update(str(exc))
            return None
        problems: list[tuple[str, str]] = []
        recipe = None
        try:
            recipe = recipe_from_dict(data, source="form")
        except RecipeError as exc:
            problems = list(exc.problems)
        path = _get(data, "data.path")
        if isinstance(path, str) and path and not Path(path).expanduser().exists():
            problems.append(("data.path", f"no such file or folder: {path}"))
            recipe = None
        rows = {row.spec.key: row for row in self.query(FieldRow)}
        unplaced = []
        for loc, msg in problems:
            row = rows.get(loc) or rows.get(loc.rsplit(".", 1)[0])  # list items report as targets.0
            if row is not None:
                row.show_error(msg)
            else:
                unplaced.append(f"{loc}: {msg}")
        form_error.update("\n".join(unplaced))
        form_error.display = bool(unplaced)
        self.problem_count = len(problems)
        return recipe

    problem_count = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        self._changed(event)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "f-kind":
            self.show_kind(None if event.value is Select.NULL else event.value)
        self._changed(event)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._changed(event)

    def _changed(self, event: Message) -> None:
        event.stop()
        if not self._loading:
            self.post_message(self.Changed())


def _read_yaml(raw: str):
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # the schema then says what it expected, next to the field
