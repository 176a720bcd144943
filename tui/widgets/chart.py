"""A line chart drawn with braille dots: train and validation loss on one set of axes.

Each terminal cell holds a 2x4 grid of dots, so an 80-column pane gives ~140 points across.
The chart is rebuilt from its series on every render; series hold plain (step, value) floats.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widget import Widget

# Dot bit for (column 0-1, row 0-3) inside one braille cell.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_Y_LABEL = 8  # characters for the y-axis labels and tick


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


class Series:
    def __init__(self, name: str, style: str, marker: bool = False):
        self.name, self.style, self.marker = name, style, marker
        self.points: list[tuple[float, float]] = []


class LineChart(Widget):
    """`chart.add_point("train", step, loss)`; `chart.truncate_after(step)` when a resumed run repeats steps."""

    DEFAULT_CSS = """
    LineChart {
        height: 1fr;
        min-height: 7;
    }
    """

    def __init__(self, series: list[Series], *, x_label: str = "step", x_max: float | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.series = {s.name: s for s in series}
        self.x_label = x_label
        self.x_max = x_max  # the x axis spans 0..x_max when known (total steps), so the run fills it as it goes

    # -- data --------------------------------------------------------------------------------------
    def add_point(self, name: str, x: float, y: float) -> None:
        if not math.isfinite(y):
            return
        self.series[name].points.append((float(x), float(y)))
        self.refresh()

    def ensure_series(self, name: str, style: str) -> None:
        """Add a series (e.g. a job's metric) unless the chart has it."""
        if name not in self.series:
            self.series[name] = Series(name, style)
            self.refresh()

    def drop_series_except(self, names) -> None:
        """Forget every series not named (another run's metrics)."""
        self.series = {k: v for k, v in self.series.items() if k in names}
        self.refresh()

    def truncate_after(self, x: float) -> None:
        for s in self.series.values():
            s.points = [p for p in s.points if p[0] <= x]
        self.refresh()

    def clear(self) -> None:
        for s in self.series.values():
            s.points = []
        self.refresh()

    def point_count(self, name: str) -> int:
        return len(self.series[name].points)

    # -- drawing -----------------------------------------------------------------------------------
    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        pts = [p for s in self.series.values() for p in s.points]
        legend = self._legend()
        if width < _Y_LABEL + 10 or height < 4:
            return legend
        if not pts:
            return Text.assemble(legend, "\n", Text("waiting for the first step...", style="dim"))
        plot_w, plot_h = width - _Y_LABEL, height - 2  # legend row on top, x axis row at the bottom
        x_lo = 0.0 if self.x_max else min(p[0] for p in pts)
        x_hi = max(self.x_max or 0.0, max(p[0] for p in pts))
        y_lo, y_hi = min(p[1] for p in pts), max(p[1] for p in pts)
        pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 1e-3)
        y_lo, y_hi = y_lo - pad, y_hi + pad
        dots_w, dots_h = plot_w * 2, plot_h * 4
        cells = [[0] * plot_w for _ in range(plot_h)]
        owner: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]

        def to_dot(x: float, y: float) -> tuple[int, int]:
            dx = 0 if x_hi == x_lo else round((x - x_lo) / (x_hi - x_lo) * (dots_w - 1))
            dy = round((y_hi - y) / (y_hi - y_lo) * (dots_h - 1))
            return min(max(dx, 0), dots_w - 1), min(max(dy, 0), dots_h - 1)

        def plot(dx: int, dy: int, name: str) -> None:
            cy, cx = dy // 4, dx // 2
            cells[cy][cx] |= _DOTS[dx % 2][dy % 4]
            owner[cy][cx] = name

        for s in self.series.values():  # later series draw on top (validation over train)
            prev = None
            for x, y in s.points:
                cur = to_dot(x, y)
                if prev is None:
                    plot(*cur, s.name)
                else:
                    for d in _line(prev, cur):
                        plot(*d, s.name)
                if s.marker:
                    for mx, my in ((cur[0] + 1, cur[1]), (cur[0], cur[1] + 1), (cur[0] + 1, cur[1] + 1)):
                        if mx < dots_w and my < dots_h:
                            plot(mx, my, s.name)
                prev = cur

        out = Text()
        out.append_text(legend)
        labels = {0: y_hi, plot_h - 1: y_lo, (plot_h - 1) // 2: (y_hi + y_lo) / 2}
        for row in range(plot_h):
            label = _fmt(labels[row]).rjust(_Y_LABEL - 2) + " ┤" if row in labels else " " * (_Y_LABEL - 1) + "│"
            out.append("\n" + label, style="dim")
            for col in range(plot_w):
                bits = cells[row][col]
                name = owner[row][col]
                out.append(chr(0x2800 + bits) if bits else " ", style=self.series[name].style if name else "")
        left, right = f"{x_lo:g}", f"{x_hi:g} {self.x_label}"
        axis = " " * (_Y_LABEL - 1) + "└" + left + " " * max(plot_w - len(left) - len(right) - 1, 1) + right
        out.append("\n" + axis, style="dim")
        return out

    def _legend(self) -> Text:
        t = Text()
        for s in self.series.values():
            t.append(" ━━ ", style=s.style)
            last = f" {s.points[-1][1]:.4f}" if s.points else ""
            t.append(f"{s.name}{last}  ")
        return t


def _line(a: tuple[int, int], b: tuple[int, int]):
    """Bresenham: every dot between two dots, so a steep drop is drawn as a line, not two specks."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy
