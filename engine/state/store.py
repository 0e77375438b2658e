"""The state store: every table of Rivet's state, in one DuckDB file (docs/state.md).

All operations of a process on one file go through its writer (engine/state/writer.py): one long-lived connection,
group commit, and a knock protocol that lets another process in within a fraction of a second. A call returns
only after its transaction committed, so callers may rely on the order of their own writes (docs/state.md,
"How a process uses the file").

`batch()` applies the writes inside it together, atomically, as one unit. Everything returned is a plain dict (or a
list of dicts) keyed by column name, typed in engine/state/rows.py. Timestamps are TEXT in ISO 8601 UTC.
"""
from __future__ import annotations

import json
from itertools import groupby
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, Unpack, cast

import duckdb

from engine.errors import ExitClass, RivetError
from engine.state.cursors import compare_cursors, iso, now_iso
from engine.state.rows import (
    ChunkRunRow,
    ChunkSummary,
    ChunkTaskRow,
    ExportMetricsRow,
    ExportProgressionRow,
    ExportSchemaRow,
    ExportStateRow,
    FileLogRow,
    MetricsFields,
    RunJournalRow,
    SummaryRow,
)
from engine.state.schema import migrate
from engine.state.writer import StateWriter, corrupt, writer_for

T = TypeVar("T")
Con = duckdb.DuckDBPyConnection
ExportRows = tuple[ExportSchemaRow | None, ExportStateRow | None]   # StateStore.export_rows

TASK_STATUSES = ("pending", "running", "completed", "failed")
RUN_STATUSES = ("in_progress", "completed", "failed")
METRIC_FIELDS = ("export_name", "run_id", "mode", "status", "started_at", "finished_at", "duration_ms", "rows",
                 "files", "bytes", "retries", "error_code", "error_message")


def _dicts(cur: Con) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row)) for row in cur.fetchall()]


class _NoLiteral(Exception):
    pass


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and "\x00" not in value:   # the SQL parser stops at a NUL
        return "'" + value.replace("'", "''") + "'"   # the only escape in a standard DuckDB string literal
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    raise _NoLiteral


def _sql(con: Con, sql: str, params: Sequence[Any] = ()) -> Con:
    """con.execute(sql, params), with the parameters written into the statement as literals when they are None,
    bool, int, str or lists of those (else bound as parameters).

    Why: a statement with bound parameters costs DuckDB's Python client ~3x the same statement with literals
    (measured: a one-row INSERT ~4.5 ms vs ~1.5 ms on a loaded machine; docs/state.md, "What things cost"), and the writer
    thread runs every statement of the process. Every `?` in our SQL is a placeholder.
    """
    pieces = sql.split("?")
    if len(pieces) != len(params) + 1:
        raise ValueError(f"{len(pieces) - 1} placeholders, {len(params)} parameters: {sql}")
    try:
        text = pieces[0] + "".join(_literal(value) + piece for value, piece in zip(params, pieces[1:]))
    except _NoLiteral:
        return con.execute(sql, list(params))
    return con.execute(text)


def _count(con: Con, sql: str, params: Sequence[Any] = ()) -> int:
    """Rows changed by an UPDATE or DELETE (its result; cheaper than RETURNING, measured ~1.5x)."""
    row = _sql(con, sql, params).fetchone()
    return int(row[0]) if row else 0


def _upsert(con: Con, table: str, name: str, new: bool = False, **values: Any) -> None:
    """Set columns of the row keyed by export_name, creating it when missing.

    Not INSERT ... ON CONFLICT DO UPDATE: DuckDB takes ~5x an UPDATE for it (measured ~12-16 ms vs ~1-4 ms);
    an UPDATE, then an INSERT when it changed no row, is safe because only the writer thread writes.
    `new`: the row was missing when last read (an export's first run), so the INSERT goes first, guarded by NOT
    EXISTS, and the UPDATE runs only if the row turned up meanwhile: one statement instead of two. Either order is
    correct whatever the row's state; the hint only picks the cheaper one (each statement the writer thread runs
    waits for the GIL several times while exports run: docs/state.md, "Things to know").
    """
    sets = ", ".join(f"{column} = ?" for column in values)
    columns = ", ".join(["export_name", *values])
    update = (f"UPDATE {table} SET {sets} WHERE export_name = ?", [*values.values(), name])
    if new:
        if not _count(con, f"INSERT INTO {table} ({columns}) SELECT {', '.join('?' * (len(values) + 1))} "
                           f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE export_name = ?)",
                      [name, *values.values(), name]):
            _sql(con, *update)
    elif not _count(con, *update):
        _sql(con, f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * (len(values) + 1))})",
             [name, *values.values()])


class JournalRow(NamedTuple):
    export_name: str
    run_id: str | None
    at: str
    event: str
    payload: str   # JSON


def _journal_row(export_name: str, run_id: str | None, event: str, payload: dict[str, Any] | None) -> JournalRow:
    return JournalRow(export_name, run_id, now_iso(), event, json.dumps(payload or {}, default=str))


_JOURNAL_INSERT = "INSERT INTO run_journal (export_name, run_id, \"at\", event, payload) VALUES "


def _insert_journal(con: Con, rows: Sequence[JournalRow]) -> None:
    """Many journal rows in one statement per 500 (one INSERT of 48 rows costs what ~3 one-row INSERTs do)."""
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        _sql(con, _JOURNAL_INSERT + ", ".join(["(?, ?, ?, ?, ?)"] * len(part)), [v for row in part for v in row])


class FileRow(NamedTuple):
    """A file_log row as log_file queues it inside a batch (rows queued together are inserted in one statement)."""
    export_name: str
    run_id: str
    path: str
    rows: int
    size_bytes: int
    content_hash: str | None
    chunk_index: int | None
    format: str | None
    compression: str | None
    created_at: str


_FILE_INSERT = f"INSERT INTO file_log ({', '.join(FileRow._fields)}) VALUES "


def _insert_files(con: Con, rows: Sequence[FileRow]) -> None:
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        _sql(con, _FILE_INSERT + ", ".join([f"({', '.join('?' * len(FileRow._fields))})"] * len(part)),
             [v for row in part for v in row])


class Completion(NamedTuple):
    """A chunk task's running -> completed, as complete_task queues it (queued together: one statement)."""
    run_id: str
    chunk_index: int
    rows: int
    file_path: str | None
    finished_at: str


def _complete_tasks(con: Con, done: Sequence[Completion]) -> None:
    """Complete every task in one UPDATE; a task that was not running refuses the whole batch, naming it."""
    if len(done) == 1:   # the plain UPDATE costs ~60 % of the joined one
        run_id, idx, rows, path, finished = done[0]
        _move_task(con, run_id, idx, _COMPLETED.format(rows="?", path="?", finished="?"), [rows, path, finished],
                   "status = 'running'", _cannot("complete", run_id, idx))
        return
    first = _first_of_each_chunk(done)
    moved = set(_sql(con, "UPDATE chunk_task SET " + _COMPLETED.format(rows="v.rows", path="v.path",
                                                                    finished="v.finished") +
                     " FROM (VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * len(first)) + ")"
                     " v(run_id, idx, rows, path, finished) WHERE chunk_task.run_id = v.run_id"
                     " AND chunk_task.chunk_index = v.idx AND chunk_task.status = 'running'"
                     " RETURNING chunk_task.run_id, chunk_task.chunk_index",
                     [v for row in first for v in row]).fetchall())
    for run_id, idx, *_ in done:
        if (run_id, idx) not in moved:   # never moved, or a second completion of the same chunk
            raise _task_refusal(con, run_id, idx, _cannot("complete", run_id, idx))
        moved.discard((run_id, idx))


_COMPLETED = "status = 'completed', rows_written = {rows}, file_path = {path}, error = NULL, finished_at = {finished}"


def _first_of_each_chunk(rows: Sequence[Any]) -> list[Any]:
    """One row per (run_id, chunk_index): DuckDB 1.5's UPDATE ... FROM fails with a false "Duplicate key" on
    another row when its join matches one row twice (after earlier updates to the table)."""
    first: dict[tuple[str, int], Any] = {}
    for row in rows:
        first.setdefault((row.run_id, row.chunk_index), row)
    return list(first.values())


class TaskStart(NamedTuple):
    run_id: str
    chunk_index: int
    max_attempts: int


def _start_refusal(start: TaskStart) -> Callable[[str, int], str]:
    def refuse(status: str, attempts: int) -> str:
        if status == "failed":
            return (f"chunk {start.chunk_index} of run {start.run_id} failed {attempts} times "
                    f"(max {start.max_attempts}), cannot retry it")
        return _cannot("start", start.run_id, start.chunk_index)(status, attempts)
    return refuse


def _start_tasks(con: Con, starts: Sequence[TaskStart]) -> list[int | RivetError]:
    """pending|failed -> running, counting the attempt, for every start queued meanwhile in one statement
    (StateStore.start_task): one outcome each, its attempt number or its own refusal."""
    first = _first_of_each_chunk(starts)   # a second start of a chunk is refused below: it finds it running
    update = "UPDATE chunk_task SET status = 'running', attempts = attempts + 1, started_at = ?, finished_at = NULL"
    if len(first) == 1:   # the plain UPDATE costs ~60 % of the joined one
        found = _sql(con, update + " WHERE run_id = ? AND chunk_index = ? AND (status = 'pending'"
                     " OR (status = 'failed' AND attempts < ?)) RETURNING run_id, chunk_index, attempts",
                     [now_iso(), *first[0]]).fetchall()
    else:
        found = _sql(con, update + " FROM (VALUES " + ", ".join(["(?, ?, ?)"] * len(first)) + ")"
                     " v(run_id, idx, max_attempts) WHERE chunk_task.run_id = v.run_id"
                     " AND chunk_task.chunk_index = v.idx AND (chunk_task.status = 'pending'"
                     " OR (chunk_task.status = 'failed' AND chunk_task.attempts < v.max_attempts))"
                     " RETURNING chunk_task.run_id, chunk_task.chunk_index, chunk_task.attempts",
                     [now_iso(), *(v for start in first for v in start)]).fetchall()
    attempt = {(run_id, idx): int(n) for run_id, idx, n in found}
    return [attempt.pop((s.run_id, s.chunk_index)) if (s.run_id, s.chunk_index) in attempt   # a duplicate: refused
            else _task_refusal(con, s.run_id, s.chunk_index, _start_refusal(s)) for s in starts]


# What a batch() collects: writes, and rows that consecutive items of the same type insert or move in one statement.
BatchItem = Callable[[Con], Any] | JournalRow | FileRow | Completion
_BULK: dict[type, Callable[[Con, list[Any]], None]] = {
    JournalRow: _insert_journal, FileRow: _insert_files, Completion: _complete_tasks}


def _apply(items: list[BatchItem]) -> Callable[[Con], None]:
    def op(con: Con) -> None:
        for kind, run in groupby(items, key=type):
            if kind in _BULK:
                _BULK[kind](con, list(run))
            else:
                for item in run:
                    cast(Callable[[Con], Any], item)(con)
    return op


def _task_refusal(con: Con, run_id: str, idx: int, refuse: Callable[[str, int], str]) -> RivetError:
    found = _sql(con, "SELECT status, attempts FROM chunk_task WHERE run_id = ? AND chunk_index = ?",
                 [run_id, idx]).fetchone()
    if found is None:
        return _transition_error(f"chunk {idx} of run {run_id} does not exist")
    return _transition_error(refuse(*found))


def _cannot(verb: str, run_id: str, idx: int) -> Callable[[str, int], str]:
    return lambda status, _: f"chunk {idx} of run {run_id} is {status}, cannot {verb} it"


def _move_task(con: Con, run_id: str, idx: int, update: str, params: list[Any], allowed: str,
               refuse: Callable[[str, int], str]) -> None:
    """One transition in one statement, UPDATE ... WHERE <allowed>; only when no row moved, a SELECT says why.
    (A check before each update would double the writer's work on a chunked run's hot path.)"""
    if not _count(con, f"UPDATE chunk_task SET {update} WHERE run_id = ? AND chunk_index = ? AND ({allowed})",
                  [*params, run_id, idx]):
        raise _task_refusal(con, run_id, idx, refuse)


def _transition_error(what: str) -> RivetError:
    return RivetError("RIVET_STATE_TRANSITION", what,
                      "chunk tasks move strictly forward pending -> running -> completed|failed; this is a bug in "
                      "the caller, or another process changed the run", ExitClass.INTERNAL)


def _journal_rows(rows: list[dict[str, Any]]) -> list[RunJournalRow]:
    for row in rows:
        row["payload"] = json.loads(row["payload"]) if row["payload"] else {}
    return cast(list[RunJournalRow], rows)


class StateStore:
    """Rivet's persistent state in one DuckDB file. Thread-safe; share one between worker threads.

    Creating a StateStore creates the parent directory and the file if needed and applies pending migrations.
    Several StateStore objects on one file in one process share its writer (and its connection).
    """

    def __init__(self, path: str | Path, lock_wait_s: float = 60.0):
        self.path = Path(path).expanduser().absolute()
        self.lock_wait_s = max(0.0, float(lock_wait_s))
        if self.path.is_dir():
            raise RivetError("RIVET_STATE_PATH", f"state path {self.path} is a directory",
                             "give --state the path of a file, e.g. .rivet/state.duckdb")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RivetError("RIVET_STATE_PATH", f"cannot create the state directory {self.path.parent}: "
                             f"{exc.strerror}", "check the permissions, or point --state elsewhere") from None
        self._writer: StateWriter = writer_for(self.path)
        self._writer.call(self._migrate, self.lock_wait_s, "adopt")

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    def _migrate(self, con: Con) -> None:
        try:
            migrate(con)
        except duckdb.IOException:
            raise
        except duckdb.Error as exc:
            raise corrupt(self._writer.path, f"has an unexpected schema: {str(exc).splitlines()[0]}") from None

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _batch_items(self) -> list[BatchItem] | None:
        return cast(list[BatchItem] | None, getattr(self._writer.local, "items", None))

    def _query(self, op: Callable[[Con], T], reads_only: bool = False) -> T:
        """Run op now, in the next group, and return its result (after the commit). `reads_only`: op only reads
        (a group of such ops runs without a transaction)."""
        if self._batch_items() is not None:
            raise RuntimeError("StateStore: only writes may be queued in batch(); read before or after it")
        return cast(T, self._writer.call(op, self.lock_wait_s, reads_only=reads_only))

    def _write(self, op: Callable[[Con], T]) -> T | None:
        """Like _query, but inside a batch() the write joins the batch and returns None."""
        items = self._batch_items()
        if items is not None:
            items.append(op)
            return None
        return cast(T, self._writer.call(op, self.lock_wait_s))

    def _write_rows(self, row: FileRow | Completion) -> None:
        """A row for one of the _BULK writers: joins the batch (where rows of a kind are written together), else
        written now."""
        items = self._batch_items()
        if items is not None:
            items.append(row)
        else:
            self._writer.call(_apply([row]), self.lock_wait_s)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._query(lambda con: _dicts(_sql(con, sql, params)), reads_only=True)

    def _upsert(self, table: str, name: str, new: bool = False, **values: Any) -> None:
        self._write(lambda con: _upsert(con, table, name, new, **values))

    @contextmanager
    def batch(self, later: list[Future[None]] | None = None) -> Iterator[StateStore]:
        """Apply the writes inside together, atomically, as one unit, when the block ends without an error.

        Only writes may be called inside (reads raise RuntimeError: they would see nothing of the batch yet); those
        that return an id return None here. An error in one of them is raised when the block ends. Nested batches
        join the outer one. Keep progression writes out of the batch that moves the cursor, so that their failure
        cannot undo it (PG2).

        `later`: do not wait for the commit; append its future to `later` (the caller waits for it, and sees the
        error, when it must; what is read afterwards in this process already sees the batch).
        """
        local = self._writer.local
        if getattr(local, "items", None) is not None:
            yield self
            return
        items: list[BatchItem] = []
        local.items = items
        try:
            yield self
        finally:
            local.items = None
        if items and later is not None:
            later.append(self._writer.call_soon(_apply(items), self.lock_wait_s))
        elif items:
            self._writer.call(_apply(items), self.lock_wait_s)

    def flush(self) -> None:
        """Wait until every write queued so far in this process (journal_async too) is committed."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the file now, so that another process can open it at once (the next call reopens)."""
        self._writer.close()

    def schema_version(self) -> int:
        return self._query(lambda con: cast(tuple[int], _sql(con, "SELECT max(version) FROM schema_version")
                                            .fetchone())[0])

    # -- export_state: the execution cursor (PG1) ----------------------------------------------------------------

    def get_export_state(self, name: str) -> ExportStateRow | None:
        rows = self._rows("SELECT * FROM export_state WHERE export_name = ?", [name])
        return cast(ExportStateRow, rows[0]) if rows else None

    def export_rows(self, name: str) -> ExportRows:
        """The export's schema row and state row, read in one statement (what the planner reads)."""
        return self.read_export_rows(name).result()

    def read_export_rows(self, name: str) -> Future[ExportRows]:
        """export_rows without waiting (.result() waits): the runner starts the read before it connects to the
        source, so that the wait for the state writer, shared by every export in flight, overlaps the connect."""
        def op(con: Con) -> ExportRows:
            found = dict(_sql(con, "SELECT 0, to_json(s) FROM export_schema s WHERE export_name = ? UNION ALL "
                                   "SELECT 1, to_json(e) FROM export_state e WHERE export_name = ?",
                              [name, name]).fetchall())
            schema = cast(ExportSchemaRow | None, json.loads(found[0]) if 0 in found else None)
            if schema is not None:
                schema["columns"] = json.loads(cast(str, schema["columns"]))
            return schema, cast(ExportStateRow | None, json.loads(found[1]) if 1 in found else None)
        return cast(Future[ExportRows], self._writer.call_soon(op, self.lock_wait_s, reads_only=True))

    def set_cursor(self, name: str, value: str, column: str | None, identity: str | None, run_id: str,
                   new: bool = False) -> None:
        """Move the execution cursor (after the data it covers is durable). `new`: no state row when planned."""
        self._upsert("export_state", name, new, last_cursor_value=None if value is None else str(value),
                     cursor_column=column, cursor_identity=identity, cursor_run_id=run_id, cursor_updated_at=now_iso())

    def reset_state(self, name: str) -> bool:
        """Forget the cursor and its identity (`rivet state reset`); True when there was one to forget.

        Last-run fields, files, metrics and progression are kept (progression is cleared only by
        reset_progression, PG8).
        """
        def op(con: Con) -> bool:
            row = _sql(con, "SELECT last_cursor_value, cursor_column, cursor_identity FROM export_state"
                              " WHERE export_name = ?", [name]).fetchone()
            if row is None or row == (None, None, None):
                return False
            _sql(con, "UPDATE export_state SET last_cursor_value = NULL, cursor_column = NULL,"
                        " cursor_identity = NULL, cursor_run_id = NULL, cursor_updated_at = ? WHERE export_name = ?",
                        [now_iso(), name])
            return True
        return self._query(op)

    def accept_identity(self, name: str, column: str | None, identity: str | None) -> None:
        """Keep the stored cursor but adopt a new cursor column / identity (`rivet state accept`)."""
        self._upsert("export_state", name, cursor_column=column, cursor_identity=identity,
                     cursor_updated_at=now_iso())

    def set_last_run(self, name: str, run_id: str, status: str, new: bool = False) -> None:
        """`new`: the export had no state row when planned (and the run has not written one since)."""
        self._upsert("export_state", name, new, last_run_id=run_id, last_run_at=now_iso(), last_status=status)

    # -- file_log ------------------------------------------------------------------------------------------------

    def log_file(self, export_name: str, run_id: str, path: str, rows: int, size_bytes: int,
                 content_hash: str | None, chunk_index: int | None, fmt: str | None,
                 compression: str | None) -> None:
        """Record a durably written part (status 'committed'). Inside a batch, consecutive parts are inserted in
        one statement."""
        self._write_rows(FileRow(export_name, run_id, path, rows, size_bytes, content_hash, chunk_index, fmt,
                                 compression, now_iso()))

    def files(self, name: str | None = None, run_id: str | None = None,
              status: str | None = None) -> list[FileLogRow]:
        """File log rows, oldest first, filtered by export, run and/or status."""
        # only the filters given, as plain equalities: DuckDB pushes those into the scan ("? IS NULL OR" it cannot)
        given = [(col, v) for col, v in (("export_name", name), ("run_id", run_id), ("status", status)) if v is not None]
        where = " AND ".join(f"{col} = ?" for col, _ in given) or "TRUE"
        return cast(list[FileLogRow], self._rows(f"SELECT * FROM file_log WHERE {where} ORDER BY id",
                                                 [v for _, v in given]))

    def supersede_files(self, export_name: str, paths: Iterable[str]) -> int | None:
        """Mark committed parts as superseded (e.g. replaced by a repair); returns how many changed (None inside a
        batch)."""
        paths = list(paths)
        if not paths:
            return 0
        return self._write(lambda con: _count(
            con, "UPDATE file_log SET status = 'superseded' WHERE export_name = ? AND status = 'committed'"
            " AND list_contains(?::TEXT[], path)", [export_name, paths]))

    # -- export_metrics ------------------------------------------------------------------------------------------

    def record_metrics(self, **fields: Unpack[MetricsFields]) -> int | None:
        """One run's metrics (fields: METRIC_FIELDS; export_name required; datetimes become ISO text); returns its
        id (None inside a batch)."""
        values: dict[str, Any] = dict(fields)
        unknown = set(values) - set(METRIC_FIELDS)
        if unknown:
            raise TypeError(f"record_metrics: unknown fields {sorted(unknown)}")
        if not values.get("export_name"):
            raise TypeError("record_metrics: export_name is required")
        for key in ("started_at", "finished_at"):
            if key in values:
                values[key] = iso(values[key])
        cols = list(values)
        sql = (f"INSERT INTO export_metrics ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
               " RETURNING id")
        return self._write(lambda con: cast(tuple[int], _sql(con, sql, [values[c] for c in cols]).fetchone())[0])

    def metrics(self, name: str | None = None, last: int | None = None) -> list[ExportMetricsRow]:
        """Run history, newest first; `last` limits the number of rows."""
        return cast(list[ExportMetricsRow], self._rows(
            "SELECT * FROM export_metrics WHERE (?::TEXT IS NULL OR export_name = ?) ORDER BY id DESC LIMIT ?",
            [name, name, last]))

    # -- export_schema -------------------------------------------------------------------------------------------

    def get_schema(self, name: str) -> ExportSchemaRow | None:
        """{export_name, columns: [{name, type}], fingerprint, updated_at} or None."""
        rows = self._rows("SELECT * FROM export_schema WHERE export_name = ?", [name])
        if not rows:
            return None
        rows[0]["columns"] = json.loads(rows[0]["columns"])
        return cast(ExportSchemaRow, rows[0])

    def set_schema(self, name: str, columns: Sequence[dict[str, Any]], fingerprint: str, new: bool = False) -> None:
        """`new`: the export had no schema row when planned."""
        self._upsert("export_schema", name, new, columns=json.dumps(list(columns)), fingerprint=fingerprint,
                     updated_at=now_iso())

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

        def op(con: Con) -> None:
            if _sql(con, "SELECT 1 FROM chunk_run WHERE run_id = ?", [run_id]).fetchone():
                raise RivetError("RIVET_STATE_DUPLICATE_RUN", f"chunk run {run_id} already exists",
                                 "run ids are unique; this is a bug in the caller", ExitClass.INTERNAL)
            _sql(con, "INSERT INTO chunk_run (run_id, export_name, plan_hash, status, chunk_column, created_at,"
                        " chunk_count) VALUES (?, ?, ?, 'in_progress', ?, ?, ?)",
                        [run_id, export_name, plan_hash, chunk_column, now_iso(), len(chunks)])
            con.register("_rivet_chunks", table)
            try:
                _sql(con, "INSERT INTO chunk_task (run_id, chunk_index, lo, hi)"
                            " SELECT ?, chunk_index, lo, hi FROM _rivet_chunks", [run_id])
            finally:
                con.unregister("_rivet_chunks")
        self._write(op)

    def latest_chunk_run(self, name: str, status: str | None = None) -> ChunkRunRow | None:
        """The newest chunk run of an export (optionally with a given status), or None."""
        rows = self._rows("SELECT * EXCLUDE (seq) FROM chunk_run WHERE export_name = ?"
                          " AND (?::TEXT IS NULL OR status = ?) ORDER BY seq DESC LIMIT 1", [name, status, status])
        return cast(ChunkRunRow, rows[0]) if rows else None

    def chunk_run(self, run_id: str) -> ChunkRunRow | None:
        rows = self._rows("SELECT * EXCLUDE (seq) FROM chunk_run WHERE run_id = ?", [run_id])
        return cast(ChunkRunRow, rows[0]) if rows else None

    def chunk_tasks(self, run_id: str, status: str | Sequence[str] | None = None) -> list[ChunkTaskRow]:
        """Tasks of a run by chunk_index; `status` is one status or several."""
        statuses = None if status is None else [status] if isinstance(status, str) else list(status)
        return cast(list[ChunkTaskRow], self._rows(
            "SELECT * FROM chunk_task WHERE run_id = ? AND (?::TEXT[] IS NULL OR list_contains(?::TEXT[], status))"
            " ORDER BY chunk_index", [run_id, statuses, statuses]))

    def start_task(self, run_id: str, idx: int, max_attempts: int = 3) -> int:
        """pending|failed -> running, counting the attempt; returns the attempt number.

        A failed task may be retried only while attempts < max_attempts; anything else raises
        RIVET_STATE_TRANSITION. Starts queued by other threads meanwhile run in the same statement.
        """
        return cast(int, self.start_task_soon(run_id, idx, max_attempts).result())

    def start_task_soon(self, run_id: str, idx: int, max_attempts: int = 3) -> Future[int]:
        """start_task without waiting for the commit: the future gives the attempt number, or the refusal as its
        exception, once the writer's next group committed."""
        if self._batch_items() is not None:
            raise RuntimeError("StateStore: start_task returns the attempt; call it before or after a batch()")
        return self._writer.append("start_task", TaskStart(run_id, idx, int(max_attempts)), _start_tasks,
                                   self.lock_wait_s)

    def complete_task(self, run_id: str, idx: int, rows: int, file_path: str | None) -> None:
        """running -> completed with the rows written and the part (None when the window was empty). Inside a
        batch, consecutive completions run as one statement."""
        self._write_rows(Completion(run_id, idx, rows, file_path, now_iso()))

    def fail_task(self, run_id: str, idx: int, error: str) -> None:
        """running -> failed with a one-line reason."""
        self._write(lambda con: _move_task(
            con, run_id, idx, "status = 'failed', error = ?, finished_at = ?", [error, now_iso()],
            "status = 'running'", _cannot("fail", run_id, idx)))

    def reset_running(self, run_id: str) -> int:
        """After a crash: running -> pending (attempts are kept); returns how many were reset."""
        return self._query(lambda con: _count(
            con, "UPDATE chunk_task SET status = 'pending', started_at = NULL WHERE run_id = ? AND status = 'running'",
            [run_id]))

    def reopen_task(self, run_id: str, idx: int) -> None:
        """completed -> pending, forgetting its rows and parts: on resume, its parts were found missing from the
        destination (deleted, bucket recreated), and skipping it would certify a prefix with a gap."""
        self._write(lambda con: _move_task(
            con, run_id, idx, "status = 'pending', rows_written = NULL, file_path = NULL, started_at = NULL,"
            " finished_at = NULL", [], "status = 'completed'",
            _cannot("reopen", run_id, idx)))

    def abandon_chunk_run(self, run_id: str) -> None:
        """A failed chunk run that must not be resumed (its parts failed a quality gate, engine/guardrails.py):
        its plan hash is cleared, so the planner starts a new run instead of certifying the same parts again."""
        def op(con: Con) -> None:
            if not _count(con, "UPDATE chunk_run SET status = 'failed', plan_hash = NULL WHERE run_id = ?", [run_id]):
                raise _transition_error(f"chunk run {run_id} does not exist")
        self._write(op)

    def finish_chunk_run(self, run_id: str, status: str) -> None:
        """Set a run's status: completed|failed stamps finished_at; in_progress reopens it (resume)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"chunk run status must be one of {RUN_STATUSES}, not {status!r}")
        finished = None if status == "in_progress" else now_iso()

        def op(con: Con) -> None:
            if not _count(con, "UPDATE chunk_run SET status = ?, finished_at = ? WHERE run_id = ?",
                          [status, finished, run_id]):
                raise _transition_error(f"chunk run {run_id} does not exist")
        self._write(op)

    def chunk_summary(self, run_id: str) -> ChunkSummary:
        """{pending, running, completed, failed, total, rows} for a run (rows = sum of rows_written)."""
        def op(con: Con) -> ChunkSummary:
            counts = dict.fromkeys(TASK_STATUSES, 0)
            for status, n in _sql(con, "SELECT status, count(*) FROM chunk_task WHERE run_id = ? GROUP BY 1",
                                         [run_id]).fetchall():
                counts[status] = n
            total = _sql(con, "SELECT coalesce(sum(rows_written), 0) FROM chunk_task WHERE run_id = ?",
                                [run_id]).fetchone()
            return ChunkSummary(pending=counts["pending"], running=counts["running"], completed=counts["completed"],
                                failed=counts["failed"], total=sum(counts.values()), rows=int(total[0] if total else 0))
        return self._query(op)

    # -- export_progression (docs/state.md, "Progression") --------------------------------------------------------

    @staticmethod
    def _replace_committed(con: Con, name: str, strategy: str, cursor: str | None, chunk_index: int | None,
                           run_id: str, verified_too: bool) -> None:
        """Write the committed boundary; with verified_too the whole row is replaced (PG4 strategy switch)."""
        _upsert(con, "export_progression", name, last_committed_strategy=strategy, last_committed_cursor=cursor,
                last_committed_chunk_index=chunk_index, last_committed_run_id=run_id, last_committed_at=now_iso())
        if verified_too:
            _sql(con, "UPDATE export_progression SET last_verified_strategy = NULL, last_verified_cursor = NULL,"
                        " last_verified_chunk_index = NULL, last_verified_run_id = NULL, last_verified_at = NULL"
                        " WHERE export_name = ?", [name])

    @staticmethod
    def _other_strategy(row: tuple[Any, ...] | None, strategy: str) -> bool:
        return row is not None and any(s is not None and s != strategy for s in row[:2])

    def record_committed_incremental(self, name: str, cursor: str, run_id: str) -> bool:
        """Advance the committed boundary of an incremental export (PG3, PG4); True when the row changed.

        A cursor lower than the stored one (compare_cursors) leaves the row as is. A row written under another
        strategy is replaced whole. Call after the cursor write; log a failure, do not fail the run (PG2).
        """
        def op(con: Con) -> bool:
            row = _sql(con, "SELECT last_committed_strategy, last_verified_strategy, last_committed_cursor"
                              " FROM export_progression WHERE export_name = ?", [name]).fetchone()
            switch = self._other_strategy(row, "incremental")
            if row is not None and not switch and row[2] is not None and compare_cursors(str(cursor), row[2]) < 0:
                return False
            self._replace_committed(con, name, "incremental", str(cursor), None, run_id, switch)
            return True
        return self._query(op)

    def record_committed_chunked(self, name: str, chunk_index: int, run_id: str) -> None:
        """Committed boundary of a checkpointed chunked run: its highest completed chunk index.

        New runs overwrite (chunked monotonicity is out of the contract's scope); a row written under another
        strategy is replaced whole (PG4).
        """
        def op(con: Con) -> None:
            row = _sql(con, "SELECT last_committed_strategy, last_verified_strategy FROM export_progression"
                              " WHERE export_name = ?", [name]).fetchone()
            self._replace_committed(con, name, "chunked", None, int(chunk_index), run_id,
                                    self._other_strategy(row, "chunked"))
        self._write(op)

    def record_verified_chunked(self, name: str, chunk_index: int, run_id: str) -> None:
        """Verified boundary, written only by a reconcile with zero mismatches and zero unknowns (PG5, PG6)."""
        self._upsert("export_progression", name, last_verified_strategy="chunked", last_verified_cursor=None,
                     last_verified_chunk_index=int(chunk_index), last_verified_run_id=run_id,
                     last_verified_at=now_iso())

    def progression(self, name: str | None = None) -> list[ExportProgressionRow]:
        """export_progression rows (all contract columns), by export name."""
        return cast(list[ExportProgressionRow], self._rows(
            "SELECT * FROM export_progression WHERE (?::TEXT IS NULL OR export_name = ?) ORDER BY export_name",
            [name, name]))

    def reset_progression(self, name: str) -> bool:
        """Drop an export's committed and verified boundaries (`rivet state reset-progression`)."""
        return self._query(lambda con: bool(_count(con, "DELETE FROM export_progression WHERE export_name = ?",
                                                   [name])))

    # -- run_journal ---------------------------------------------------------------------------------------------

    def journal(self, export_name: str, run_id: str | None, event: str,
                payload: dict[str, Any] | None = None) -> int | None:
        """Append an event of a run; payload is stored as JSON (non-JSON values as their str). Returns its id
        (None inside a batch)."""
        row = _journal_row(export_name, run_id, event, payload)
        items = self._batch_items()
        if items is not None:
            items.append(row)
            return None
        return self._query(lambda con: cast(tuple[int], _sql(con, _JOURNAL_INSERT + "(?, ?, ?, ?, ?) RETURNING id",
                                                             row).fetchone())[0])

    def journal_async(self, export_name: str, run_id: str | None, event: str,
                      payload: dict[str, Any] | None = None) -> None:
        """Like journal, but returns at once: the row is committed with the next group (with every other row queued
        meanwhile, in one statement), and a failure is dropped (the journal is observational). flush(), close() and
        the process's exit wait for it."""
        row = _journal_row(export_name, run_id, event, payload)
        items = self._batch_items()
        if items is not None:
            items.append(row)
        else:
            self._writer.append_async("run_journal", row, _insert_journal, self.lock_wait_s)

    def journal_for(self, name: str, run_id: str | None = None, limit: int | None = None) -> list[RunJournalRow]:
        """Events of an export (or one run), oldest first; `limit` keeps the newest N."""
        return _journal_rows(self._rows(
            "SELECT * FROM (SELECT * FROM run_journal WHERE export_name = ? AND (?::TEXT IS NULL OR run_id = ?)"
            " ORDER BY id DESC LIMIT ?) ORDER BY id", [name, run_id, run_id, limit]))

    def latest_events(self, event: str) -> dict[str, RunJournalRow]:
        """The newest journal row of one kind per export, in one transaction (e.g. each export's last reconcile)."""
        rows = _journal_rows(self._rows(
            "SELECT * FROM run_journal WHERE event = ? "
            "QUALIFY row_number() OVER (PARTITION BY export_name ORDER BY id DESC) = 1", [event]))
        return {row["export_name"]: row for row in rows}

    # -- overview ------------------------------------------------------------------------------------------------

    def summary(self, name: str | None = None) -> list[SummaryRow]:
        """Per export known to the state: cursor, cursor_column, last_run_id, last_run_at, last_status,
        files, rows, bytes (committed files only). For `rivet state show`."""
        return cast(list[SummaryRow], self._rows(
            "WITH names AS (SELECT export_name FROM export_state UNION SELECT export_name FROM file_log"
            " UNION SELECT export_name FROM export_metrics UNION SELECT export_name FROM chunk_run"
            " UNION SELECT export_name FROM export_progression),"
            " f AS (SELECT export_name, count(*) AS files, sum(rows) AS rows, sum(size_bytes) AS bytes"
            "       FROM file_log WHERE status = 'committed' GROUP BY export_name)"
            " SELECT n.export_name, s.last_cursor_value AS cursor, s.cursor_column, s.last_run_id, s.last_run_at,"
            " s.last_status, coalesce(f.files, 0) AS files, coalesce(f.rows, 0)::BIGINT AS rows,"
            " coalesce(f.bytes, 0)::BIGINT AS bytes"
            " FROM names n LEFT JOIN export_state s USING (export_name) LEFT JOIN f USING (export_name)"
            " WHERE (?::TEXT IS NULL OR n.export_name = ?) ORDER BY n.export_name", [name, name]))
