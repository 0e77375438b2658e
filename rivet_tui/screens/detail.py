"""Run detail: the export's journal as it happens (chunks, parts, retries, errors with hints) and its throughput."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, RichLog, Sparkline, Static

from rivet_tui.bridge import (JournalLine, clock_text, error_text, human_bytes, human_count, human_duration,
                              journal_line, parse_time)
from rivet_tui.widgets.tables import STATUS_STYLE, progress_text

LEVEL_STYLE = {"error": "bold red", "warn": "yellow", "info": ""}
HISTORY_RUNS = 30
JOURNAL_LIMIT = 400


def render_line(line: JournalLine) -> Text:
    text = Text(no_wrap=False)
    text.append(clock_text(line.at), style="dim")
    text.append(f"  {line.kind:<14} ", style="bold " + LEVEL_STYLE[line.level] if line.level != "info" else "bold")
    text.append(line.text, style=LEVEL_STYLE[line.level])
    return text


class DetailScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, export: str) -> None:
        super().__init__()
        self.export = export
        self._shown = 0          # session journal lines written so far (ExportState.journal_total)
        self._ready = False
        self._history: list[float] = []

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(id="summary")
        yield Static(id="errors")
        with Horizontal(id="throughput"):
            yield Label("rows/s", id="spark-label")
            yield Sparkline([], id="spark")
        yield RichLog(id="journal", wrap=True, markup=False, highlight=False, max_lines=5000, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"rivet · {self.export}"
        self.tick()
        self.app.background(self._load, name=f"journal of {self.export}", done=self._loaded)
        self.set_interval(0.25, self.tick)

    def selected_export(self) -> str:
        return self.export

    # -- stored history (a worker) ---------------------------------------------------------------------------------
    def _load(self) -> tuple[list[dict], list[dict]]:
        store = self.app.store
        return store.journal_for(self.export, limit=JOURNAL_LIMIT), store.metrics(self.export, last=HISTORY_RUNS)

    def _loaded(self, result: tuple[list[dict], list[dict]]) -> None:
        journal, runs = result
        state = self.app.model[self.export]
        log = self.query_one(RichLog)
        # Runs of this session are shown from memory (live, in order); earlier runs from the stored journal.
        # A run that failed before it got a run id is journaled under "-": tell those apart by time.
        started = self.app.session_started
        earlier = [r for r in journal if r.get("run_id") not in state.session_runs
                   and not (r.get("run_id") == "-" and (parse_time(r.get("at")) or started) >= started)]
        if earlier:
            log.write(Text(f"— stored journal: last {len(earlier)} events before this session —", style="dim"))
        for row in earlier:
            line = journal_line(row["event"], row.get("payload") or {}, row.get("at"))
            if line:
                log.write(render_line(line), expand=True)
        self._history = [r["rows"] / (r["duration_ms"] / 1000) for r in reversed(runs)
                         if r.get("rows") and r.get("duration_ms")]
        self._ready = True
        self.tick()

    # -- live ----------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        app = self.app
        app.drain_batches()
        state = app.model[self.export]
        now = app.clock()
        summary = self.query_one("#summary", Static)
        head = Text()
        head.append(f"{state.name}", style="bold")
        head.append(f"  {state.mode}  ")
        head.append(state.status, style=STATUS_STYLE.get(state.status, ""))
        if state.run_id:
            head.append(f"  run {state.run_id}", style="dim")
        rate = state.rate(now)
        head.append("\n")
        head.append(f"{progress_text(state, 20) or 'no progress yet':<32}")
        head.append(f"rows {human_count(state.rows):>12}   rows/s {human_count(rate) if rate else '-':>9}   "
                    f"bytes {human_bytes(state.bytes):>9}   files {state.files:>4}   ETA {human_duration(state.eta(now))}")
        head.append(f"\ncommitted {state.committed}   verified {state.verified}")
        for what, report in (("reconcile", state.last_reconcile), ("validate", state.last_validate)):
            if report:
                head.append(f"   last {what}: {report.get('status', 'ok' if report.get('ok') else '?')} "
                            f"at {clock_text(report.get('at'))}")
        self._set(summary, head)

        errors = self.query_one("#errors", Static)
        errors.display = bool(state.error)
        if state.error:
            self._set(errors, Text(error_text(state.error), style="bold red"))

        if self._ready and state.journal_total > self._shown:
            log = self.query_one(RichLog)
            new = min(state.journal_total - self._shown, len(state.journal))
            for line in list(state.journal)[-new:]:
                log.write(render_line(line), expand=True)
            self._shown = state.journal_total

        spark = self.query_one(Sparkline)
        label = self.query_one("#spark-label", Label)
        if state.per_second:
            spark.data = state.sparkline(now)
            self._set(label, f"rows/s, 60 s, peak {human_count(max(spark.data))}")
        elif self._history:
            spark.data = self._history
            self._set(label, f"rows/s of the last {len(self._history)} runs")  # oldest left
        else:
            self._set(label, "rows/s: no runs yet")

    def _set(self, widget: Static, content: Text | str) -> None:
        """Update only when the text changed (each update costs a layout pass)."""
        key = content.plain if isinstance(content, Text) else content
        if getattr(widget, "_rivet_shown", None) != key:
            widget._rivet_shown = key  # type: ignore[attr-defined]
            widget.update(content)
