"""A form generated from the Recipe schema: every field with its default and help, errors next to the field.

The schema is the single source of truth: a field added to `mlxft.recipe` appears here without UI code.
Text fields are read as YAML (like `key=value` overrides), so `1e-4`, `null` and `[q_proj, v_proj]` work.
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

    def __init__(self, spec: FieldSpec, name_width: int = 20):
        super().__init__(id="row-" + spec.dom_id)
        self.spec, self.name_width = spec, name_width

    def compose(self) -> ComposeResult:
        s = self.spec
        with Horizontal():
            name = Label(field_label(s), classes="field-name")
            name.styles.width = self.name_width  # the longest name whole: `early_stopping_patience` never runs into its input
            yield name
            if s.widget == "select":
                yield Select([(str(o), o) for o in s.options], value=s.default if s.default in s.options else Select.NULL,
                             allow_blank=s.default not in s.options, id=s.dom_id, compact=True)
            elif s.widget == "switch":
                yield Checkbox("", value=bool(s.default), id=s.dom_id, compact=True)
                yield Label("", classes="switch-gap")
            else:
                placeholder = "required" if s.required else f"default: {format_value(s.default)}"
                yield Input(placeholder=placeholder, id=s.dom_id, compact=True)
            yield Static(s.help, classes="help-inline", markup=False)  # beside the field when the screen is wide
        error = Label("", classes="field-error", markup=False)
        error.styles.padding = (0, 0, 0, self.name_width)
        yield error

    def show_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Label).update(message or "")


class RecipeForm(VerticalScroll):
    """`values()` -> the dict a recipe YAML would hold; `check()` -> a Recipe, or None with errors shown."""

    class Changed(Message):
        """Some field changed (the screen re-checks after a short pause)."""

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.specs = field_specs()
        self._loading = False

    def compose(self) -> ComposeResult:
        current = None
        name_width = max(len(field_label(s)) for s in self.specs) + 1
        for spec in self.specs:
            section = spec.key.split(".")[0] if "." in spec.key else ""
            if section != current:
                current = section
                yield Label(SECTION_TITLES[section], classes="section-title")
            yield FieldRow(spec, name_width)
        yield Label("", id="form-error", classes="field-error", markup=False)

    # -- values ------------------------------------------------------------------------------------
    def _widget(self, spec: FieldSpec):
        return self.query_one("#" + spec.dom_id)

    def values(self) -> dict:
        data: dict = {}
        kind = None
        for spec in self.specs:
            w = self._widget(spec)
            if spec.widget == "select":
                if w.value is Select.NULL:
                    continue
                value = w.value
            elif spec.widget == "switch":
                value = w.value
                if value == spec.default:
                    continue  # keep saved recipes short: defaults are implied
            else:
                raw = w.value.strip()
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
            for spec in self.specs:
                value = _get(data, spec.key)
                w = self._widget(spec)
                if spec.widget == "select":
                    if value is PydanticUndefined:
                        value = spec.default
                    w.value = value if value in spec.options else Select.NULL
                elif spec.widget == "switch":
                    w.value = bool(spec.default if value is PydanticUndefined else value)
                else:
                    if value is PydanticUndefined or (value is None and spec.default is None):
                        w.value = ""
                    else:
                        w.value = format_value(value).replace("\n", "\\n") if spec.key in ESCAPED_FIELDS else format_value(value)
        finally:
            self._loading = False
        self.post_message(self.Changed())

    def set_field(self, key: str, value: Any) -> None:
        spec = next(s for s in self.specs if s.key == key)
        w = self._widget(spec)
        w.value = format_value(value) if spec.widget == "text" else value

    def get_field(self, key: str) -> Any:
        """A field's widget value as it stands: a select's option (None when blank), a switch's bool, a text's string."""
        spec = next(s for s in self.specs if s.key == key)
        value = self._widget(spec).value
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
