"""The runner's `emit` for the TUI: engine events are buffered here and applied on the UI thread at its tick.

The runner calls `emit` from worker threads, up to thousands of times a second across exports (one BatchWritten per
Arrow batch). Posting each as a Textual message would flood the message queue and let rows (drained directly) run
ahead of chunk counts (queued behind other messages). Instead every event lands in one buffer under a lock,
BatchWritten summed per (export, run); the UI drains the buffer 4 times a second and applies everything in arrival
order, so rows, chunk counts and statuses on screen are always taken at the same instant.
"""
from __future__ import annotations

import threading

from engine import events as ev


class Batches:
    """Rows and bytes written by one run since the last drain, and when the last of them was written."""

    __slots__ = ("export", "run_id", "rows", "bytes", "at")

    def __init__(self, export: str, run_id: str) -> None:
        self.export, self.run_id = export, run_id
        self.rows = self.bytes = 0
        self.at = 0.0

    @property
    def kind(self) -> str:
        return "Batches"


class EventFeed:
    """Thread-safe, never blocks on the UI. `drain()` (UI thread) returns everything since the last drain, in order.

    Summed BatchWritten are placed where the run's first batch of the interval arrived, so a run's batches always
    count before its ExportFinished and after its ExportStarted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[ev.Event | Batches] = []
        self._open: dict[tuple[str, str], Batches] = {}

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            if isinstance(event, ev.BatchWritten):
                key = (event.export, event.run_id)
                acc = self._open.get(key)
                if acc is None:
                    acc = self._open[key] = Batches(*key)
                    self._events.append(acc)
                acc.rows += event.rows
                acc.bytes += event.bytes
                acc.at = event.at
                return
            if isinstance(event, ev.ExportFinished):   # later batches of this run start a new entry after it
                self._open.pop((event.export, event.run_id), None)
            self._events.append(event)

    def drain(self) -> list[ev.Event | Batches]:
        with self._lock:
            out, self._events, self._open = self._events, [], {}
        return out
