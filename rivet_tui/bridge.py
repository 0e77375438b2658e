"""Engine events → Textual messages, and the per-export model every screen renders from.

The runner calls `EventBridge` (its `emit`) from worker threads. Every event but BatchWritten goes to the app as one
message (`EngineEvent`, posted thread-safely); BatchWritten, which fires for every Arrow batch, is summed per export
under a lock and drained on the UI thread, so the UI queue stays short whatever the batch rate. Handlers apply both
to `ExportModel` on the UI thread; screens redraw changed rows from it on a 4 Hz timer.

Nothing here decides how an export runs: the engine does. This module only keeps what the screens show.
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from textual.message import Message

from engine import events as ev

# -- messages -----------------------------------------------------------------------------------------------------


class EngineEvent(Message):
    """One engine event (already on the UI thread when handled)."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class EventBridge:
    """The runner's `emit`: thread-safe, never blocks on the UI.

    BatchWritten fires for every Arrow batch of every task (hundreds a second across exports), so it never becomes
    a message: it is summed here per (export, run_id) and drained by the UI thread at its 4 Hz tick and before each
    other event is applied (so a run's batches always count before its ExportFinished).
    """

    def __init__(self, post: Callable[[Message], Any]):
        self._post = post
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple[int, int]] = {}

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.BatchWritten):
            with self._lock:
                key = (event.export, event.run_id)
                rows, size = self._pending.get(key, (0, 0))
                self._pending[key] = (rows + event.rows, size + event.bytes)
            return
        self._post(EngineEvent(event))

    def drain(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Rows and bytes written since the last drain (UI thread)."""
        with self._lock:
            out, self._pending = self._pending, {}
        return out


# -- formatting ---------------------------------------------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_count(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock_text(at: float | str | None) -> str:
    """HH:MM:SS UTC of an event time (epoch seconds or ISO text)."""
    dt = parse_time(at)
    return dt.strftime("%H:%M:%S") if dt else "--:--:--"


def stamp_text(at: float | str | None) -> str:
    dt = parse_time(at)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def parse_time(at: float | str | None) -> datetime | None:
    if at is None or at == "":
        return None
    if isinstance(at, (int, float)):
        return datetime.fromtimestamp(at, UTC)
    try:
        dt = datetime.fromisoformat(str(at))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def boundary(strategy: str | None, cursor: str | None, chunk: int | None) -> str:
    """A committed/verified boundary as `rivet state progression` prints it."""
    if strategy == "chunked" and chunk is not None:
        return f"chunk #{chunk}"
    if cursor is None:
        return "-"
    text = str(cursor)
    if "T" in text or ":" in text:   # a timestamp cursor: to the second is what fits in a column
        dt = parse_time(text)
        if dt is not None:
            return dt.strftime("%Y-%m-%d %H:%M:%S")
    return text


def lag(row: dict) -> str:
    """How far verified trails committed (ADR-0008: advisory; verified exists for chunked exports only)."""
    c_strategy, v_strategy = row.get("last_committed_strategy"), row.get("last_verified_strategy")
    if not c_strategy:
        return "-"
    if not v_strategy:   # incremental: no partitions, so no verified boundary (ADR-0008 write points)
        return "unverified" if c_strategy == "chunked" else "n/a"
    if c_strategy != v_strategy:
        return "strategy changed"
    if c_strategy == "chunked":
        c, v = row.get("last_committed_chunk_index"), row.get("last_verified_chunk_index")
        if c is None or v is None:
            return "-"
        return "in sync" if c <= v else f"{c - v} chunk{'s' if c - v != 1 else ''}"
    c, v = row.get("last_committed_cursor"), row.get("last_verified_cursor")
    if c is None or v is None:
        return "-"
    if c == v:
        return "in sync"
    try:
        return f"{Decimal(c) - Decimal(v):,}"
    except InvalidOperation:
        pass
    tc, tv = parse_time(c), parse_time(v)
    if tc and tv:
        return human_duration((tc - tv).total_seconds())
    return "behind"


STATUS_FROM_STATE = {"succeeded": "done", "skipped": "done", "failed": "failed", "refused": "refused"}


def as_dict(obj: Any) -> dict:
    """A report from the engine (dataclass, object with to_dict(), or dict) as a plain dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


# -- engine functions that may not exist yet -----------------------------------------------------------------------


@dataclass(frozen=True)
class EngineFunction:
    """An engine entry point the TUI calls when it exists; until then the action says so, and does nothing."""

    module: str
    name: str
    what: str

    def resolve(self) -> Callable | None:
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name == self.module:
                return None
            raise
        fn = getattr(mod, self.name, None)
        return fn if callable(fn) else None

    @property
    def unavailable(self) -> str:
        return f"{self.what} is not available yet: this build has no {self.module}.{self.name}"


PLAN = EngineFunction("engine.plans", "build_plan", "Plan")                   # (config, store, names) -> artifact
RECONCILE = EngineFunction("engine.reconcile", "reconcile_export", "Reconcile")  # (config, exp, store) -> report
VALIDATE = EngineFunction("engine.validate", "validate", "Validate")             # (config, store, names) -> [report]


# -- the model ------------------------------------------------------------------------------------------------------

RATE_WINDOW_S = 5.0
SPARK_SECONDS = 60


@dataclass
class JournalLine:
    at: float | str | None
    kind: str
    text: str
    level: str = "info"        # info | warn | error


@dataclass
class ExportState:
    name: str
    mode: str
    status: str = "idle"
    run_id: str | None = None
    chunks_total: int | None = None
    chunks_done: int = 0
    chunks_resumed: int = 0              # completed by an earlier attempt of this run (not part of this ETA)
    rows_estimate: int | None = None
    rows: int = 0
    bytes: int = 0
    files: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: int | None = None
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

    def rate(self, now: float) -> float | None:
        """Rows per second over the last few seconds while running; the run's average after it."""
        if self.status == "running":
            if len(self.samples) < 2:
                return None
            recent = [s for s in self.samples if s[0] >= now - RATE_WINDOW_S] or [self.samples[-1]]
            t0, r0 = recent[0] if len(recent) > 1 else self.samples[-2]
            t1, r1 = self.samples[-1]
            span = max(now, t1) - t0
            return (r1 - r0) / span if span > 0 else None
        if self.duration_ms:
            return self.rows / (self.duration_ms / 1000)
        return None

    def eta(self, now: float) -> float | None:
        if self.status != "running" or self.started_at is None:
            return None
        if self.chunks_total:
            done_here = self.chunks_done - self.chunks_resumed
            if done_here <= 0:
                return None
            elapsed = now - self.started_at
            return elapsed / done_here * (self.chunks_total - self.chunks_done)
        rate = self.rate(now)
        if self.rows_estimate and rate:
            return max(0.0, (self.rows_estimate - self.rows) / rate)
        return None

    def fraction(self) -> float | None:
        if self.chunks_total:
            return min(1.0, self.chunks_done / self.chunks_total)
        if self.rows_estimate:
            return min(1.0, self.rows / self.rows_estimate)
        return None

    def log(self, line: JournalLine) -> None:
        self.journal.append(line)
        self.journal_total += 1

    def sparkline(self, now: float) -> list[float]:
        """Rows written per second over the last minute of this session's runs."""
        end = int(now)
        return [float(self.per_second.get(s, 0)) for s in range(end - SPARK_SECONDS + 1, end + 1)]


class ExportModel:
    """Per-export state, in config order. Mutated only on the UI thread; `dirty` names rows to redraw."""

    def __init__(self, exports: Iterable, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.states: dict[str, ExportState] = {e.name: ExportState(e.name, e.mode) for e in exports}
        self.dirty: set[str] = set(self.states)
        # batches drained before their run's ExportStarted message was handled
        self._early: dict[tuple[str, str], tuple[int, int]] = {}

    def __getitem__(self, name: str) -> ExportState:
        return self.states[name]

    def names(self) -> list[str]:
        return list(self.states)

    def running(self) -> list[str]:
        return [n for n, s in self.states.items() if s.status == "running"]

    def count(self, status: str) -> int:
        return sum(1 for s in self.states.values() if s.status == status)

    def set_status(self, name: str, status: str) -> None:
        if name in self.states:
            self.states[name].status = status
            self.dirty.add(name)

    def note(self, name: str, kind: str, text: str, level: str = "info", at: float | None = None) -> None:
        if name in self.states:
            self.states[name].log(JournalLine(self.clock() if at is None else at, kind, text, level))

    # -- loading from state --------------------------------------------------------------------------------------
    def load_summary(self, rows: list[dict]) -> None:
        for r in rows:
            s = self.states.get(r["export_name"])
            if s is None or s.session_runs or s.status not in ("idle",):
                continue
            s.status = STATUS_FROM_STATE.get(r.get("last_status") or "", "idle")
            self.dirty.add(s.name)

    def load_progression(self, rows: list[dict], names: Iterable[str] | None = None) -> None:
        seen = {r["export_name"]: r for r in rows}
        for name in (names if names is not None else self.states):
            s = self.states.get(name)
            if s is None:
                continue
            r = seen.get(name, {})
            committed = boundary(r.get("last_committed_strategy"), r.get("last_committed_cursor"),
                                 r.get("last_committed_chunk_index"))
            verified = boundary(r.get("last_verified_strategy"), r.get("last_verified_cursor"),
                                r.get("last_verified_chunk_index"))
            if (committed, verified) != (s.committed, s.verified):
                s.committed, s.verified = committed, verified
                self.dirty.add(name)

    # -- engine events -------------------------------------------------------------------------------------------
    def apply_batches(self, totals: dict[tuple[str, str], tuple[int, int]]) -> None:
        now = self.clock()
        for (name, run_id), (rows, size) in totals.items():
            s = self.states.get(name)
            if s is None:
                continue
            if s.run_id != run_id:
                early = self._early.get((name, run_id), (0, 0))
                self._early[(name, run_id)] = (early[0] + rows, early[1] + size)
                continue
            s.rows += rows
            s.bytes += size
            s.samples.append((now, s.rows))
            sec = int(now)
            s.per_second[sec] = s.per_second.get(sec, 0) + rows
            if len(s.per_second) > SPARK_SECONDS * 2:
                for old in sorted(s.per_second)[:-SPARK_SECONDS]:
                    del s.per_second[old]
            self.dirty.add(name)

    def apply(self, e: ev.Event) -> None:
        s = self.states.get(e.export)
        if s is None:
            return
        self.dirty.add(e.export)
        if isinstance(e, ev.ExportStarted):
            s.status, s.run_id, s.error = "running", e.run_id, None
            s.chunks_total = e.chunks_total   # all windows of the run (the runner counts resumed ones in it)
            s.chunks_done = s.chunks_resumed = e.chunks_done
            s.rows_estimate = e.rows_estimate
            s.rows, s.bytes = self._early.pop((e.export, e.run_id), (0, 0))
            s.files = 0
            s.started_at, s.finished_at, s.duration_ms = e.at, None, None
            s.samples.clear()
            s.samples.append((e.at, s.rows))
            s.session_runs.add(e.run_id)
        elif e.run_id != s.run_id and not isinstance(e, (ev.Warned, ev.ExportFinished)):
            return  # a straggler from an older run
        elif isinstance(e, ev.ChunkFinished) and e.status == "completed":
            s.chunks_done += 1
        elif isinstance(e, ev.PartCommitted):
            s.files += 1
        if isinstance(e, ev.ExportFinished):
            s.status = STATUS_FROM_STATE.get(e.status, "failed")
            s.rows, s.files, s.bytes, s.duration_ms = e.rows, e.files, e.bytes, e.duration_ms
            s.finished_at = e.at
            s.error = e.error
            self._early.pop((e.export, e.run_id), None)
            if e.run_id and e.run_id != "-":
                s.run_id = e.run_id
                s.session_runs.add(e.run_id)
        line = journal_line(e.kind, _payload(e), e.at)
        if line:
            s.log(line)

    def fail(self, name: str, error: dict) -> None:
        """An export worker died without an ExportFinished (a bug in the engine): show it, never a traceback."""
        s = self.states.get(name)
        if s is None:
            return
        s.status, s.error = "failed", error
        s.log(JournalLine(self.clock(), "Error", error_text(error), "error"))
        self.dirty.add(name)


def _payload(e: ev.Event) -> dict:
    return {k: v for k, v in dataclasses.asdict(e).items() if k not in ("export", "run_id")}


def error_text(error: dict | None) -> str:
    if not error:
        return ""
    text = f"error[{error.get('code', 'RIVET_ERROR')}]: {error.get('error') or error.get('message', '')}"
    return f"{text}\n  hint: {error['hint']}" if error.get("hint") else text


def journal_line(kind: str, p: dict, at: float | str | None) -> JournalLine | None:
    """One journal event (live or from run_journal, same fields) as a line for the run detail."""
    at = p.get("at", at)
    if kind == "ExportStarted":
        parts = [f"started ({p.get('mode')})"]
        if p.get("chunks_total") is not None:
            parts.append(f"{p['chunks_total']} chunks to run" + (f", {p['chunks_done']} already done"
                                                                  if p.get("chunks_done") else ""))
        if p.get("rows_estimate"):
            parts.append(f"~{human_count(p['rows_estimate'])} rows")
        return JournalLine(at, kind, ", ".join(parts))
    if kind == "ChunkStarted":
        attempt = f" attempt {p['attempt']}" if p.get("attempt", 1) > 1 else ""
        return JournalLine(at, kind, f"chunk #{p.get('chunk_index')} [{p.get('lo')} .. {p.get('hi')}]{attempt}"
                                     f" on {p.get('worker', 'local')}")
    if kind == "ChunkFinished":
        if p.get("status") == "failed":
            return JournalLine(at, kind, f"chunk #{p.get('chunk_index')} failed: {p.get('error')}", "error")
        return JournalLine(at, kind, f"chunk #{p.get('chunk_index')} done: {human_count(p.get('rows'))} rows")
    if kind == "PartCommitted":
        return JournalLine(at, kind, f"part {p.get('path')}: {human_count(p.get('rows'))} rows, "
                                     f"{human_bytes(p.get('size_bytes'))}")
    if kind == "Retrying":
        chunk = f"chunk #{p['chunk_index']} " if p.get("chunk_index") is not None else ""
        return JournalLine(at, kind, f"{chunk}retry {p.get('attempt')} in {p.get('delay_s', 0):.1f}s: "
                                     f"{p.get('error')}", "warn")
    if kind == "Warned":
        return JournalLine(at, kind, str(p.get("message")), "warn")
    if kind == "ExportFinished":
        status = p.get("status")
        text = (f"{status}: {human_count(p.get('rows'))} rows, {p.get('files', 0)} files, "
                f"{human_bytes(p.get('bytes'))} in {human_duration((p.get('duration_ms') or 0) / 1000)}")
        if p.get("retries"):
            text += f", {p['retries']} retries"
        if p.get("error"):
            text += "\n" + error_text(p["error"])
        return JournalLine(at, kind, text, "info" if status in ("succeeded", "skipped") else "error")
    if kind == "BatchWritten":
        return None
    return JournalLine(at, kind, ", ".join(f"{k}={v}" for k, v in p.items() if k != "at"))
