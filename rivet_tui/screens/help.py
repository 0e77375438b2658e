"""`?`: every key, as currently mapped (defaults overridden by [tui.keys])."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

FIXED = (("escape", "Back / close / clear the filter"), ("ctrl+p", "Command palette: every action, run or open any export"),
         ("up down pgup pgdn", "Move the selection (ctrl+home / ctrl+end: first / last row)"), ("mouse", "Click a row to select it, a footer key to press it"))


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "app.pop_screen", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static("Keys — remap any of the ids in [tui.keys] of rivet.toml, e.g.  run = \"ctrl+r\"",
                         id="help-title", markup=False)
            yield DataTable(id="help-keys", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        from rivet_tui.app import KEYS
        table = self.query_one(DataTable)
        table.add_column("Key", width=18)
        table.add_column("Id", width=10)
        table.add_column("What it does", width=78)
        keymap = self.app.keymap
        for k in KEYS:
            keys = keymap.get(k.id, k.key)
            shown = " ".join(self.app.get_key_display(Binding(key.strip(), "")) for key in keys.split(","))
            what = Text(k.help.replace("N at a time", f"{self.app.parallel} at a time"))
            if k.needs and k.needs.resolve() is None:
                what.append("  (not available yet)", style="dim italic")
            table.add_row(Text(shown, style="bold"), k.id, what)
        for key, what in FIXED:
            table.add_row(Text(key, style="bold"), "", what)
