"""The home screen: one row per export, updated live by diff at 4 Hz; `/` filters."""
from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input

from rivet_tui.widgets.tables import ExportsTable

REFRESH_S = 0.25


class ExportsScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Input(placeholder="filter: part of a name, mode or status · enter keeps it · escape clears",
                    id="filter")
        yield ExportsTable(id="exports")
        yield Footer()

    @property
    def table(self) -> ExportsTable:
        return self.query_one(ExportsTable)

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.show_rows()
        self.table.focus()
        self.set_interval(REFRESH_S, self.flush)

    # -- rows ----------------------------------------------------------------------------------------------------
    def matches(self, name: str) -> bool:
        if not self.filter_text:
            return True
        s = self.app.model[name]
        q = self.filter_text.lower()
        return q in name.lower() or q == s.mode.lower() or q == s.status.lower()

    def show_rows(self) -> None:
        model, now = self.app.model, self.app.clock()
        self.table.replace((n, ExportsTable.cells(model[n], now)) for n in model.names() if self.matches(n))
        self.update_counts()

    def flush(self) -> None:
        """Redraw the cells that changed since the last tick: dirty rows, and running rows (rate, ETA)."""
        self.app.drain_batches()
        model = self.app.model
        names = model.dirty | {n for n, s in model.states.items() if s.status in ("running", "stopping")}
        model.dirty = set()
        if names:
            now = self.app.clock()
            with self.app.batch_update():
                self.table.patch((n, ExportsTable.cells(model[n], now)) for n in names)
            self.update_counts()

    def update_counts(self) -> None:
        model = self.app.model
        parts = [self.app.config.path.name, f"{len(model.states)} exports"]
        for status in ("running", "queued", "failed", "refused"):
            if n := model.count(status):
                parts.append(f"{n} {status}")
        if self.filter_text:
            parts.append(f"filter “{self.filter_text}”: {self.table.row_count} shown")
        text = " · ".join(parts)
        if self.app.sub_title != text:
            self.app.sub_title = text

    def selected_export(self) -> str | None:
        return self.table.selected_key()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_detail(event.row_key.value)

    # -- filter --------------------------------------------------------------------------------------------------
    def show_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._debounce:
            self._debounce.stop()
        self._debounce = self.set_timer(0.15, lambda: self.apply_filter(event.value))

    def apply_filter(self, text: str) -> None:
        text = text.strip()
        if text != self.filter_text:
            self.filter_text = text
            self.show_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.apply_filter(event.value)
        if not self.filter_text:
            self.query_one("#filter").display = False
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.apply_filter("")
        self.table.focus()
