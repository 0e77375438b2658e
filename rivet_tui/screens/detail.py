"""Run detail: the export's journal in time order (chunks, parts, retries, errors with hints) and its throughput."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Label, RichLog, Sparkline, Static

from rivet_tui import messages as msg
from rivet_tui.format import clock_text, human_bytes, human_count, human_duration, parse_time
from rivet_tui.journal import JournalLine, error_text, journal_line
from rivet_tui.screens.base import RivetScreen
from rivet_tui.viewmodel import RATE_WINDOW_S, SPARK_SECONDS, status_style, status_text

LEVEL_STYLE = {"error": "bold red", "warn": "yellow", "info": ""}
LEVEL_MONO = {"error": "bold", "warn": "bold", "info": ""}
JOURNAL_LIMIT = 400
HISTORY_RUNS = 30


def render_line(line: JournalLine, no_color: bool = False) -> Text:
    style = (LEVEL_MONO if no_color else LEVEL_STYLE)[line.level]
    text = Text(no_wrap=False)
    text.append(clock_text(line.at), style="" if no_color else "dim")
    text.append(f"  {line.kind:<14} ", style=f"bold {style}".strip())
    text.append(line.text, style=style)
    return text


class DetailScreen(RivetScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, export: str) -> None:
        super().__init__()
        self.export = export
        self._shown = 0                       # session journal lines taken so far (ExportState.journal_total)
        self._stored: list[JournalLine] = []  # journal lines of runs before this session
        self._written: list[JournalLine] = []  # session lines on screen, in time order
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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = f"rivet · {self.export}"
        self.refresh_view()
        self.app.start_job(msg.Job(f"journal of {self.export}", self.export), self._load, target=self)

    def selected_export(self) -> str:
        return self.export

    # -- stored history (a worker) ---------------------------------------------------------------------------------
    def _load(self, job: msg.Job) -> msg.JournalLoaded:
        store = self.app.store
        return msg.JournalLoaded(job, store.journal_for(self.export, limit=JOURNAL_LIMIT),
                                 store.metrics(self.export, last=HISTORY_RUNS))

    def on_journal_loaded(self, message: msg.JournalLoaded) -> None:
        state = self.app.model[self.export]
        # Runs of this session are shown from memory (live); earlier runs from the stored journal.
        # A run that failed before it got a run id is journaled under "-": tell those apart by time.
        started = self.app.session_started
        for row in message.journal:
            if row.get("run_id") in state.session_runs or \
                    (row.get("run_id") == "-" and (parse_time(row.get("at")) or started) >= started):
                continue
            line = journal_line(row["event"], row.get("payload") or {}, row.get("at"))
            if line:
                self._stored.append(line)
        self._stored.sort(key=lambda line: line.order)
        self._history = [r["rows"] / (r["duration_ms"] / 1000) for r in reversed(message.runs)
                         if r.get("rows") and r.get("duration_ms")]
        self._ready = True
        self._rewrite()
        self.refresh_view()

    # -- journal in time order ---------------------------------------------------------------------------------
    def _rewrite(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        if self._stored:
            log.write(Text(f"— stored journal: last {len(self._stored)} events before this session —", style="dim"))
        for line in self._stored + self._written:
            log.write(render_line(line, self.app.no_color), expand=True)

    def _take_new_lines(self) -> None:
        """Lines logged since the last tick, placed by their time: appended when they come after what is on
        screen (the usual case), else the journal is rewritten in order (events of parallel chunks cross)."""
        state = self.app.model[self.export]
        if state.journal_total <= self._shown:
            return
        new = min(state.journal_total - self._shown, len(state.journal))
        lines = sorted(list(state.journal)[-new:], key=lambda line: line.order)
        self._shown = state.journal_total
        if not self._ready:
            self._written = sorted(self._written + lines, key=lambda line: line.order)
            return
        in_order = not self._written or lines[0].order >= self._written[-1].order
        self._written = sorted(self._written + lines, key=lambda line: line.order)
        if in_order:
            log = self.query_one(RichLog)
            for line in lines:
                log.write(render_line(line, self.app.no_color), expand=True)
        else:
            self._rewrite()

    # -- live ----------------------------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        app = self.app
        state = app.model[self.export]
        now = app.clock()
        mono = app.no_color
        head = Text()
        head.append(state.name, style="bold")
        head.append(f"  {state.mode}  ")
        head.append(status_text(state.status), style=status_style(state.status, mono))
        if state.status in ("running", "stopping", "queued"):
            head.append(f"  phase: {state.phase_text()}")
        if state.run_id:
            head.append(f"  run {state.run_id}", style="" if mono else "dim")
        rate = state.rate(now)
        head.append("\n")
        head.append(f"{state.progress(now, 20) or 'no progress yet':<32}")
        head.append(f"rows {human_count(state.rows) if state.figures else '-':>12}   "
                    f"rows/s {human_count(rate):>9}   bytes {human_bytes(state.bytes) if state.figures else '-':>9}   "
                    f"files {state.files if state.figures else '-':>4}   ETA {human_duration(state.eta(now))}   "
                    f"time {human_duration(state.elapsed(now))}")
        head.append(f"\ncommitted {state.committed}   verified {state.verified}   destination {state.destination}")
        for what, report in (("reconcile", state.last_reconcile), ("validate", state.last_validate)):
            if report:
                head.append(f"   last {what}: {report.get('status') or '?'} at {clock_text(report.get('at'))}")
        if state.session_runs:   # docs/guardrails.md, "Run reports"
            report = self.app.report_dir / "summary.md"
            if report.is_relative_to(self.app.config.base_dir):   # as the destination column shows paths
                report = report.relative_to(self.app.config.base_dir)
            head.append(f"\nrun report: {report} (written when the console exits)")
        self.show_text(self.query_one("#summary", Static), head)

        errors = self.query_one("#errors", Static)
        errors.display = bool(state.error)
        if state.error:
            self.show_text(errors, Text(error_text(state.error), style="bold" if mono else "bold red"))

        self._take_new_lines()

        spark = self.query_one(Sparkline)
        label = self.query_one("#spark-label", Label)
        if state.per_second:
            spark.data = state.sparkline(now)
            self.show_text(label, f"rows/s over {SPARK_SECONDS} s, each a {RATE_WINDOW_S:.0f} s average; "
                                  f"peak {human_count(max(spark.data))}")
        elif self._history:
            spark.data = self._history
            self.show_text(label, f"rows/s of the last {len(self._history)} runs (oldest left)")
        else:
            self.show_text(label, "rows/s: no runs yet")
