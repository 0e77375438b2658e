"""Typed messages, one per outcome of background work (each posted by the worker that did the work, or by the one
handler of worker failures, RivetApp.on_worker_state_changed). A handler is named after its message."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.errors import RivetError


@dataclass(frozen=True)
class Job:
    """What a worker does, for the operator (`what`) and for the app (which export, which kind of work)."""
    what: str
    export: str | None = None
    kind: str = "io"           # io | export
    batch: bool = False        # export: part of a queued batch (R, apply) rather than a single `r`


class JobMessage(Message):
    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job


class WorkFailed(JobMessage):
    """Background work raised: one notification and one line in the session log, never a traceback."""

    def __init__(self, job: Job, error: RivetError) -> None:
        super().__init__(job)
        self.error = error


class StateLoaded(JobMessage):
    def __init__(self, job: Job, summary: list[dict], progression: list[dict], reconciles: dict[str, dict],
                 last_errors: dict[str, dict]) -> None:
        super().__init__(job)
        self.summary, self.progression, self.reconciles, self.last_errors = summary, progression, reconciles, last_errors


class ProgressionLoaded(JobMessage):
    def __init__(self, job: Job, rows: list[dict]) -> None:
        super().__init__(job)
        self.rows = rows


class ExportRunEnded(JobMessage):
    """An export worker returned (or died: then result.error says why)."""

    def __init__(self, job: Job, result) -> None:
        super().__init__(job)
        self.result = result


class Reconciled(JobMessage):
    def __init__(self, job: Job, report) -> None:
        super().__init__(job)
        self.report = report


class Validated(JobMessage):
    def __init__(self, job: Job, reports: list) -> None:
        super().__init__(job)
        self.reports = reports


class PlanBuilt(JobMessage):
    def __init__(self, job: Job, artifact: dict, diffs: list) -> None:
        super().__init__(job)
        self.artifact, self.diffs = artifact, diffs


class PlanReady(JobMessage):
    """A sealed plan checked against the state and turned into runnable plans (apply)."""

    def __init__(self, job: Job, artifact: dict, plans: list) -> None:
        super().__init__(job)
        self.artifact, self.plans = artifact, plans


class JournalLoaded(JobMessage):
    def __init__(self, job: Job, journal: list[dict], runs: list[dict]) -> None:
        super().__init__(job)
        self.journal, self.runs = journal, runs


class HistoryLoaded(JobMessage):
    def __init__(self, job: Job, runs: list[dict]) -> None:
        super().__init__(job)
        self.runs = runs
