"""Tables that are updated by diff: only cells whose text changed are touched (`update_cell`), never a rebuild."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from rivet_tui.bridge import ExportState, human_bytes, human_count, human_duration

Column = tuple[str, str, int, str]   # key, label, width, justify

STATUS_STYLE = {"running": "bold cyan", "done": "green", "failed": "bold red", "refused": "bold magenta",
                "planned": "blue", "queued": "yellow", "stopping": "yellow", "idle": "dim"}


class DiffTable(DataTable):
    """A DataTable with fixed columns whose rows are patched cell by cell."""

    COLUMNS: Sequence[Column] = ()

    def __init__(self, **kw) -> None:
        super().__init__(cursor_type="row", **kw)
        self._cells: dict[str, tuple[str, ...]] = {}
        self._columns = {c[0]: c for c in self.COLUMNS}
        for key, label, width, justify in self.COLUMNS:
            self.add_column(label.rjust(width) if justify == "right" else label, key=key, width=width)

    def styled(self, key: str, value: str) -> Text:
        _, _, width, justify = self._columns[key]
        if justify == "right":   # DataTable cells ignore Text.justify
            value = value.rjust(width)
        return Text(value, no_wrap=True, overflow="ellipsis")

    @property
    def shown(self) -> list[str]:
        return list(self._cells)

    def replace(self, rows: Iterable[tuple[str, tuple[str, ...]]]) -> None:
        """Show exactly these rows (filter changes, first load). Keeps the cursor on the same key if it stays."""
        keep = self.selected_key()
        self.clear()
        self._cells = {}
        keys = [c[0] for c in self.COLUMNS]
        for key, cells in rows:
            self.add_row(*(self.styled(k, v) for k, v in zip(keys, cells)), key=key)
            self._cells[key] = cells
        if keep in self._cells:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def patch(self, rows: Iterable[tuple[str, tuple[str, ...]]]) -> int:
        """Update the cells that changed on rows already shown; returns how many cells were touched."""
        touched = 0
        keys = [c[0] for c in self.COLUMNS]
        for key, cells in rows:
            old = self._cells.get(key)
            if old is None or old == cells:
                continue
            for i, (col, value) in enumerate(zip(keys, cells)):
                if old[i] != value:
                    try:
                        self.update_cell(key, col, self.styled(col, value))
                    except CellDoesNotExist:
                        break
                    touched += 1
            self._cells[key] = cells
        return touched

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


def progress_text(s: ExportState, width: int = 10) -> str:
    frac = s.fraction()
    if frac is None:
        return "" if s.status != "running" else "streaming"
    if s.status in ("done",) and s.chunks_total is None and s.rows_estimate:
        frac = 1.0
    filled = round(frac * width)
    bar = "█" * filled + "░" * (width - filled)
    if s.chunks_total:
        return f"{bar} {s.chunks_done}/{s.chunks_total}"
    return f"{bar} {frac * 100:3.0f}%"


class ExportsTable(DiffTable):
    """One row per export, keyed by export name."""

    COLUMNS = (("name", "Export", 22, "left"), ("mode", "Mode", 11, "left"), ("status", "Status", 8, "left"),
               ("progress", "Progress", 18, "left"), ("rows", "Rows", 12, "right"), ("rate", "Rows/s", 9, "right"),
               ("bytes", "Bytes", 9, "right"), ("eta", "ETA", 7, "right"), ("committed", "Committed", 20, "left"),
               ("verified", "Verified", 20, "left"))

    def styled(self, key: str, value: str) -> Text:
        text = super().styled(key, value)
        if key == "status":
            text.stylize(STATUS_STYLE.get(value, ""))
        elif key == "name":
            text.stylize("bold")
        elif key == "progress" and value and value[0] in "█░":
            filled = value.count("█")
            text.stylize("cyan", 0, filled)
            text.stylize("dim", filled, len(value.split(" ")[0]))
        return text

    @staticmethod
    def cells(s: ExportState, now: float) -> tuple[str, ...]:
        ran = bool(s.session_runs)
        rate = s.rate(now) if ran else None
        return (s.name, s.mode, s.status, progress_text(s), human_count(s.rows) if ran else "-",
                human_count(rate) if rate is not None else "-", human_bytes(s.bytes) if ran else "-",
                human_duration(s.eta(now)), s.committed, s.verified)
