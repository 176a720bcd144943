"""Labelled horizontal bars drawn with block characters: histograms and label balance, sized to the widget's width."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

EIGHTHS = " ▏▎▍▌▋▊▉"
MAX_BAR = 72  # cells: longer bars on a wide terminal only move the counts away from the labels


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    note: str = ""  # after the count, e.g. a percentage
    style: str = "$accent"


def bar_text(fraction: float, width: int) -> str:
    """A bar `fraction` (0..1) of `width` cells long, to an eighth of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def histogram_bars(edges: list[int], counts: list[int], limit: int | None = None) -> list[Bar]:
    """One bar per bin (`lo-hi` inclusive); bins past `limit` (e.g. max_seq_length) are drawn as a warning."""
    bars = []
    for lo, hi, n in zip(edges, edges[1:], counts, strict=False):
        label = f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"
        bars.append(Bar(label, n, style="$error" if limit is not None and hi - 1 > limit else "$accent"))
    return bars


def balance_bars(counts: dict[str, int]) -> list[Bar]:
    """One bar per label, largest first, with its share of the rows."""
    total = sum(counts.values()) or 1
    return [Bar(label, n, f"{n / total:.0%}") for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


class BarChart(Widget):
    """`BarChart(bars)`: label | bar | count (note); one line per bar, bars scaled to the largest value."""

    DEFAULT_CSS = """
    BarChart {
        height: auto;
        width: 1fr;
    }
    """

    def __init__(self, bars: list[Bar], *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.bars = bars

    def set_bars(self, bars: list[Bar]) -> None:
        self.bars = bars
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self.bars))

    def render(self) -> Text:
        if not self.bars:
            return Text("(nothing to show)", style="dim")
        label_w = min(24, max(len(b.label) for b in self.bars))
        count_w = max(len(f"{b.value:,}") for b in self.bars)
        note_w = max(len(b.note) for b in self.bars)
        bar_w = max(4, min(MAX_BAR, self.size.width - label_w - count_w - note_w - 4))
        top = max(b.value for b in self.bars) or 1
        out = Text(no_wrap=True, overflow="ellipsis")
        for i, b in enumerate(self.bars):
            label = b.label if len(b.label) <= label_w else b.label[: label_w - 1] + "…"
            out.append(f"{label:>{label_w}} ", style="bold")
            drawn = bar_text(b.value / top, bar_w)
            out.append(drawn, style=self._color(b.style))
            out.append(" " * (bar_w - len(drawn)) + f" {b.value:>{count_w},}")
            if note_w:
                out.append(f" {b.note:>{note_w}}", style="dim")
            if i < len(self.bars) - 1:
                out.append("\n")
        return out

    def _color(self, style: str) -> str:
        """Theme variables (`$accent`) resolved to colours, so bars follow the app's theme."""
        if style.startswith("$"):
            return self.app.get_css_variables().get(style[1:], "blue")
        return style
