"""`?`: every key, as currently mapped (defaults overridden by [tui.keys])."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from rivet_tui.keys import KEYS

FIXED = (("escape", "Back / close / clear the filter"),
         ("ctrl+p", "Command palette: every action, run / open the detail or history of any export"),
         ("up down pgup pgdn", "Move the selection (ctrl+home / ctrl+end: first / last row)"),
         ("left right", "Scroll sideways (the export name stays)"),
         ("mouse", "Click a row to select it, a footer key to press it"))


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "app.pop_screen", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("Keys — remap any of the ids in [tui.keys] of rivet.toml, e.g.  run = \"ctrl+r\"",
                         id="help-title", markup=False)
            yield DataTable(id="help-keys", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Key", width=18)
        table.add_column("Id", width=16)
        table.add_column("What it does", width=72)
        for k in KEYS:
            table.add_row(Text(self.app.key_of(k.id), style="bold"), k.id, Text(k.help))
        for key, what in FIXED:
            table.add_row(Text(key, style="bold"), "", what)
