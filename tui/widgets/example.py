"""One data row as a person reads it: chat as role-labelled turns, prompt and completion, text and label, images with a preview."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Group, RenderableType
from rich.text import Text

from mlxft.data import formats
from mlxft.data.readers import Record, Row

ROLE_STYLES = {"system": "bold magenta", "user": "bold cyan", "assistant": "bold green", "tool": "bold yellow"}
PREVIEW_COLUMNS = 32  # image previews: cells wide; two pixels per cell vertically


def row_summary(row: Row, fmt: str | None, width: int = 60) -> str:
    """One line for the row list: the row's text, or why it cannot be read."""
    if not isinstance(row, Record):
        return f"✗ {row.reason}"
    try:
        canonical = formats.normalize(row, fmt, check_images=False) if fmt else None
    except formats.RowProblem as p:
        return f"✗ {p.field}: {p.reason}"
    if canonical is None:
        text = json.dumps(row.data, ensure_ascii=False, default=str)
    elif "image" in canonical:
        text = f"[{canonical['label']}] {Path(str(canonical['image'])).name}" if isinstance(canonical["image"], str) else f"[{canonical['label']}] (embedded image)"
    elif "messages" in canonical:  # the system prompt is often the same in every row: show what differs
        text = " → ".join(t["content"] for t in canonical["messages"] if t["role"] != "system")
    else:
        text = formats.example_text(canonical)
        if "label" in canonical:
            text = f"[{canonical['label']}] {text}"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def example_renderable(row: Row, fmt: str | None) -> RenderableType:
    """The whole row: its canonical form when it has one, else the problem and the raw row."""
    where = Text(row.where, style="dim")
    if not isinstance(row, Record):
        return Group(where, Text(f"unreadable: {row.reason}", style="bold red"))
    if not fmt:
        return Group(where, Text("format unknown (see the Report tab); the row as read:", style="yellow"), _raw(row.data))
    try:
        canonical = formats.normalize(row, fmt, check_images=False)
    except formats.RowProblem as p:
        parts = [where, Text(f"{p.field}: {p.reason}", style="bold red")]
        if p.hint:
            parts.append(Text(f"hint: {p.hint}", style="yellow"))
        return Group(*parts, Text(""), _raw(row.data))
    return Group(where, *_canonical_parts(canonical, row))


def _raw(data: dict) -> Text:
    return Text(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _canonical_parts(canonical: dict, row: Record) -> list[RenderableType]:
    if "messages" in canonical:
        return turns_parts(canonical["messages"])
    if "chosen" in canonical:
        parts = []
        for key in ("prompt", "chosen", "rejected"):
            value = canonical[key]
            if isinstance(value, list):
                parts += [Text(key, style="bold underline"), *turns_parts(value)]
            else:
                parts.append(_field(key, value))
        return parts
    if "image" in canonical:
        return _image_parts(canonical, row)
    parts = [_field(key, canonical[key]) for key in ("prompt", "completion", "text") if key in canonical]
    if "label" in canonical:
        parts.append(_field("label", str(canonical["label"])))
    return parts


def _field(name: str, value: str) -> Text:
    text = Text(f"{name}\n", style="bold cyan")
    text.append(value if value else "(empty)", style="" if value else "dim")
    text.append("\n")
    return text


def turns_parts(turns: list[dict]) -> list[RenderableType]:
    """Each turn as `role` on its own line and the content below it."""
    parts: list[RenderableType] = []
    for turn in turns:
        role = str(turn.get("role", "?"))
        parts.append(Text(role, style=ROLE_STYLES.get(role, "bold")))
        parts.append(Text(str(turn.get("content", "")) + "\n"))
    return parts


def _image_parts(canonical: dict, row: Record) -> list[RenderableType]:
    image = canonical["image"]  # normalize() made a relative path absolute
    parts: list[RenderableType] = [_field("label", str(canonical["label"]))]
    if isinstance(image, str):
        parts.append(_field("image", image))
    try:
        facts = formats.inspect_image(image, "image")
    except formats.RowProblem as p:
        return [*parts, Text(f"{p.field}: {p.reason}", style="bold red")]
    size = f", {Path(image).stat().st_size:,} bytes" if isinstance(image, str) else ""
    parts.append(Text(f"{facts.width} x {facts.height} pixels, mode {facts.mode}{size}", style="dim"))
    parts.append(image_preview(_open_image(image)))
    return parts


def _open_image(value):
    """A PIL image from what a row holds: a path, {"bytes"|"path"}, or an image (inspect_image has checked it decodes)."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data = value.get("bytes")
        return Image.open(io.BytesIO(data)) if data else Image.open(value["path"])
    return Image.open(value)


def image_preview(image, columns: int = PREVIEW_COLUMNS) -> Text:
    """The image in `columns` cells: each cell is an upper-half block, foreground the top pixel, background the bottom."""
    rgb = image.convert("RGB")
    rows = max(1, round(columns * rgb.height / rgb.width / 2))
    small = rgb.resize((columns, rows * 2))
    px = small.load()
    out = Text(no_wrap=True)
    for y in range(0, rows * 2, 2):
        for x in range(columns):
            top, bottom = px[x, y], px[x, y + 1]
            out.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        if y < rows * 2 - 2:
            out.append("\n")
    return out
