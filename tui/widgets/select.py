"""A Select whose list opens on its first real option while nothing is picked: `down` opens it, `enter` picks it."""

from __future__ import annotations

from textual.widgets import Select
from textual.widgets._select import SelectOverlay


class PickSelect(Select):
    """Textual's Select opens a blank one on its blank row, so the first choice took two `down`s."""

    def _watch_expanded(self, expanded: bool) -> None:
        super()._watch_expanded(expanded)
        if expanded and self.value is Select.NULL and len(self._options) > 1:
            self.query_one(SelectOverlay).select(1)
