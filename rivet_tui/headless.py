"""Headless front end: rich progress on stderr while exports run, a summary block after, JSON on stdout."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.cells import cell_len
from rich.text import Text

from engine import events as ev
from engine.run.runner import ExportResult
from rivet_tui.format import chunk_bounds, human_bytes, human_count


def human_duration(ms: float) -> str:
    """An export's duration, one format everywhere (the progress line and the summary table)."""
    return f"{ms / 1000:.1f}s"


HEARTBEAT_S = 30.0


def heartbeat_interval() -> float:
    """Seconds between status lines when stderr is not a terminal: env RIVET_HEARTBEAT_S, else 30."""
    raw = os.environ.get("RIVET_HEARTBEAT_S")
    try:
        value = float(raw) if raw else HEARTBEAT_S
    except ValueError:
        value = HEARTBEAT_S
    return value if value > 0 else HEARTBEAT_S


class DurationColumn(ProgressColumn):
    """While an export runs, the time since it started; once finished, the engine's own duration (the number the
    summary table shows), so the two never disagree."""

    def render(self, task: Task) -> Text:
        ms = task.fields.get("duration_ms")
        if ms is None:
            t0 = task.fields.get("t0")
            ms = (time.monotonic() - t0) * 1000 if t0 is not None else 0
        return Text(human_duration(ms), style="progress.elapsed")


class HeadlessProgress:
    """Consumes engine events (from worker threads) and draws one progress line per export on stderr.

    Off a terminal (CI logs, cron) rich draws nothing until the end, so a run would be silent for minutes: there
    `start_line` is printed at once and a heartbeat line every `heartbeat_s` names the running exports and their
    rows so far, and each export gets one line when it ends (a live table redrawn for every event would cost
    O(exports²) rendering that nobody sees). `json_errors`: errors are left to the JSON line print_summary writes,
    never printed as text."""

    def __init__(self, console: Console | None = None, *, start_line: str | None = None,
                 heartbeat_s: float | None = None, json_errors: bool = False):
        self.console = console or Console(stderr=True)
        self.start_line = start_line
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else heartbeat_interval()
        self.json_errors = json_errors
        self._t0 = time.monotonic()
        self._finished: set[str] = set()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]:<20}"), BarColumn(bar_width=24),
            TextColumn("{task.fields[chunks]}"), TextColumn("{task.fields[rows]:>12} rows"),
            TextColumn("{task.fields[rate]:>12}/s"), TextColumn("{task.fields[bytes]:>10}"),
            TextColumn("{task.fields[status]}"), DurationColumn(),
            console=self.console, transient=False, refresh_per_second=4)
        self._live = self.console.is_terminal
        self._tasks: dict[str, TaskID] = {}
        self._stats: dict[str, dict] = {}
        self._lock = threading.Lock()

    def __enter__(self):
        self._t0 = time.monotonic()
        if not self.console.is_terminal:
            if self.start_line:
                self.console.print(self.start_line, markup=False, highlight=False)
            self._beat = threading.Thread(target=self._heartbeat, name="rivet-heartbeat", daemon=True)
            self._beat.start()
        else:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._live:
            self.progress.stop()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.console.print(self.heartbeat_line(), markup=False, highlight=False, soft_wrap=True)

    def heartbeat_line(self) -> str:
        """`… 1m30s: running orders 12,345 rows (3/10 chunks), events 0 rows; 1 finished`."""
        with self._lock:
            running = []
            for name, s in self._stats.items():
                if name in self._finished:
                    continue
                chunks = f" ({s['chunks_done']}/{s['chunks_total']} chunks)" if s["chunks_total"] else ""
                running.append(f"{name} {human_count(s['rows'])} rows{chunks}")
            finished = len(self._finished)
        elapsed = int(time.monotonic() - self._t0)
        clock = f"{elapsed // 60}m{elapsed % 60:02d}s" if elapsed >= 60 else f"{elapsed}s"
        what = "running " + ", ".join(running) if running else "no export running yet"
        return f"… {clock}: {what}; {finished} finished"

    def _refresh(self, name: str, **kw) -> None:
        s = self._stats[name]
        elapsed = max(time.monotonic() - s["t0"], 1e-6)
        chunks = f"{s['chunks_done']}/{s['chunks_total']} chunks" if s["chunks_total"] else ""
        if not self._live:
            if kw.get("duration_ms") is not None:     # the export ended: its one line in the log
                self.console.print(f"{name:<20} {chunks + ' ' if chunks else ''}{human_count(s['rows']):>12} rows "
                                   f"{human_count(s['rows'] / elapsed):>12}/s {human_bytes(s['bytes']):>10} "
                                   f"{kw['status']} {human_duration(kw['duration_ms'])}", highlight=False)
            return
        total = s["chunks_total"] or s["estimate"] or None
        done = s["chunks_done"] if s["chunks_total"] else s["rows"]
        self.progress.update(self._tasks[name], total=total, completed=min(done, total) if total else done,
                             rows=human_count(s["rows"]), rate=human_count(s["rows"] / elapsed),
                             bytes=human_bytes(s["bytes"]), chunks=chunks, **kw)

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            name = event.export
            if isinstance(event, ev.ExportStarted):
                self._finished.discard(name)
                self._stats[name] = {"t0": time.monotonic(), "rows": 0, "bytes": 0, "estimate": event.rows_estimate,
                                     "chunks_total": (event.chunks_total or 0), "chunks_done": event.chunks_done}
                if name not in self._tasks and self._live:
                    self._tasks[name] = self.progress.add_task(name, total=None, name=name, rows="0", rate="0",
                                                               bytes="0 B", chunks="", status="running")
                self._refresh(name, status="running", t0=self._stats[name]["t0"], duration_ms=None)
            elif name not in self._stats:
                if isinstance(event, ev.ExportFinished):
                    self._finished.add(name)
                if isinstance(event, ev.ExportFinished) and event.error and not self.json_errors:
                    self.console.print(Text.assemble(("✗", "red"), f" {name}: error[{event.error['code']}]: "
                                                 f"{event.error['error']}"), highlight=False)
                return
            elif isinstance(event, ev.BatchWritten):
                self._stats[name]["rows"] += event.rows
                self._stats[name]["bytes"] += event.bytes
                self._refresh(name)
            elif isinstance(event, ev.ChunkFinished) and event.status == "completed":
                self._stats[name]["chunks_done"] += 1
                self._refresh(name)
            elif isinstance(event, ev.Retrying):
                self.console.print(Text.assemble(("↻", "yellow"), f" {name}: retry {event.attempt} in "
                                                 f"{event.delay_s:.1f}s: {event.error}"), highlight=False)
            elif isinstance(event, ev.Warned):
                self.console.print(Text.assemble(("!", "yellow"), f" {name}: {event.message}"), highlight=False)
            elif isinstance(event, ev.ExportFinished):
                s = self._stats[name]
                s["rows"], s["bytes"] = event.rows, event.bytes
                self._finished.add(name)
                colour = status_colour(event.status)
                self._refresh(name, status=f"[{colour}]{event.status}[/]", duration_ms=event.duration_ms)


def status_colour(status: str) -> str:
    return {"succeeded": "green", "skipped": "cyan"}.get(status, "red")


_SUMMARY_COLUMNS = ("export", "status", "rows", "files", "bytes", "time", "run id")
_RIGHT_ALIGNED = {2, 3, 4, 5}


def summary_table(results: list[ExportResult], elapsed_s: float) -> Text:
    """The run's summary, one line per export, laid out like a rich Table without edges. Formatted here because a
    rich Table measures every cell: 0.15-0.2 s for 200 exports, paid after the last export has finished."""
    rows = [(r.name, r.status, human_count(r.rows), str(r.files), human_bytes(r.bytes), human_duration(r.duration_ms),
             r.run_id or "-") for r in results]
    widths = [max([cell_len(h)] + [cell_len(row[i]) for row in rows]) for i, h in enumerate(_SUMMARY_COLUMNS)]

    def cell(i: int, value: str) -> str:
        pad = " " * (widths[i] - cell_len(value))
        return f" {pad}{value} " if i in _RIGHT_ALIGNED else f" {value}{pad} "

    out = Text()
    out.append(f"rivet run — {len(results)} export(s) in {elapsed_s:.1f}s\n", style="italic")
    out.append("┃".join(cell(i, h) for i, h in enumerate(_SUMMARY_COLUMNS)) + "\n", style="bold")
    out.append("╇".join("━" * (w + 2) for w in widths))
    for r, row in zip(results, rows):
        out.append("\n" + cell(0, row[0]) + "│")
        out.append(cell(1, row[1]), style=status_colour(r.status))
        out.append("│" + "│".join(cell(i, v) for i, v in enumerate(row) if i > 1))
    return out


def print_summary(console: Console, results: list[ExportResult], elapsed_s: float, json_errors: bool = False) -> None:
    console.print(summary_table(results, elapsed_s), highlight=False, soft_wrap=True)
    for r in results:
        for w in r.warnings:
            console.print(Text.assemble(("warning", "yellow"), f" {r.name}: {w}"), highlight=False)
        if r.error and json_errors:
            sys.stderr.write(r.error.to_json() + "\n")
        elif r.error:   # messages and hints may hold [brackets]: never let rich read them as markup
            console.print(Text.assemble(("error", "red"), f"[{r.error.code}]: {r.name}: {r.error.message}"),
                          highlight=False)
            if r.error.hint:
                console.print(f"  hint: {r.error.hint}", markup=False, highlight=False)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def render_diff(console: Console, diffs) -> None:
    """A plan's diff, coloured like a diff: + new, ~ redo, = done, ! warnings."""
    for d in diffs:
        console.print(f"[bold]{d.export}[/] ({d.strategy})" + ("  [cyan]first run[/]" if d.first_run else ""),
                      highlight=False)
        if d.strategy == "incremental":
            frm = d.cursor_from if d.cursor_from is not None else "first run"
            console.print(Text.assemble("  cursor  ", (str(frm), "red"), " → ",
                                        (str(d.cursor_to if d.cursor_to is not None else "-"), "green")),
                          highlight=False)
            if getattr(d, "settle_horizon", None) is not None:
                console.print(f"  settle  rows after {d.settle_horizon} (source clock) held back", highlight=False)
        if d.strategy == "chunked":
            unit = "pages" if d.keyset else "chunks"
            console.print(f"  {unit:<6}  [green]+{d.chunks_new} new[/]  [yellow]~{d.chunks_redo} to redo[/]  "
                          f"[dim]={d.chunks_done} done[/]", highlight=False)
            for c in d.chunk_ranges[:20]:
                mark, colour = {"new": ("+", "green"), "redo": ("~", "yellow"), "done": ("=", "dim")}[c["state"]]
                console.print(Text(f"    {mark} {unit[:-1]} {c['index']}: {chunk_bounds(c, d.keyset)}", style=colour),
                              highlight=False)
            if len(d.chunk_ranges) > 20:
                console.print(f"    … {len(d.chunk_ranges) - 20} more", highlight=False)
        if d.rows_estimate is not None:
            console.print(f"  rows    ~{d.rows_estimate:,}", highlight=False)
        for line in d.layout:
            console.print(Text(f"  {line}"), highlight=False)
        for change in d.schema_changes:
            colour = {"+": "green", "-": "red"}.get(change[:1], "yellow")
            console.print(Text.assemble("  schema  ", (change, colour)), highlight=False)
        for w in d.warnings:
            console.print(Text(f"  ! {w}", style="yellow"), highlight=False)


def save_run_report(console: Console, state_path, results: list[ExportResult], started, exit_code: int,
                    summary_output=None, session: str | None = None):
    """Run reports (docs/guardrails.md): `.rivet/runs/<session>/summary.json` + `summary.md` beside the state file,
    and the JSON at `summary_output` too. A report that cannot be written is a warning: the run's outcome stands."""
    from datetime import datetime, timezone
    from pathlib import Path

    from engine import guardrails
    finished = datetime.now(timezone.utc)
    summary = guardrails.run_summary(session or guardrails.session_id(started), started, finished,
                                     [r.to_dict() for r in results], int(exit_code))
    try:
        return guardrails.write_run_report(Path(state_path), summary,
                                           Path(summary_output) if summary_output else None)
    except OSError as exc:
        console.print(f"warning: could not write the run report: {exc.strerror or exc}", markup=False,
                      highlight=False)
        return None
