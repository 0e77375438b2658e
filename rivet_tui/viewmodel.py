"""What the screens show, per export: status, phase, figures, journal; plus the session log, sorting and totals.

Mutated only on the UI thread (engine events arrive through feed.EventFeed and are applied at the UI tick). Nothing
here decides how an export runs: the engine does; this module keeps what the operator sees, and says which actions
make no sense for an export in its current state.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine import events as ev
from rivet_tui.feed import Batches
from rivet_tui.format import (boundary, clock_text, destination_text, epoch, human_bytes, human_count,
                              human_duration, shown)
from rivet_tui.journal import JournalLine, error_text, journal_line, short_error


@dataclass(frozen=True)
class Status:
    glyph: str
    style: str           # with colour
    mono: str            # NO_COLOR: no colour may carry meaning, and nothing may be dimmed into the background
    rank: int            # default sort: failed and running first


STATUSES: dict[str, Status] = {
    "failed": Status("✗", "bold red", "bold reverse", 0),
    "refused": Status("!", "bold magenta", "bold reverse", 1),
    "running": Status("▶", "bold cyan", "bold", 2),
    "stopping": Status("□", "yellow", "bold", 3),
    "queued": Status("⏸", "yellow", "", 4),
    "stopped": Status("■", "bold yellow", "bold underline", 5),
    "planned": Status("◇", "blue", "", 6),
    "idle": Status("·", "dim", "", 7),
    "skipped": Status("○", "green", "", 8),
    "done": Status("✓", "green", "", 9),
}
BUSY = ("queued", "running", "stopping")
FAILED = ("failed", "refused")
# The engine's word for how a run ended → the status shown. A stop by the user is resumable: never "failed".
STATUS_FROM_ENGINE = {"succeeded": "done", "skipped": "skipped", "failed": "failed", "refused": "refused",
                      "stopped": "stopped"}
# Until the engine reports "stopped" itself, a run ended by Runner.cancel() fails with one of these codes.
STOP_CODES = ("RIVET_RUN_STOPPED", "RIVET_RUN_CANCELLED")

# The phases an export goes through (engine.events.PhaseChanged); "starting" until the engine says more.
PRE_DATA_PHASES = ("queued", "starting", "connecting", "planning")
FINAL_PHASES = ("uploading", "manifest", "committing")
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

RATE_WINDOW_S = 5.0
SPARK_SECONDS = 60
LOG_LINES = 1000


def status_of(engine_status: str, error: dict | None) -> str:
    if error and error.get("code") in STOP_CODES:
        return "stopped"
    return STATUS_FROM_ENGINE.get(engine_status, "failed")


def status_text(status: str) -> str:
    return f"{STATUSES[status].glyph} {status}" if status in STATUSES else shown(status)


def status_style(status: str, no_color: bool) -> str:
    s = STATUSES.get(status)
    return "" if s is None else s.mono if no_color else s.style


@dataclass
class ExportState:
    name: str
    mode: str
    destination: str = "-"
    status: str = "idle"
    phase: str | None = None             # the latest PhaseChanged of this run (None: the engine did not say)
    run_id: str | None = None
    chunks_total: int | None = None
    chunks_done: int = 0
    chunks_resumed: int = 0              # completed by an earlier attempt of this run (not part of this ETA)
    rows_estimate: int | None = None
    rows: int = 0
    bytes: int = 0
    files: int = 0
    figures: bool = False                # rows/bytes/files belong to a run of this session (else "-")
    launched_at: float | None = None     # when this session asked the engine to run it
    started_at: float | None = None      # ExportStarted: planned, about to read
    finished_at: float | None = None
    duration_ms: int | None = None
    last_run_at: float | None = None     # the last run that ended (this session or, at start, the state)
    committed: str = "-"
    verified: str = "-"
    error: dict | None = None
    samples: deque = field(default_factory=lambda: deque(maxlen=64))        # (at, cumulative rows)
    per_second: dict = field(default_factory=dict)                           # epoch second → rows
    journal: deque = field(default_factory=lambda: deque(maxlen=2000))      # JournalLine, this session
    journal_total: int = 0                                                   # lines ever logged (deque rotates)
    session_runs: set = field(default_factory=set)
    last_reconcile: dict | None = None
    last_validate: dict | None = None

    # -- figures -------------------------------------------------------------------------------------------------
    def rate(self, now: float) -> float | None:
        """Rows per second over the last few seconds while running; the run's average after it."""
        if self.status in ("running", "stopping"):
            if len(self.samples) < 2:
                return None
            recent = [s for s in self.samples if s[0] >= now - RATE_WINDOW_S] or [self.samples[-1]]
            t0, r0 = recent[0] if len(recent) > 1 else self.samples[-2]
            t1, r1 = self.samples[-1]
            span = max(now, t1) - t0
            return (r1 - r0) / span if span > 0 else None
        if self.figures and self.duration_ms:
            return self.rows / (self.duration_ms / 1000)
        return None

    def fraction(self) -> float | None:
        if self.chunks_total:
            return min(1.0, self.chunks_done / self.chunks_total)
        if self.rows_estimate:
            return min(1.0, self.rows / self.rows_estimate)
        return None

    def finalizing(self) -> bool:
        """Every row is read (as far as we can tell) but the run has not ended: parts, manifest, state."""
        if self.status not in ("running", "stopping") or self.started_at is None:
            return False
        if self.phase in FINAL_PHASES:
            return True
        frac = self.fraction()
        return frac is not None and frac >= 1.0

    def phase_text(self) -> str:
        if self.status == "queued":
            return "queued"
        if self.finalizing():
            return self.phase if self.phase in FINAL_PHASES else "finalizing"
        if self.phase:
            return self.phase
        return "starting" if self.started_at is None else "reading"

    def eta(self, now: float) -> float | None:
        if self.status != "running" or self.started_at is None or self.finalizing():
            return None
        if self.chunks_total:
            done_here = self.chunks_done - self.chunks_resumed
            if done_here <= 0:
                return None
            return (now - self.started_at) / done_here * (self.chunks_total - self.chunks_done)
        rate = self.rate(now)
        if self.rows_estimate and rate:
            return max(0.0, (self.rows_estimate - self.rows) / rate)
        return None

    def elapsed(self, now: float) -> float | None:
        if self.status in ("running", "stopping"):
            start = self.launched_at or self.started_at
            return None if start is None else max(0.0, now - start)
        return None if self.duration_ms is None else self.duration_ms / 1000

    def stop_point(self) -> str:
        """Where a stop takes this export. The engine stops a read between two batches and before anything is
        committed, so every stop is a matter of seconds."""
        if self.started_at is None:
            return "stops before it reads"
        if self.phase in FINAL_PHASES:
            return "stops before it commits"
        return "stops after the batch in hand"

    def log(self, line: JournalLine) -> None:
        self.journal.append(line)
        self.journal_total += 1

    def sparkline(self, now: float) -> list[float]:
        """Rows per second over the last minute, each point the average of the RATE_WINDOW_S seconds before it:
        a chunk that lands its rows in one batch shows as the throughput it had, not as a spike."""
        end = int(now)
        window = int(RATE_WINDOW_S)
        seconds = range(end - SPARK_SECONDS - window + 2, end + 1)
        counts = [self.per_second.get(s, 0) for s in seconds]
        return [sum(counts[i:i + window]) / window for i in range(len(counts) - window + 1)]

    # -- cells ---------------------------------------------------------------------------------------------------
    def progress(self, now: float, width: int = 8) -> str:
        """A bar where a fraction is known and moving; otherwise a spinner, the phase and the time so far."""
        frac = self.fraction()
        if self.status in ("running", "stopping"):
            phase = self.phase_text()
            if self.status == "stopping" and self.started_at is None:
                phase = "stopping"
            if frac is None or frac <= 0 or frac >= 1 or phase in FINAL_PHASES or phase in PRE_DATA_PHASES:
                spin = SPINNER[int(now * 4) % len(SPINNER)]
                return f"{spin} {phase} {human_duration(self.elapsed(now))}"
            return bar(frac, width) + (self.chunk_count() if self.chunks_total else f" {frac * 100:3.0f}%")
        if self.status in ("done", "failed", "stopped") and self.figures:
            if self.chunks_total:
                return bar(self.chunks_done / self.chunks_total, width) + self.chunk_count()
            if self.status == "done":
                return bar(1.0, width) + " 100%"
        if self.status == "skipped" and self.figures:
            return "no rows"
        return ""


    def chunk_count(self) -> str:
        """Chunks done of this run's chunks, in step with this run's rows; "↻N": N more were done by an earlier
        attempt of the same chunk run (resumed), which the bar includes."""
        if not self.chunks_resumed:
            return f" {self.chunks_done}/{self.chunks_total}"
        return f" {self.chunks_done - self.chunks_resumed}/{self.chunks_total - self.chunks_resumed} ↻{self.chunks_resumed}"


def bar(frac: float, width: int) -> str:
    filled = round(max(0.0, min(1.0, frac)) * width)
    return "█" * filled + "░" * (width - filled)


# -- sorting ---------------------------------------------------------------------------------------------------------

def _last(value: float | None, descending: bool) -> tuple[int, float]:
    """Sort key that puts unknown values last either way."""
    if value is None:
        return (1, 0.0)
    return (0, -value if descending else value)


SORTS: dict[str, Callable[[ExportState, float, int], tuple]] = {
    "status": lambda s, now, i: (STATUSES.get(s.status, STATUSES["idle"]).rank, i),
    "name": lambda s, now, i: (s.name.lower(), i),
    "rows/s": lambda s, now, i: (_last(s.rate(now), True), i),
    "ETA": lambda s, now, i: (_last(s.eta(now), False), i),
    "last run": lambda s, now, i: (_last(s.finished_at or s.last_run_at, True), i),
}
VOLATILE_SORTS = ("rows/s", "ETA")   # change every tick: re-sorted at most every few seconds


# -- actions a state refuses ------------------------------------------------------------------------------------------

def refusal(action: str, s: ExportState) -> str | None:
    """Why `action` makes no sense for this export now (shown to the operator), or None when it may go ahead."""
    busy = s.status in BUSY
    if action == "run" and s.status in ("running", "stopping"):
        return f"{s.name} is already running"
    if action == "plan" and busy:
        return f"{s.name} is {s.status}: plan it when the run has ended (a plan is a diff against the state)"
    if action == "reconcile" and busy:
        return (f"{s.name} is {s.status}: reconcile compares source counts with committed chunks; "
                "run it when the export has ended")
    if action == "validate" and busy:
        return f"{s.name} is {s.status}: its files are being written; validate when the run has ended"
    return None


# -- the model ------------------------------------------------------------------------------------------------------

class ExportModel:
    """Per-export state, in config order, and the session log. `dirty` names the rows to redraw."""

    def __init__(self, exports: Iterable, clock: Callable[[], float] = time.time, base: Path | None = None):
        self.clock = clock
        self.states: dict[str, ExportState] = {
            e.name: ExportState(e.name, e.mode, destination_text(e.destination, base)) for e in exports}
        self.position = {name: i for i, name in enumerate(self.states)}
        self.dirty: set[str] = set(self.states)
        self.log: deque[JournalLine] = deque(maxlen=LOG_LINES)   # warnings and errors of every export
        self.log_total = 0

    def __getitem__(self, name: str) -> ExportState:
        return self.states[name]

    def names(self) -> list[str]:
        return list(self.states)

    def count(self, status: str) -> int:
        return sum(1 for s in self.states.values() if s.status == status)

    def counts(self) -> dict[str, int]:
        return self.census()[0]

    def census(self) -> tuple[dict[str, int], list[str]]:
        """How many exports have each status, and which are running (one pass over every export)."""
        counts: dict[str, int] = {}
        active = []
        for name, s in self.states.items():
            counts[s.status] = counts.get(s.status, 0) + 1
            if s.status in ("running", "stopping"):
                active.append(name)
        return counts, active

    def set_status(self, name: str, status: str) -> None:
        if name in self.states:
            self.states[name].status = status
            self.dirty.add(name)

    def note(self, name: str, kind: str, text: str, level: str = "info", at: float | None = None) -> None:
        """A line in the export's journal; warnings and errors go to the session log too."""
        line = JournalLine(self.clock() if at is None else at, kind, text, level, name)
        if name in self.states:
            self.states[name].log(line)
        if level != "info":
            self.log_line(line)

    def log_line(self, line: JournalLine) -> None:
        self.log.append(line)
        self.log_total += 1

    def ordered(self, sort: str, names: Iterable[str]) -> list[str]:
        now, key = self.clock(), SORTS[sort]
        return sorted(names, key=lambda n: key(self.states[n], now, self.position[n]))

    # -- a run's life in this session ----------------------------------------------------------------------------
    def queue(self, name: str) -> None:
        """Queued for a run: the previous run's figures, phase and error leave the row (the log keeps the error)."""
        s = self.states[name]
        s.status, s.phase, s.run_id, s.error = "queued", None, None, None
        s.rows = s.bytes = s.files = s.chunks_done = s.chunks_resumed = 0
        s.chunks_total = s.rows_estimate = s.launched_at = s.started_at = s.finished_at = s.duration_ms = None
        s.figures = False
        s.samples.clear()
        self.dirty.add(name)

    def launch(self, name: str, why: str) -> None:
        self.queue(name)
        s = self.states[name]
        s.status, s.launched_at = "running", self.clock()
        self.note(name, "Queued", why)

    # -- loading from state --------------------------------------------------------------------------------------
    def load_summary(self, rows: list[dict], last_errors: dict[str, dict]) -> None:
        for r in rows:
            s = self.states.get(r["export_name"])
            if s is None or s.session_runs or s.status != "idle":
                continue
            error = last_errors.get(s.name)
            s.status = status_of(r.get("last_status") or "", error) if r.get("last_status") else "idle"
            s.last_run_at = epoch(r.get("last_run_at"))
            if s.status in FAILED + ("stopped",) and error:
                s.error = error
            self.dirty.add(s.name)

    def load_progression(self, rows: list[dict]) -> None:
        seen = {r["export_name"]: r for r in rows}
        for name, s in self.states.items():
            r = seen.get(name, {})
            committed = boundary(r.get("last_committed_strategy"), r.get("last_committed_cursor"),
                                 r.get("last_committed_chunk_index"))
            verified = boundary(r.get("last_verified_strategy"), r.get("last_verified_cursor"),
                                r.get("last_verified_chunk_index"))
            if (committed, verified) != (s.committed, s.verified):
                s.committed, s.verified = committed, verified
                self.dirty.add(name)

    # -- engine events -------------------------------------------------------------------------------------------
    def apply_all(self, events: list) -> list[ev.ExportFinished]:
        """Apply what the feed drained, in order; returns the runs that ended badly (for a notification)."""
        ended = []
        for e in events:
            if self.apply(e) and isinstance(e, ev.ExportFinished) and e.status not in ("succeeded", "skipped"):
                ended.append(e)
        return ended

    def apply(self, e: ev.Event | Batches) -> bool:
        s = self.states.get(e.export)
        if s is None:
            return False
        if isinstance(e, Batches):
            if e.run_id != s.run_id:
                return False   # a straggler of an older run
            now = self.clock()
            s.rows += e.rows
            s.bytes += e.bytes
            s.samples.append((now, s.rows))
            sec = int(now)
            s.per_second[sec] = s.per_second.get(sec, 0) + e.rows
            if len(s.per_second) > SPARK_SECONDS * 2:
                for old in sorted(s.per_second)[:-SPARK_SECONDS - int(RATE_WINDOW_S)]:
                    del s.per_second[old]
            self.dirty.add(s.name)
            return True
        kind = e.kind
        if kind == "ExportStarted":
            if s.status != "stopping":
                s.status = "running"
            s.run_id, s.error, s.phase = e.run_id, None, None
            s.chunks_total = e.chunks_total   # all windows of the run (the runner counts resumed ones in it)
            s.chunks_done = s.chunks_resumed = e.chunks_done
            s.rows_estimate = e.rows_estimate
            s.rows = s.bytes = s.files = 0
            s.figures = True
            s.started_at, s.finished_at, s.duration_ms = e.at, None, None
            s.launched_at = s.launched_at or e.at
            s.samples.clear()
            s.samples.append((e.at, 0))
            s.session_runs.add(e.run_id)
        elif kind == "ExportFinished":
            s.status = status_of(e.status, e.error)
            s.rows, s.files, s.bytes, s.duration_ms = e.rows, e.files, e.bytes, e.duration_ms
            s.figures = True
            s.finished_at = s.last_run_at = e.at
            s.error, s.phase = e.error, None
            if e.run_id and e.run_id != "-":
                s.run_id = e.run_id
                s.session_runs.add(e.run_id)
        elif kind == "Warned":
            pass
        elif s.run_id is not None and e.run_id not in (s.run_id, "", "-"):
            return False   # a straggler from an older run
        elif kind == "PhaseChanged":
            if s.status not in ("running", "stopping"):
                return False
            s.phase = e.phase
        elif kind == "ChunkFinished" and e.status == "completed":
            s.chunks_done += 1
        elif kind == "PartCommitted":
            s.files += 1
        self.dirty.add(s.name)
        payload = {k: v for k, v in vars(e).items() if k not in ("export", "run_id")}
        if kind == "ExportFinished" and s.status == "stopped":
            payload["status"] = "stopped"   # the engine's "failed" with a stop code, until it says "stopped"
        line = journal_line(kind, payload, e.at)
        if line:
            line.export = s.name
            s.log(line)
            if line.level != "info" and kind != "ChunkFinished":   # the ExportFinished that follows says it
                self.log_line(line)
        return True

    def fail(self, name: str, error: dict) -> None:
        """An export worker died without an ExportFinished (a bug in the engine): show it, never a traceback."""
        s = self.states.get(name)
        if s is None:
            return
        s.status, s.error, s.phase = "failed", error, None
        self.note(name, "Error", error_text(error), "error")
        self.dirty.add(name)


# -- the exports table's cells -----------------------------------------------------------------------------------------

def cell_text(s: ExportState, column: str, now: float) -> str:
    """One cell of the exports table, as text; "-" when unknown."""
    if column == "name":
        return s.name
    if column == "status":
        return status_text(s.status)
    if column == "mode":
        return s.mode
    if column == "progress":
        return s.progress(now)
    if column == "rows":
        return human_count(s.rows) if s.figures else "-"
    if column == "rate":
        rate = s.rate(now)
        return human_count(rate) if rate is not None else "-"
    if column == "bytes":
        return human_bytes(s.bytes) if s.figures else "-"
    if column == "eta":
        return human_duration(s.eta(now))
    if column == "duration":
        return human_duration(s.elapsed(now))
    if column == "started":
        at = s.launched_at or s.started_at   # this session's run (the state keeps when a run ended, not began)
        return clock_text(at) if at else "-"
    if column == "committed":
        return s.committed
    if column == "verified":
        return s.verified
    if column == "destination":
        return s.destination
    if column == "error":
        if s.status == "stopped":
            return "stopped by the operator: resumable"
        return short_error(s.error) or "-"
    raise KeyError(column)


@dataclass
class Totals:
    rows: int
    bytes: int
    rate: float
    eta: float | None
    counts: dict[str, int]


def totals(model: ExportModel, parallel: int, queued: int, census: tuple[dict[str, int], list[str]]) -> Totals:
    """Sums over the exports that ran this session; the overall ETA when it can be told."""
    now = model.clock()
    counts, active = census
    ran = [s for s in model.states.values() if s.figures]
    running = [model[n] for n in active]
    rate = sum(s.rate(now) or 0 for s in running)
    etas = [s.eta(now) for s in running]
    eta: float | None = None
    if running and all(e is not None for e in etas):
        eta = max(etas)  # type: ignore[type-var]
    if queued:
        took = [s.duration_ms / 1000 for s in ran if s.duration_ms and s.status in ("done", "skipped")]
        eta = (eta or 0) + queued * (sum(took) / len(took)) / max(1, parallel) if took else None
    elif not running:
        eta = None
    return Totals(sum(s.rows for s in ran), sum(s.bytes for s in ran), rate, eta, counts)
