"""Progression board: committed vs verified per export, the lag between them, the last reconcile (docs/tui.md)."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from rivet_tui.format import boundary, clock_text, lag, stamp_text
from rivet_tui.screens.base import RivetScreen
from rivet_tui.widgets.tables import Column, DiffTable

BOARD_COLUMNS = (
    Column("name", "Export", 22), Column("strategy", "Strategy", 11), Column("committed", "Committed", 19),
    Column("committed_at", "Committed at (UTC)", 19), Column("verified", "Verified", 19),
    Column("verified_at", "Verified at (UTC)", 19), Column("lag", "Lag", 12), Column("reconcile", "Last reconcile", 18),
)


class BoardTable(DiffTable):
    def __init__(self, **kw) -> None:
        super().__init__(BOARD_COLUMNS, fixed_columns=1, **kw)

    def styled(self, column: Column, value: str) -> Text:
        text = super().styled(column, value)
        key, mono = column.key, self.app.no_color
        if key == "name":
            text.stylize("bold")
        elif key == "lag" and not mono:
            text.stylize("green" if value == "in sync" else "dim" if value in ("-", "n/a") else "yellow")
        elif key == "reconcile" and value != "-":
            text.stylize("" if value.startswith("match") else "bold" if mono else "bold red")
        elif key == "verified" and value != "-" and not mono:
            text.stylize("green")
        return text

    @staticmethod
    def cells(name: str, row: dict, reconcile: dict | None) -> tuple[str, ...]:
        rec = "-"
        if reconcile:
            rec = f"{reconcile.get('status') or '?'} {clock_text(reconcile.get('at'))}"
        return (name, row.get("last_committed_strategy") or "-",
                boundary(row.get("last_committed_strategy"), row.get("last_committed_cursor"),
                         row.get("last_committed_chunk_index")),
                stamp_text(row.get("last_committed_at")),
                boundary(row.get("last_verified_strategy"), row.get("last_verified_cursor"),
                         row.get("last_verified_chunk_index")),
                stamp_text(row.get("last_verified_at")), lag(row), rec)


class BoardScreen(RivetScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("committed: written and recorded · verified: a reconcile matched every chunk's source count · "
                     "advisory only · c reconciles the selected export", id="board-intro")
        yield BoardTable(id="board")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "rivet · progression"
        self._version = self.app.progression_version
        self.query_one(BoardTable).replace(self.rows())
        self.query_one(BoardTable).focus()

    def rows(self):
        app = self.app
        for name, state in app.model.states.items():
            yield name, BoardTable.cells(name, app.progression_rows.get(name, {}), state.last_reconcile)

    def refresh_view(self) -> None:
        if self._version == self.app.progression_version:
            return
        self._version = self.app.progression_version
        with self.app.batch_update():
            self.query_one(BoardTable).patch(self.rows())

    def selected_export(self) -> str | None:
        return self.query_one(BoardTable).selected_key()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_detail(event.row_key.value)
