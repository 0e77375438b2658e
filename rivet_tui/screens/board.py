"""Progression board (ADR-0008): committed vs verified per export, the lag between them, the last reconcile."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from rivet_tui.bridge import boundary, clock_text, lag, parse_time
from rivet_tui.widgets.tables import DiffTable


def short_stamp(value) -> str:
    dt = parse_time(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


class BoardTable(DiffTable):
    COLUMNS = (("name", "Export", 22, "left"), ("strategy", "Strategy", 11, "left"),
               ("committed", "Committed", 19, "left"), ("committed_at", "Committed at (UTC)", 19, "left"),
               ("verified", "Verified", 19, "left"), ("verified_at", "Verified at (UTC)", 19, "left"),
               ("lag", "Lag", 12, "left"), ("reconcile", "Last reconcile", 18, "left"))

    def styled(self, key: str, value: str) -> Text:
        text = super().styled(key, value)
        if key == "name":
            text.stylize("bold")
        elif key == "lag":
            text.stylize("green" if value == "in sync" else "dim" if value in ("-", "n/a") else "yellow")
        elif key == "reconcile" and value != "-":
            text.stylize("green" if value.startswith("match") else "bold red")
        elif key == "verified" and value != "-":
            text.stylize("green")
        return text

    @staticmethod
    def cells(name: str, row: dict, reconcile: dict | None) -> tuple[str, ...]:
        rec = "-"
        if reconcile:
            rec = f"{reconcile.get('status', '?')} {clock_text(reconcile.get('at'))}"
        return (name, row.get("last_committed_strategy") or "-",
                boundary(row.get("last_committed_strategy"), row.get("last_committed_cursor"),
                         row.get("last_committed_chunk_index")),
                short_stamp(row.get("last_committed_at")),
                boundary(row.get("last_verified_strategy"), row.get("last_verified_cursor"),
                         row.get("last_verified_chunk_index")),
                short_stamp(row.get("last_verified_at")), lag(row), rec)


class BoardScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("committed: written and recorded · verified: a reconcile matched every chunk's source count · "
                     "advisory only · c reconciles the selected export", id="board-intro")
        yield BoardTable(id="board")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "rivet · progression"
        self._version = self.app.progression_version
        self.query_one(BoardTable).replace(self.rows())
        self.query_one(BoardTable).focus()
        self.set_interval(0.5, self.refresh_board)

    def rows(self):
        app = self.app
        for name, state in app.model.states.items():
            yield name, BoardTable.cells(name, app.progression_rows.get(name, {}), state.last_reconcile)

    def refresh_board(self) -> None:
        if self._version == self.app.progression_version:
            return
        self._version = self.app.progression_version
        with self.app.batch_update():
            self.query_one(BoardTable).patch(self.rows())

    def selected_export(self) -> str | None:
        return self.query_one(BoardTable).selected_key()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_detail(event.row_key.value)
