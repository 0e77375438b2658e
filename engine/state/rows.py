"""The shapes of the rows the state store returns: plain dicts keyed by column name, typed for readers and mypy.

Timestamps are TEXT in ISO 8601 UTC (`2026-04-18T12:20:15.123456Z`). A migration that adds a column adds it here.
"""
from __future__ import annotations

from typing import Any, TypedDict


class ExportStateRow(TypedDict):
    export_name: str
    last_cursor_value: str | None   # the single execution cursor (progression rule PG1)
    cursor_column: str | None
    cursor_identity: str | None     # what the cursor was read from (relation + cursor expression)
    cursor_run_id: str | None
    cursor_updated_at: str | None
    last_run_id: str | None
    last_run_at: str | None
    last_status: str | None


class ChunkRunRow(TypedDict):
    run_id: str
    export_name: str
    plan_hash: str | None
    status: str                     # RUN_STATUSES
    chunk_column: str | None
    created_at: str
    finished_at: str | None
    chunk_count: int


class ChunkTaskRow(TypedDict):
    run_id: str
    chunk_index: int
    lo: str | None
    hi: str | None
    status: str                     # TASK_STATUSES
    attempts: int
    rows_written: int | None
    file_path: str | None
    error: str | None
    started_at: str | None
    finished_at: str | None


class LoggedPart(TypedDict):
    """What a run's manifest and guardrails need of a file log row (a FileLogRow has all of it)."""
    path: str
    rows: int
    size_bytes: int
    content_hash: str | None
    chunk_index: int | None
    status: str


class FileLogRow(TypedDict):
    id: int
    export_name: str
    run_id: str
    path: str
    rows: int
    size_bytes: int
    content_hash: str | None
    chunk_index: int | None
    format: str | None
    compression: str | None
    status: str                     # committed | superseded
    created_at: str


class ExportMetricsRow(TypedDict):
    id: int
    export_name: str
    run_id: str | None
    mode: str | None
    status: str | None
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    rows: int | None
    files: int | None
    bytes: int | None
    retries: int | None
    error_code: str | None
    error_message: str | None


class MetricsFields(TypedDict, total=False):
    """What `record_metrics` takes: the columns of export_metrics but its id; export_name is required."""
    export_name: str
    run_id: str | None
    mode: str | None
    status: str | None
    started_at: Any                 # datetime or ISO text
    finished_at: Any
    duration_ms: int | None
    rows: int | None
    files: int | None
    bytes: int | None
    retries: int | None
    error_code: str | None
    error_message: str | None


class ExportSchemaRow(TypedDict):
    export_name: str
    columns: list[dict[str, Any]]   # [{"name": ..., "type": ...}], stored as JSON
    fingerprint: str
    updated_at: str


class ExportProgressionRow(TypedDict):
    """Exactly the columns of the progression contract (docs/state.md, "Progression")."""
    export_name: str
    last_committed_strategy: str | None
    last_committed_cursor: str | None
    last_committed_chunk_index: int | None
    last_committed_run_id: str | None
    last_committed_at: str | None
    last_verified_strategy: str | None
    last_verified_cursor: str | None
    last_verified_chunk_index: int | None
    last_verified_run_id: str | None
    last_verified_at: str | None


class RunJournalRow(TypedDict):
    id: int
    export_name: str
    run_id: str | None
    at: str
    event: str
    payload: dict[str, Any]         # stored as JSON text, returned parsed


class SummaryRow(TypedDict):
    """One export in `rivet state show`: cursor, last run, and its committed files."""
    export_name: str
    cursor: str | None
    cursor_column: str | None
    last_run_id: str | None
    last_run_at: str | None
    last_status: str | None
    files: int
    rows: int
    bytes: int


class ChunkSummary(TypedDict):
    pending: int
    running: int
    completed: int
    failed: int
    total: int
    rows: int                       # sum of rows_written
