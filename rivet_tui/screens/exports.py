"""The home screen: one row per export (sorted, filtered, columns fitted to the width), a totals line, the session log.

Redrawn at the app's tick by diff: only rows that changed (or run) are recomputed, only changed cells repainted.
"""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Static

from rivet_tui.format import clock_text, human_bytes, human_count, human_duration
from rivet_tui.journal import JournalLine
from rivet_tui.screens.base import RivetScreen
from rivet_tui.viewmodel import FAILED, SORTS, STATUSES, VOLATILE_SORTS, status_style, totals
from rivet_tui.widgets.tables import ExportsTable, export_columns

SORT_ORDER = tuple(SORTS)
VOLATILE_EVERY_S = 2.0
LEVEL_MARK = {"error": "✗", "warn": "!", "info": "·"}


def log_text(line: JournalLine, no_color: bool) -> Text:
    """One session log line: time, mark, export, what happened."""
    style = ("bold" if line.level == "error" else "") if no_color else \
        {"error": "bold red", "warn": "yellow"}.get(line.level, "")
    text = Text(no_wrap=False)
    text.append(f"{clock_text(line.at)} ")
    text.append(f"{LEVEL_MARK[line.level]} {line.export or '-'}: ", style=style)
    text.append(line.text.replace("\n", " · "))
    return text


class ExportsScreen(RivetScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear_filter", "Clear filter", show=False)]
    handles = frozenset({"filter", "sort", "next_failed", "previous_failed", "log"})

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.sort = "status"
        self._debounce: Timer | None = None
        self._sorted_at = 0.0
        self._log_shown = 0
        self._log_opened = False
        self._status_seen: dict[str, str] = {}   # the status each row had when last sorted

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Input(placeholder="filter: part of a name, mode or status · enter keeps it · escape clears",
                    id="filter")
        yield ExportsTable(self.app.size.width, id="exports")
        yield Static(id="no-match")
        yield Static(id="totals")
        yield RichLog(id="session-log", wrap=True, markup=False, highlight=False, max_lines=1000)
        yield Footer(compact=True)

    @property
    def table(self) -> ExportsTable:
        return self.query_one(ExportsTable)

    def on_mount(self) -> None:
        self.query_one("#filter").display = False
        self.query_one("#session-log").add_class("closed")
        self.query_one("#no-match").display = False
        self.show_rows()
        self.table.focus()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def on_resize(self, event: events.Resize) -> None:
        if not self.composed:   # the table is made for the width the app has at compose time
            return
        columns = export_columns(event.size.width)
        if columns != self.table.columns_shown:
            self.table.set_columns(columns)
            self.show_rows()

    # -- rows ----------------------------------------------------------------------------------------------------
    def matches(self, name: str) -> bool:
        if not self.filter_text:
            return True
        s = self.app.model[name]
        q = self.filter_text.lower()
        return q in name.lower() or q == s.mode.lower() or q == s.status.lower()

    def visible_names(self) -> list[str]:
        model = self.app.model
        return model.ordered(self.sort, [n for n in model.names() if self.matches(n)])

    def show_rows(self) -> None:
        model, now = self.app.model, self.app.clock()
        self._status_seen = {n: s.status for n, s in model.states.items()}
        self.table.replace((n, self.table.cells(model[n], now)) for n in self.visible_names())
        self._sorted_at = now
        self.update_lines()

    def refresh_view(self) -> None:
        """Redraw what changed since the last tick: dirty rows, running rows (rate, ETA, spinner); keep the order."""
        model = self.app.model
        names = model.dirty.union(self.app.census[1])
        model.dirty = set()
        now = self.app.clock()
        if names:
            moved = [n for n in names if self._status_seen.get(n) != model[n].status]
            for n in moved:
                self._status_seen[n] = model[n].status
            with self.app.batch_update():
                self.table.patch((n, self.table.cells(model[n], now)) for n in names)
                if self.filter_text and any(self.matches(n) != (n in self.table._cells) for n in moved):
                    self.show_rows()    # a status filter: rows come and go as statuses change
                elif (moved and self.sort in ("status", "last run")) or \
                        (self.sort in VOLATILE_SORTS and now - self._sorted_at >= VOLATILE_EVERY_S):
                    self.table.reorder(self.visible_names())   # sorting 1,000 rows only when the order may change
                    self._sorted_at = now
        self.update_lines()

    def update_lines(self) -> None:
        """The totals line, the filter's count, and new lines of the session log."""
        app, model = self.app, self.app.model
        t = totals(model, app.parallel, len(app.queue), app.census)
        line = Text(no_wrap=True, overflow="ellipsis")
        for status, info in STATUSES.items():
            if n := t.counts.get(status):
                line.append(f"{info.glyph} {n} {status}", style=status_style(status, app.no_color))
                line.append("  ")
        line.append(f"│ Σ {human_count(t.rows)} rows · {human_bytes(t.bytes)} · {human_count(t.rate)} rows/s · "
                    f"ETA {human_duration(t.eta)} │ sort: {self.sort} (s)")
        if self.filter_text:
            line.append(f" │ filter “{self.filter_text}”: {self.table.row_count} of {len(model.states)} shown")
        self.show_text(self.query_one("#totals", Static), line, layout=False)

        no_match = self.query_one("#no-match", Static)
        nothing = bool(self.filter_text) and self.table.row_count == 0
        no_match.display = nothing
        if nothing:
            self.show_text(no_match, Text(f"no match: no export's name contains “{self.filter_text}”, and no mode or "
                                     "status is that word · escape clears the filter"))

        if model.log_total > self._log_shown:
            log = self.query_one("#session-log", RichLog)
            new = list(model.log)[-min(model.log_total - self._log_shown, len(model.log)):]
            self._log_shown = model.log_total
            # wrap at the pane's width even while it is closed (RichLog would use 78 columns for a 0-high pane)
            width = log.content_region.width - 2 if log.content_region.width > 20 else None
            for entry in new:
                log.write(log_text(entry, app.no_color), width=width)
            if not self._log_opened and any(e.level == "error" for e in new):
                self._log_opened = True     # the first error opens the log once; l hides it again
                log.remove_class("closed")

    def selected_export(self) -> str | None:
        return self.table.selected_key()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_detail(event.row_key.value)

    # -- keys of this screen -------------------------------------------------------------------------------------
    def next_sort(self) -> None:
        self.sort = SORT_ORDER[(SORT_ORDER.index(self.sort) + 1) % len(SORT_ORDER)]
        self.table.reorder(self.visible_names())
        self._status_seen = {n: s.status for n, s in self.app.model.states.items()}
        self._sorted_at = self.app.clock()
        self.update_lines()

    def jump_failed(self, step: int) -> None:
        shown = self.table.shown
        failed = [i for i, n in enumerate(shown) if self.app.model[n].status in FAILED]
        if not failed:
            self.app.notify("no failed export in view", timeout=3)
            return
        here = shown.index(self.table.selected_key()) if self.table.selected_key() in shown else -1
        after = [i for i in failed if (i - here) * step > 0]
        target = (after[0] if step > 0 else after[-1]) if after else (failed[0] if step > 0 else failed[-1])
        self.table.move_cursor(row=target, animate=False)

    def toggle_log(self) -> None:
        """Show or hide the session log. Hidden, it keeps its width (height 0), so lines wrap as they will show."""
        self._log_opened = True
        self.query_one("#session-log", RichLog).toggle_class("closed")

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
