"""Tables that are updated by diff: only cells whose text changed are touched, never a rebuild on a tick."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from rivet_tui.viewmodel import ExportState, cell_text, status_style


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    right: bool = False    # right-aligned (numbers)


class DiffTable(DataTable):
    """A DataTable whose rows are patched cell by cell, keyed by export name."""

    # enter selects the row (screens open the run detail): shown in the footer, remapped with the app's "detail"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Detail", id="detail")]

    def __init__(self, columns: Sequence[Column] = (), **kw) -> None:
        super().__init__(cursor_type="row", **kw)
        self._cells: dict[str, tuple[str, ...]] = {}
        self.columns_shown: tuple[Column, ...] = ()
        self.set_columns(columns)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Change the columns (rows are dropped: call replace() after)."""
        self.clear(columns=True)
        self._cells = {}
        self.columns_shown = tuple(columns)
        for c in self.columns_shown:
            self.add_column(c.label.rjust(c.width) if c.right else c.label, key=c.key, width=c.width)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.columns_shown]

    def styled(self, column: Column, value: str) -> Text:
        if column.right:   # DataTable cells ignore Text.justify
            value = value.rjust(column.width)
        return Text(value, no_wrap=True, overflow="ellipsis")

    @property
    def shown(self) -> list[str]:
        """Row keys in the order they are on screen."""
        return sorted(self._cells, key=lambda k: self._row_locations.get(RowKey(k)))

    def replace(self, rows: Iterable[tuple[str, tuple[str, ...]]]) -> None:
        """Show exactly these rows in this order (filter changes, first load). Keeps the cursor on the same key."""
        keep = self.selected_key()
        self.clear()
        self._cells = {}
        for key, cells in rows:
            self.add_row(*(self.styled(c, v) for c, v in zip(self.columns_shown, cells)), key=key)
            self._cells[key] = cells
        if keep in self._cells:
            self.select_key(keep)

    def reorder(self, order: list[str]) -> bool:
        """Put the shown rows in this order (they must be the same keys); True when anything moved."""
        if order == self.shown:
            return False
        keep = self.selected_key()
        position = {k: i for i, k in enumerate(order)}
        # the first column holds the row key (the export name) in every table here
        self.sort(self.columns_shown[0].key, key=lambda first: position[first.plain])
        if keep is not None:
            self.select_key(keep)
        return True

    def patch(self, rows: Iterable[tuple[str, tuple[str, ...]]]) -> int:
        """Update the cells that changed on rows already shown; returns how many cells were touched.

        DataTable.update_cell bumps a table-wide counter that is part of every render-cache key, so one changed
        cell repaints every visible cell (~60 ms a tick at 160x48 on 2 cores). Here only the changed cells' cache
        entries are dropped and only their lines are marked dirty: a tick costs what the changed cells cost.
        """
        changed: dict[RowKey, set[ColumnKey]] = {}
        touched = 0
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None or old == cells:
                continue
            row_key = RowKey(key)
            data = self._data[row_key]
            columns = changed[row_key] = set()
            for i, (column, value) in enumerate(zip(self.columns_shown, cells)):
                if old[i] != value:
                    data[ColumnKey(column.key)] = self.styled(column, value)
                    columns.add(ColumnKey(column.key))
                    touched += 1
            self._cells[key] = cells
        if changed:
            self._forget(changed)
        return touched

    def _forget(self, changed: dict[RowKey, set[ColumnKey]]) -> None:
        """Drop the cached renders of these cells (the rows' composed lines too) and repaint only their lines."""
        indexes = {self._row_locations.get(row) for row in changed}
        header = self.header_height if self.show_header else 0
        lines = {i + header for i in indexes}
        for cache, hit in ((self._cell_render_cache, lambda k: k[1] in changed.get(k[0], ())),
                           (self._row_render_cache, lambda k: k[0] in changed),
                           (self._row_renderable_cache, lambda k: k[1] in indexes),
                           (self._line_cache, lambda k: k[0] in lines)):
            for k in [k for k in cache.keys() if hit(k)]:
                cache.discard(k)
        width = max(self.size.width, self.virtual_size.width)
        visible = [Region(0, y - self.scroll_offset.y, width, 1) for y in lines
                   if header <= y - self.scroll_offset.y < self.size.height]
        if visible:  # refresh() without regions would repaint everything
            self.refresh(*visible)

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None

    def select_key(self, key: str) -> None:
        if key in self._cells:
            self.move_cursor(row=self.get_row_index(key), animate=False)


# The exports table: every column, in display order, and which are added first as the terminal widens. The first six
# always show (80 columns fit them); the name column is frozen when scrolling sideways.
EXPORT_COLUMNS = (
    Column("name", "Export", 14), Column("status", "Status", 10), Column("mode", "Mode", 11),
    Column("progress", "Progress", 18), Column("rows", "Rows", 11, True), Column("rate", "Rows/s", 8, True),
    Column("bytes", "Bytes", 9, True), Column("eta", "ETA", 6, True), Column("duration", "Duration", 8, True),
    Column("started", "Started", 8), Column("error", "Last error", 28), Column("committed", "Committed", 18),
    Column("verified", "Verified", 18), Column("destination", "Destination", 24),
)
ALWAYS = ("name", "status", "progress", "rows", "rate", "eta")
WHEN_WIDER = ("error", "committed", "duration", "started", "mode", "bytes", "verified", "destination")
NAME_MAX = 28
CELL_PADDING = 2     # DataTable's cell_padding on both sides
SCROLLBAR = 1        # styles/app.tcss: scrollbar-size-vertical


def export_columns(width: int) -> tuple[Column, ...]:
    """The columns that fit `width` terminal cells; what is left widens the name column."""
    by_key = {c.key: c for c in EXPORT_COLUMNS}
    room = width - SCROLLBAR
    chosen = set(ALWAYS)
    used = sum(by_key[k].width + CELL_PADDING for k in chosen)
    for key in WHEN_WIDER:
        need = by_key[key].width + CELL_PADDING
        if used + need <= room:
            chosen.add(key)
            used += need
    name = by_key["name"]
    wider = Column(name.key, name.label, min(NAME_MAX, name.width + max(0, room - used)))
    return tuple(wider if c.key == "name" else c for c in EXPORT_COLUMNS if c.key in chosen)


class ExportsTable(DiffTable):
    """One row per export, keyed by export name."""

    def __init__(self, width: int = 80, **kw) -> None:
        super().__init__(export_columns(width), fixed_columns=1, **kw)

    def styled(self, column: Column, value: str) -> Text:
        text = super().styled(column, value)
        key = column.key
        if key == "status":
            text.stylize(status_style(value.split(" ", 1)[-1], self.app.no_color))
        elif key == "name":
            text.stylize("bold")
        elif key == "error" and value.startswith("RIVET_"):
            text.stylize("bold" if self.app.no_color else "red")
        elif key == "progress" and value and value[0] in "█░":
            filled = value.count("█")
            text.stylize("bold" if self.app.no_color else "cyan", 0, filled)
        return text

    def cells(self, s: ExportState, now: float) -> tuple[str, ...]:
        return tuple(cell_text(s, key, now) for key in self.keys)
