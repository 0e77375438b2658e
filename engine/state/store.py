"""The state store: one DuckDB file, opened per transaction.

DuckDB lets only one process hold a database file, and a TUI may run an export for hours while `rivet state
progression` runs from cron. So every operation opens the file, runs one short transaction and closes it; a process
that finds the file locked retries with a short backoff for up to `lock_wait_s`, then fails with RIVET_STATE_BUSY
(exit 2) naming the holder. In-process, all operations go through one module-level RLock (one writer at a time;
callers are worker threads), which also makes DuckDB's optimistic write conflicts impossible between our own threads.

`StateStore.batch()` groups several operations into one open/one transaction (each open costs ~10-20 ms), e.g. the
bookkeeping of one finished chunk. Everything returned is a plain dict (or list of dicts) keyed by column name.
Timestamps are TEXT in ISO 8601 UTC: `2026-04-18T12:20:15.123456Z`.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from engine.errors import ExitClass, RivetError

T = TypeVar("T")

# One writer per process, whatever the path or the number of StateStore objects.
_LOCK = threading.RLock()
# path -> the connection of the batch() currently open on it (only the thread holding _LOCK can see one)
_BATCH: dict[str, duckdb.DuckDBPyConnection] = {}

# Never let DuckDB reach for the network (an SQLite file would otherwise trigger an extension download).
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": 1}

# Retry the lock quickly: a busy process frees the file between its transactions for a few ms only (DuckDB builds
# its ~10 ms instance before taking the file lock), so a waiter must poll often to land in those gaps. A failed
# attempt costs ~5 ms.
_RETRY_FIRST_S = 0.005
_RETRY_CAP_S = 0.02

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<prog>.*?) \(PID (?P<pid>\d+)\)")

TASK_STATUSES = ("pending", "running", "completed", "failed")
RUN_STATUSES = ("in_progress", "completed", "failed")
METRIC_FIELDS = ("export_name", "run_id", "mode", "status", "started_at", "finished_at", "duration_ms", "rows",
                 "files", "bytes", "retries", "error_code", "error_message")


def now_iso() -> str:
    """The current UTC time in the store's timestamp format."""
    return iso(datetime.now(UTC))


def iso(value: datetime | str | None) -> str | None:
    """A datetime in the store's format (naive = UTC); strings pass through unchanged."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------------------------
# Cursor ordering (ADR-0008 PG3, SPEC §4): numbers as numbers, else timestamps, else byte order.

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})[.,](\d+)")


def _as_number(text: str) -> Decimal | None:
    text = text.strip()
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def _as_instant(text: str) -> tuple[datetime, int] | None:
    """(UTC instant to the microsecond, the digits past microseconds) or None. Naive values are taken as UTC."""
    text = text.strip()
    extra = 0
    m = _FRACTION.search(text)
    if m and len(m.group(2)) > 6:  # fromisoformat drops digits past microseconds; keep them as a tie-breaker
        digits = m.group(2)
        extra = int(digits[6:].ljust(12, "0")[:12])
        text = text[:m.start(2)] + digits[:6] + text[m.end(2):]
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC), extra


def compare_cursors(a: str, b: str) -> int:
    """-1, 0 or 1 as cursor `a` sorts before, equal to, or after `b`.

    Numeric when both parse as numbers ('9' < '10'), else as instants when both parse as ISO 8601 timestamps or dates
    (with or without a zone; naive = UTC), else byte order of the UTF-8 text.
    """
    pair: tuple[Any, Any]
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        pair = (na, nb)
    else:
        ta, tb = _as_instant(a), _as_instant(b)
        pair = (ta, tb) if ta is not None and tb is not None else (a.encode(), b.encode())
    return (pair[0] > pair[1]) - (pair[0] < pair[1])


# ---------------------------------------------------------------------------------------------------------------
# Migrations

def _migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migrations/NNN_*.sql, in order."""
    found = []
    for entry in resources.files("engine.state").joinpath("migrations").iterdir():
        m = re.fullmatch(r"(\d{3})_\w+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    return found


def migrate(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> list[int]:
    """Apply the migrations newer than the file's schema_version (up to `upto`), each in its own transaction.

    Returns the versions applied. Migrations are additive only, so an older rivet can still read a newer file.
    """
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    applied = []
    for version, name, sql in _migrations():
        if version <= current or (upto is not None and version > upto):
            continue
        con.begin()
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, name, now_iso()])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        applied.append(version)
    return applied


# ---------------------------------------------------------------------------------------------------------------

def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _transition_error(what: str) -> RivetError:
    return RivetError("RIVET_STATE_TRANSITION", what,
                      "chunk tasks move strictly forward pending -> running -> completed|failed; this is a bug in "
                      "the caller, or another process changed the run", ExitClass.INTERNAL)


class StateStore:
    """Rivet's persistent state in one DuckDB file (SPEC §4). Thread-safe; safe to share between worker threads.

    Creating a StateStore creates the parent directory and the file if needed and applies pending migrations.
    """

    def __init__(self, path: str | Path, lock_wait_s: float = 60.0):
        self.path = Path(path).expanduser().absolute()
        self.lock_wait_s = max(0.0, float(lock_wait_s))
        self._key = str(self.path)
        if self.path.is_dir():
            raise RivetError("RIVET_STATE_PATH", f"state path {self.path} is a directory",
                             "give --state the path of a file, e.g. .rivet/state.duckdb")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RivetError("RIVET_STATE_PATH", f"cannot create the state directory {self.path.parent}: "
                             f"{exc.strerror}", "check the permissions, or point --state elsewhere") from None
        with _LOCK:
            con = self._connect()
            try:
                migrate(con)
            except duckdb.IOException as exc:
                raise self._io_error(exc) from None
            except duckdb.Error as exc:
                raise RivetError("RIVET_STATE_CORRUPT", f"state file {self.path} has an unexpected schema: "
                                 f"{str(exc).splitlines()[0]}", self._corrupt_hint()) from None
            finally:
                con.close()

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _corrupt_hint(self) -> str:
        return (f"move {self.path.name} aside (rivet then starts a fresh state) or restore a backup; "
                "or point --state at another file")

    def _open_error(self, exc: duckdb.Error) -> RivetError:
        first = str(exc).splitlines()[0]
        if not self.path.exists() or "Permission denied" in first:
            return RivetError("RIVET_STATE_OPEN", f"cannot open state file {self.path}: {first}",
                              "check the permissions on the file and its directory, or point --state elsewhere")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(16)
        except OSError:
            head = b""
        if head.startswith(b"SQLite format 3"):
            return RivetError("RIVET_STATE_CORRUPT", f"state file {self.path} is an SQLite database, not DuckDB "
                              "(the Rust rivet's state?)", self._corrupt_hint())
        if head[8:12] != b"DUCK":
            return RivetError("RIVET_STATE_CORRUPT", f"state file {self.path} is not a DuckDB database",
                              self._corrupt_hint())
        return RivetError("RIVET_STATE_CORRUPT", f"state file {self.path} cannot be read: {first}",
                          self._corrupt_hint())

    def _busy(self, holder: re.Match | None, detail: str = "") -> RivetError:
        who = f"PID {holder['pid']} ({holder['prog']})" if holder else "another process"
        return RivetError("RIVET_STATE_BUSY", f"state file {self.path} is in use by {who}{detail}",
                          f"waited {self.lock_wait_s:g} s; wait for that process to finish, raise --lock-wait, "
                          "or point --state at another file", ExitClass.TRANSIENT)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting up to lock_wait_s while another process holds it. Caller holds _LOCK."""
        deadline = time.monotonic() + self.lock_wait_s
        delay = _RETRY_FIRST_S
        while True:
            try:
                return duckdb.connect(self._key, config=_CONFIG)
            except duckdb.IOException as exc:
                if "Could not set lock" not in str(exc):
                    raise self._open_error(exc) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._busy(_LOCK_HOLDER.search(str(exc))) from None
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, _RETRY_CAP_S)

    def _run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(con) in one transaction: open, begin, fn, commit, close (or reuse the open batch)."""
        with _LOCK:
            con = _BATCH.get(self._key)
            if con is not None:
                return fn(con)
            deadline = time.monotonic() + self.lock_wait_s
            delay = _RETRY_FIRST_S
            while True:
                con = self._connect()
                try:
                    con.begin()
                    result = fn(con)
                    con.commit()
                    return result
                except duckdb.TransactionException as exc:
                    # Optimistic concurrency: a conflicting writer elsewhere; retry the whole transaction.
                    if "Conflict" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise self._busy(None, " (write conflict)") from None
                except duckdb.IOException as exc:
                    raise self._io_error(exc) from None
                finally:
                    con.close()  # closing without commit rolls back
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _RETRY_CAP_S)

    def _io_error(self, exc: duckdb.IOException) -> RivetError:
        first = str(exc).splitlines()[0]
        if "Corrupt" in first or "checksum" in first:
            return RivetError("RIVET_STATE_CORRUPT", f"state file {self.path} is damaged: {first}",
                              self._corrupt_hint())
        return RivetError("RIVET_STATE_IO", f"state file {self.path}: {first}",
                          "check free disk space and permissions on the state directory")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._run(lambda con: _dicts(con.execute(sql, list(params))))

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._run(lambda con: con.execute(sql, list(params)))

    @contextmanager
    def batch(self) -> Iterator[StateStore]:
        """Group the operations inside into one open of the file and one transaction (all or nothing).

        Keep it short: other processes wait while it is open. Do not catch a state error inside a batch and
        carry on (DuckDB aborts the transaction on error); and keep progression writes out of the batch that
        moves the cursor, so their failure cannot undo it (PG2).
        """
        with _LOCK:
            if self._key in _BATCH:  # nested: the outer batch owns the transaction
                yield self
                return
            con = self._connect()
            try:
                con.begin()
                _BATCH[self._key] = con
                try:
                    yield self
                finally:
                    del _BATCH[self._key]
                con.commit()
            except duckdb.IOException as exc:
                raise self._io_error(exc) from None
            finally:
                con.close()

    def schema_version(self) -> int:
        return self._run(lambda con: con.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    # -- export_state: the execution cursor (PG1) ----------------------------------------------------------------

    def get_export_state(self, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM export_state WHERE export_name = ?", [name])
        return rows[0] if rows else None

    def set_cursor(self, name: str, value: str, column: str | None, identity: str | None, run_id: str) -> None:
        """Move the execution cursor (after the data it covers is durable, SPEC §3)."""
        self._exec(
            "INSERT INTO export_state (export_name, last_cursor_value, cursor_column, cursor_identity, cursor_run_id,"
            " cursor_updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (export_name) DO UPDATE SET"
            " last_cursor_value = excluded.last_cursor_value, cursor_column = excluded.cursor_column,"
            " cursor_identity = excluded.cursor_identity, cursor_run_id = excluded.cursor_run_id,"
            " cursor_updated_at = excluded.cursor_updated_at",
            [name, None if value is None else str(value), column, identity, run_id, now_iso()])

    def reset_state(self, name: str) -> bool:
        """Forget the cursor and its identity (`rivet state reset`); True when there was one to forget.

        Last-run fields, files, metrics and progression are kept (progression is cleared only by
        reset_progression, PG8).
        """
        def op(con: duckdb.DuckDBPyConnection) -> bool:
            row = con.execute("SELECT last_cursor_value, cursor_column, cursor_identity FROM export_state"
                              " WHERE export_name = ?", [name]).fetchone()
            if row is None or row == (None, None, None):
                return False
            con.execute("UPDATE export_state SET last_cursor_value = NULL, cursor_column = NULL,"
                        " cursor_identity = NULL, cursor_run_id = NULL, cursor_updated_at = ? WHERE export_name = ?",
                        [now_iso(), name])
            return True
        return self._run(op)

    def accept_identity(self, name: str, column: str | None, identity: str | None) -> None:
        """Keep the stored cursor but adopt a new cursor column / identity (`rivet state accept`)."""
        self._exec(
            "INSERT INTO export_state (export_name, cursor_column, cursor_identity, cursor_updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (export_name) DO UPDATE SET cursor_column = excluded.cursor_column,"
            " cursor_identity = excluded.cursor_identity, cursor_updated_at = excluded.cursor_updated_at",
            [name, column, identity, now_iso()])

    def set_last_run(self, name: str, run_id: str, status: str) -> None:
        self._exec(
            "INSERT INTO export_state (export_name, last_run_id, last_run_at, last_status) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (export_name) DO UPDATE SET last_run_id = excluded.last_run_id,"
            " last_run_at = excluded.last_run_at, last_status = excluded.last_status",
            [name, run_id, now_iso(), status])

    # -- file_log ------------------------------------------------------------------------------------------------

    def log_file(self, export_name: str, run_id: str, path: str, rows: int, size_bytes: int,
                 content_hash: str | None, chunk_index: int | None, fmt: str | None,
                 compression: str | None) -> int:
        """Record a durably written part (status 'committed'); returns its id."""
        return self._run(lambda con: con.execute(
            "INSERT INTO file_log (export_name, run_id, path, rows, size_bytes, content_hash, chunk_index, format,"
            " compression, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [export_name, run_id, path, rows, size_bytes, content_hash, chunk_index, fmt, compression, now_iso()],
        ).fetchone()[0])

    def files(self, name: str | None = None, run_id: str | None = None,
              status: str | None = None) -> list[dict[str, Any]]:
        """File log rows, oldest first, filtered by export, run and/or status."""
        return self._rows(
            "SELECT * FROM file_log WHERE (?::TEXT IS NULL OR export_name = ?) AND (?::TEXT IS NULL OR run_id = ?)"
            " AND (?::TEXT IS NULL OR status = ?) ORDER BY id", [name, name, run_id, run_id, status, status])

    def supersede_files(self, export_name: str, paths: Iterable[str]) -> int:
        """Mark committed parts as superseded (e.g. replaced by a repair); returns how many changed."""
        paths = list(paths)
        if not paths:
            return 0
        return self._run(lambda con: len(con.execute(
            "UPDATE file_log SET status = 'superseded' WHERE export_name = ? AND status = 'committed'"
            " AND list_contains(?::TEXT[], path) RETURNING id", [export_name, paths]).fetchall()))

    # -- export_metrics ------------------------------------------------------------------------------------------

    def record_metrics(self, **fields: Any) -> int:
        """One run's metrics (fields: METRIC_FIELDS; export_name required; datetimes become ISO text)."""
        unknown = set(fields) - set(METRIC_FIELDS)
        if unknown:
            raise TypeError(f"record_metrics: unknown fields {sorted(unknown)}")
        if not fields.get("export_name"):
            raise TypeError("record_metrics: export_name is required")
        for key in ("started_at", "finished_at"):
            if key in fields:
                fields[key] = iso(fields[key])
        cols = list(fields)
        sql = (f"INSERT INTO export_metrics ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
               " RETURNING id")
        return self._run(lambda con: con.execute(sql, [fields[c] for c in cols]).fetchone()[0])

    def metrics(self, name: str | None = None, last: int | None = None) -> list[dict[str, Any]]:
        """Run history, newest first; `last` limits the number of rows."""
        return self._rows("SELECT * FROM export_metrics WHERE (?::TEXT IS NULL OR export_name = ?)"
                          " ORDER BY id DESC LIMIT ?", [name, name, last])

    # -- export_schema -------------------------------------------------------------------------------------------

    def get_schema(self, name: str) -> dict[str, Any] | None:
        """{export_name, columns: [{name, type}], fingerprint, updated_at} or None."""
        rows = self._rows("SELECT * FROM export_schema WHERE export_name = ?", [name])
        if not rows:
            return None
        rows[0]["columns"] = json.loads(rows[0]["columns"])
        return rows[0]

    def set_schema(self, name: str, columns: Sequence[dict[str, Any]], fingerprint: str) -> None:
        self._exec("INSERT INTO export_schema VALUES (?, ?, ?, ?) ON CONFLICT (export_name) DO UPDATE SET"
                   " columns = excluded.columns, fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                   [name, json.dumps(list(columns)), fingerprint, now_iso()])

    # -- chunk runs and tasks ------------------------------------------------------------------------------------

    def create_chunk_run(self, export_name: str, run_id: str, plan_hash: str | None, chunk_column: str | None,
                         chunks: Sequence[tuple[int, Any, Any]]) -> None:
        """Create an in-progress run with one pending task per (index, lo, hi), in one transaction.

        lo/hi are stored as text. Bulk insert goes through an Arrow table (100k chunks in well under a second).
        """
        import pyarrow as pa

        def text(v: Any) -> str | None:
            return None if v is None else str(v)

        table = pa.table({
            "chunk_index": pa.array([c[0] for c in chunks], pa.int32()),
            "lo": pa.array([text(c[1]) for c in chunks], pa.string()),
            "hi": pa.array([text(c[2]) for c in chunks], pa.string()),
        })

        def op(con: duckdb.DuckDBPyConnection) -> None:
            if con.execute("SELECT 1 FROM chunk_run WHERE run_id = ?", [run_id]).fetchone():
                raise RivetError("RIVET_STATE_DUPLICATE_RUN", f"chunk run {run_id} already exists",
                                 "run ids are unique; this is a bug in the caller", ExitClass.INTERNAL)
            con.execute("INSERT INTO chunk_run (run_id, export_name, plan_hash, status, chunk_column, created_at,"
                        " chunk_count) VALUES (?, ?, ?, 'in_progress', ?, ?, ?)",
                        [run_id, export_name, plan_hash, chunk_column, now_iso(), len(chunks)])
            con.register("_rivet_chunks", table)
            try:
                con.execute("INSERT INTO chunk_task (run_id, chunk_index, lo, hi)"
                            " SELECT ?, chunk_index, lo, hi FROM _rivet_chunks", [run_id])
            finally:
                con.unregister("_rivet_chunks")
        self._run(op)

    def latest_chunk_run(self, name: str, status: str | None = None) -> dict[str, Any] | None:
        """The newest chunk run of an export (optionally with a given status), or None."""
        rows = self._rows("SELECT * EXCLUDE (seq) FROM chunk_run WHERE export_name = ?"
                          " AND (?::TEXT IS NULL OR status = ?) ORDER BY seq DESC LIMIT 1", [name, status, status])
        return rows[0] if rows else None

    def chunk_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * EXCLUDE (seq) FROM chunk_run WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def chunk_tasks(self, run_id: str, status: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Tasks of a run by chunk_index; `status` is one status or several."""
        statuses = None if status is None else [status] if isinstance(status, str) else list(status)
        return self._rows("SELECT * FROM chunk_task WHERE run_id = ? AND (?::TEXT[] IS NULL OR"
                          " list_contains(?::TEXT[], status)) ORDER BY chunk_index", [run_id, statuses, statuses])

    def _task_status(self, con: duckdb.DuckDBPyConnection, run_id: str, idx: int) -> tuple[str, int]:
        row = con.execute("SELECT status, attempts FROM chunk_task WHERE run_id = ? AND chunk_index = ?",
                          [run_id, idx]).fetchone()
        if row is None:
            raise _transition_error(f"chunk {idx} of run {run_id} does not exist")
        return row

    def start_task(self, run_id: str, idx: int, max_attempts: int = 3) -> int:
        """pending|failed -> running, counting the attempt; returns the attempt number.

        A failed task may be retried only while attempts < max_attempts; anything else raises
        RIVET_STATE_TRANSITION.
        """
        def op(con: duckdb.DuckDBPyConnection) -> int:
            status, attempts = self._task_status(con, run_id, idx)
            if status not in ("pending", "failed"):
                raise _transition_error(f"chunk {idx} of run {run_id} is {status}, cannot start it")
            if status == "failed" and attempts >= max_attempts:
                raise _transition_error(f"chunk {idx} of run {run_id} failed {attempts} times"
                                        f" (max {max_attempts}), cannot retry it")
            con.execute("UPDATE chunk_task SET status = 'running', attempts = attempts + 1, started_at = ?,"
                        " finished_at = NULL WHERE run_id = ? AND chunk_index = ?", [now_iso(), run_id, idx])
            return attempts + 1
        return self._run(op)

    def complete_task(self, run_id: str, idx: int, rows: int, file_path: str | None) -> None:
        """running -> completed with the rows written and the part (None when the window was empty)."""
        def op(con: duckdb.DuckDBPyConnection) -> None:
            status, _ = self._task_status(con, run_id, idx)
            if status != "running":
                raise _transition_error(f"chunk {idx} of run {run_id} is {status}, cannot complete it")
            con.execute("UPDATE chunk_task SET status = 'completed', rows_written = ?, file_path = ?, error = NULL,"
                        " finished_at = ? WHERE run_id = ? AND chunk_index = ?",
                        [rows, file_path, now_iso(), run_id, idx])
        self._run(op)

    def fail_task(self, run_id: str, idx: int, error: str) -> None:
        """running -> failed with a one-line reason."""
        def op(con: duckdb.DuckDBPyConnection) -> None:
            status, _ = self._task_status(con, run_id, idx)
            if status != "running":
                raise _transition_error(f"chunk {idx} of run {run_id} is {status}, cannot fail it")
            con.execute("UPDATE chunk_task SET status = 'failed', error = ?, finished_at = ?"
                        " WHERE run_id = ? AND chunk_index = ?", [error, now_iso(), run_id, idx])
        self._run(op)

    def reset_running(self, run_id: str) -> int:
        """After a crash: running -> pending (attempts are kept); returns how many were reset."""
        return self._run(lambda con: len(con.execute(
            "UPDATE chunk_task SET status = 'pending', started_at = NULL WHERE run_id = ? AND status = 'running'"
            " RETURNING chunk_index", [run_id]).fetchall()))

    def reopen_task(self, run_id: str, idx: int) -> None:
        """completed -> pending, forgetting its rows and parts: on resume, its parts were found missing from the
        destination (deleted, bucket recreated), and skipping it would certify a prefix with a gap."""
        def op(con: duckdb.DuckDBPyConnection) -> None:
            status, _ = self._task_status(con, run_id, idx)
            if status != "completed":
                raise _transition_error(f"chunk {idx} of run {run_id} is {status}, cannot reopen it")
            con.execute("UPDATE chunk_task SET status = 'pending', rows_written = NULL, file_path = NULL,"
                        " started_at = NULL, finished_at = NULL WHERE run_id = ? AND chunk_index = ?", [run_id, idx])
        self._run(op)

    def finish_chunk_run(self, run_id: str, status: str) -> None:
        """Set a run's status: completed|failed stamps finished_at; in_progress reopens it (resume)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"chunk run status must be one of {RUN_STATUSES}, not {status!r}")
        finished = None if status == "in_progress" else now_iso()

        def op(con: duckdb.DuckDBPyConnection) -> None:
            if not con.execute("UPDATE chunk_run SET status = ?, finished_at = ? WHERE run_id = ? RETURNING 1",
                               [status, finished, run_id]).fetchall():
                raise _transition_error(f"chunk run {run_id} does not exist")
        self._run(op)

    def chunk_summary(self, run_id: str) -> dict[str, int]:
        """{pending, running, completed, failed, total, rows} for a run (rows = sum of rows_written)."""
        def op(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            counts = dict.fromkeys(TASK_STATUSES, 0)
            for status, n in con.execute("SELECT status, count(*) FROM chunk_task WHERE run_id = ? GROUP BY 1",
                                         [run_id]).fetchall():
                counts[status] = n
            counts["total"] = sum(counts[s] for s in TASK_STATUSES)
            counts["rows"] = int(con.execute("SELECT coalesce(sum(rows_written), 0) FROM chunk_task"
                                             " WHERE run_id = ?", [run_id]).fetchone()[0])
            return counts
        return self._run(op)

    # -- export_progression (ADR-0008) ---------------------------------------------------------------------------

    def _replace_committed(self, con: duckdb.DuckDBPyConnection, name: str, strategy: str, cursor: str | None,
                           chunk_index: int | None, run_id: str, verified_too: bool) -> None:
        """Write the committed boundary; with verified_too the whole row is replaced (PG4 strategy switch)."""
        con.execute(
            "INSERT INTO export_progression (export_name, last_committed_strategy, last_committed_cursor,"
            " last_committed_chunk_index, last_committed_run_id, last_committed_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (export_name) DO UPDATE SET last_committed_strategy = excluded.last_committed_strategy,"
            " last_committed_cursor = excluded.last_committed_cursor,"
            " last_committed_chunk_index = excluded.last_committed_chunk_index,"
            " last_committed_run_id = excluded.last_committed_run_id, last_committed_at = excluded.last_committed_at",
            [name, strategy, cursor, chunk_index, run_id, now_iso()])
        if verified_too:
            con.execute("UPDATE export_progression SET last_verified_strategy = NULL, last_verified_cursor = NULL,"
                        " last_verified_chunk_index = NULL, last_verified_run_id = NULL, last_verified_at = NULL"
                        " WHERE export_name = ?", [name])

    @staticmethod
    def _other_strategy(row: tuple | None, strategy: str) -> bool:
        return row is not None and any(s is not None and s != strategy for s in row[:2])

    def record_committed_incremental(self, name: str, cursor: str, run_id: str) -> bool:
        """Advance the committed boundary of an incremental export (PG3, PG4); True when the row changed.

        A cursor lower than the stored one (compare_cursors) leaves the row as is. A row written under another
        strategy is replaced whole. Call after the cursor write; log a failure, do not fail the run (PG2).
        """
        def op(con: duckdb.DuckDBPyConnection) -> bool:
            row = con.execute("SELECT last_committed_strategy, last_verified_strategy, last_committed_cursor"
                              " FROM export_progression WHERE export_name = ?", [name]).fetchone()
            switch = self._other_strategy(row, "incremental")
            if row is not None and not switch and row[2] is not None and compare_cursors(str(cursor), row[2]) < 0:
                return False
            self._replace_committed(con, name, "incremental", str(cursor), None, run_id, switch)
            return True
        return self._run(op)

    def record_committed_chunked(self, name: str, chunk_index: int, run_id: str) -> None:
        """Committed boundary of a checkpointed chunked run: its highest completed chunk index.

        New runs overwrite (ADR-0008 leaves chunked monotonicity out of scope); a row written under another
        strategy is replaced whole (PG4).
        """
        def op(con: duckdb.DuckDBPyConnection) -> None:
            row = con.execute("SELECT last_committed_strategy, last_verified_strategy FROM export_progression"
                              " WHERE export_name = ?", [name]).fetchone()
            self._replace_committed(con, name, "chunked", None, int(chunk_index), run_id,
                                    self._other_strategy(row, "chunked"))
        self._run(op)

    def record_verified_chunked(self, name: str, chunk_index: int, run_id: str) -> None:
        """Verified boundary, written only by a reconcile with zero mismatches and zero unknowns (PG5, PG6)."""
        self._exec(
            "INSERT INTO export_progression (export_name, last_verified_strategy, last_verified_cursor,"
            " last_verified_chunk_index, last_verified_run_id, last_verified_at) VALUES (?, 'chunked', NULL, ?, ?, ?)"
            " ON CONFLICT (export_name) DO UPDATE SET last_verified_strategy = 'chunked', last_verified_cursor = NULL,"
            " last_verified_chunk_index = excluded.last_verified_chunk_index,"
            " last_verified_run_id = excluded.last_verified_run_id, last_verified_at = excluded.last_verified_at",
            [name, int(chunk_index), run_id, now_iso()])

    def progression(self, name: str | None = None) -> list[dict[str, Any]]:
        """export_progression rows (all ADR-0008 columns), by export name."""
        return self._rows("SELECT * FROM export_progression WHERE (?::TEXT IS NULL OR export_name = ?)"
                          " ORDER BY export_name", [name, name])

    def reset_progression(self, name: str) -> bool:
        """Drop an export's committed and verified boundaries (`rivet state reset-progression`)."""
        return self._run(lambda con: bool(con.execute(
            "DELETE FROM export_progression WHERE export_name = ? RETURNING 1", [name]).fetchall()))

    # -- run_journal ---------------------------------------------------------------------------------------------

    def journal(self, export_name: str, run_id: str | None, event: str, payload: dict[str, Any] | None = None) -> int:
        """Append an event of a run; payload is stored as JSON (non-JSON values as their str)."""
        data = json.dumps(payload or {}, default=str)
        return self._run(lambda con: con.execute(
            "INSERT INTO run_journal (export_name, run_id, \"at\", event, payload) VALUES (?, ?, ?, ?, ?) RETURNING id",
            [export_name, run_id, now_iso(), event, data]).fetchone()[0])

    def journal_for(self, name: str, run_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Events of an export (or one run), oldest first; `limit` keeps the newest N."""
        rows = self._rows("SELECT * FROM (SELECT * FROM run_journal WHERE export_name = ?"
                          " AND (?::TEXT IS NULL OR run_id = ?) ORDER BY id DESC LIMIT ?) ORDER BY id",
                          [name, run_id, run_id, limit])
        for row in rows:
            row["payload"] = json.loads(row["payload"]) if row["payload"] else {}
        return rows

    def latest_events(self, event: str) -> dict[str, dict[str, Any]]:
        """The newest journal row of one kind per export, in one transaction (e.g. each export's last reconcile)."""
        rows = self._rows("SELECT * FROM run_journal WHERE event = ? "
                          "QUALIFY row_number() OVER (PARTITION BY export_name ORDER BY id DESC) = 1", [event])
        for row in rows:
            row["payload"] = json.loads(row["payload"]) if row["payload"] else {}
        return {row["export_name"]: row for row in rows}

    # -- overview ------------------------------------------------------------------------------------------------

    def summary(self, name: str | None = None) -> list[dict[str, Any]]:
        """Per export known to the state: cursor, cursor_column, last_run_id, last_run_at, last_status,
        files, rows, bytes (committed files only). For `rivet state show`."""
        return self._rows(
            "WITH names AS (SELECT export_name FROM export_state UNION SELECT export_name FROM file_log"
            " UNION SELECT export_name FROM export_metrics UNION SELECT export_name FROM chunk_run"
            " UNION SELECT export_name FROM export_progression),"
            " f AS (SELECT export_name, count(*) AS files, sum(rows) AS rows, sum(size_bytes) AS bytes"
            "       FROM file_log WHERE status = 'committed' GROUP BY export_name)"
            " SELECT n.export_name, s.last_cursor_value AS cursor, s.cursor_column, s.last_run_id, s.last_run_at,"
            " s.last_status, coalesce(f.files, 0) AS files, coalesce(f.rows, 0)::BIGINT AS rows,"
            " coalesce(f.bytes, 0)::BIGINT AS bytes"
            " FROM names n LEFT JOIN export_state s USING (export_name) LEFT JOIN f USING (export_name)"
            " WHERE (?::TEXT IS NULL OR n.export_name = ?) ORDER BY n.export_name", [name, name])
