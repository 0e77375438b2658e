"""Headless front end: rich progress on stderr while exports run, a summary block after, JSON on stdout."""
from __future__ import annotations

import json
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from engine import events as ev
from engine.runner import ExportResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_count(n: float) -> str:
    return f"{n:,.0f}"


class HeadlessProgress:
    """Consumes engine events (from worker threads) and draws one progress line per export on stderr."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]:<20}"), BarColumn(bar_width=24),
            TextColumn("{task.fields[chunks]}"), TextColumn("{task.fields[rows]:>12} rows"),
            TextColumn("{task.fields[rate]:>12}/s"), TextColumn("{task.fields[bytes]:>10}"),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
            console=self.console, transient=False, refresh_per_second=4)
        self._tasks: dict[str, TaskID] = {}
        self._stats: dict[str, dict] = {}
        self._lock = threading.Lock()

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def _refresh(self, name: str, **kw) -> None:
        s = self._stats[name]
        elapsed = max(time.monotonic() - s["t0"], 1e-6)
        chunks = f"{s['chunks_done']}/{s['chunks_total']} chunks" if s["chunks_total"] else ""
        total = s["chunks_total"] or s["estimate"] or None
        done = s["chunks_done"] if s["chunks_total"] else s["rows"]
        self.progress.update(self._tasks[name], total=total, completed=min(done, total) if total else done,
                             rows=human_count(s["rows"]), rate=human_count(s["rows"] / elapsed),
                             bytes=human_bytes(s["bytes"]), chunks=chunks, **kw)

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            name = event.export
            if isinstance(event, ev.ExportStarted):
                self._stats[name] = {"t0": time.monotonic(), "rows": 0, "bytes": 0, "estimate": event.rows_estimate,
                                     "chunks_total": (event.chunks_total or 0), "chunks_done": event.chunks_done}
                if name not in self._tasks:
                    self._tasks[name] = self.progress.add_task(name, total=None, name=name, rows="0", rate="0",
                                                               bytes="0 B", chunks="", status="running")
                self._refresh(name, status="running")
            elif name not in self._stats:
                if isinstance(event, ev.ExportFinished) and event.error:
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
                colour = {"succeeded": "green", "skipped": "cyan"}.get(event.status, "red")
                self._refresh(name, status=f"[{colour}]{event.status}[/]")


def print_summary(console: Console, results: list[ExportResult], elapsed_s: float, json_errors: bool = False) -> None:
    table = Table(title=f"rivet run — {len(results)} export(s) in {elapsed_s:.1f}s", title_justify="left",
                  show_edge=False)
    for col in ("export", "status", "rows", "files", "bytes", "time", "run id"):
        table.add_column(col, justify="right" if col in ("rows", "files", "bytes", "time") else "left")
    for r in results:
        colour = {"succeeded": "green", "skipped": "cyan"}.get(r.status, "red")
        table.add_row(r.name, f"[{colour}]{r.status}[/]", human_count(r.rows), str(r.files), human_bytes(r.bytes),
                      f"{r.duration_ms / 1000:.1f}s", r.run_id or "-")
    console.print(table)
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
        if d.strategy == "chunked":
            console.print(f"  chunks  [green]+{d.chunks_new} new[/]  [yellow]~{d.chunks_redo} to redo[/]  "
                          f"[dim]={d.chunks_done} done[/]", highlight=False)
            for c in d.chunk_ranges[:20]:
                mark, colour = {"new": ("+", "green"), "redo": ("~", "yellow"), "done": ("=", "dim")}[c["state"]]
                console.print(Text(f"    {mark} chunk {c['index']}: {c['lo']} .. {c['hi']}", style=colour),
                              highlight=False)
            if len(d.chunk_ranges) > 20:
                console.print(f"    … {len(d.chunk_ranges) - 20} more", highlight=False)
        if d.rows_estimate is not None:
            console.print(f"  rows    ~{d.rows_estimate:,}", highlight=False)
        for change in d.schema_changes:
            colour = {"+": "green", "-": "red"}.get(change[:1], "yellow")
            console.print(Text.assemble("  schema  ", (change, colour)), highlight=False)
        for w in d.warnings:
            console.print(Text(f"  ! {w}", style="yellow"), highlight=False)
