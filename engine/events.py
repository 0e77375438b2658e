"""Typed engine events: the one stream both front ends (TUI, headless) and the run journal consume.

Events are plain frozen dataclasses; the runner calls `emit(event)` from worker threads, so consumers must be
thread-safe (the TUI posts them as Textual messages, the headless renderer takes a lock).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Event:
    export: str
    run_id: str

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class ExportStarted(Event):
    mode: str
    chunks_total: int | None = None      # chunked: all windows of the chunk run (done ones included)
    chunks_done: int = 0                 # chunked resume: windows already completed by an earlier attempt
    rows_estimate: int | None = None
    at: float = field(default_factory=time.time)


PHASES = ("queued", "connecting", "planning", "reading", "writing", "uploading", "manifest", "committing")


@dataclass(frozen=True)
class PhaseChanged(Event):
    """An export entered a phase (one of PHASES). "reading"/"writing"/"uploading" may alternate per chunk."""
    phase: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ChunkStarted(Event):
    chunk_index: int
    lo: str | None
    hi: str | None
    attempt: int = 1
    worker: str = "local"
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class BatchWritten(Event):
    rows: int                            # rows in this batch (increment)
    bytes: int                           # bytes written to the part so far for this batch (increment, approximate)
    chunk_index: int | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PartCommitted(Event):
    path: str                            # object key / path relative to the destination root
    rows: int
    size_bytes: int
    chunk_index: int | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ChunkFinished(Event):
    chunk_index: int
    rows: int
    status: str                          # completed | failed
    error: str | None = None
    worker: str = "local"
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Retrying(Event):
    attempt: int
    error: str
    delay_s: float
    chunk_index: int | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Warned(Event):
    message: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ExportFinished(Event):
    status: str                          # succeeded | failed | skipped | refused | stopped
    rows: int = 0
    files: int = 0
    bytes: int = 0
    duration_ms: int = 0
    retries: int = 0
    error: dict | None = None            # RivetError.to_dict()
    at: float = field(default_factory=time.time)


Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    pass
