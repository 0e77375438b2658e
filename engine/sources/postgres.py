"""PostgreSQL: psycopg for introspection, counts and settings; DuckDB's postgres scanner for the rows.

Every connection rivet opens carries statement_timeout and TimeZone=UTC as startup options (libpq `options`), so
the native connection and the DuckDB scanner's connections (several, for a parallel scan) all get them. A pooler
in transaction mode (PgBouncer) must allow the `options` startup parameter (ignore_startup_parameters = options).
"""
from __future__ import annotations

import difflib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from pyarrow._compute import call_function   # not pyarrow.compute: engine/formats.py says why
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engine import duck
from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.layouts import DUCKDB_PIECE_ROWS, BatchBudget, regroup
from engine.secrets import redact, register
from engine.sources.base import LOCKED, BatchStream, Relation, Source, SourceColumn
from engine.sql import QUERY_ALIAS, PostgresDialect, strip_query
from engine.types import GUARD_MARKER, NATIVE_TYPE_KEY, override_hint

# Values the scanner hands over that no Arrow value of the column's type holds (docs/types.md):
# - ±infinity dates and timestamps arrive as the storage type's extreme values;
# - timestamps after 294247-01-10 04:00:54.775806 (PostgreSQL goes on to 294276) wrap: shifting PostgreSQL's 2000
#   epoch to Arrow's 1970 one overflows int64, so they land below PostgreSQL's first timestamp (4714-11-24 BC);
#   the last microsecond before that collides with +infinity;
# - time 24:00:00, which PostgreSQL allows and an Arrow time of day ends before.
_DATE_INFINITY = 2**31 - 1
_TIMESTAMP_INFINITY = 2**63 - 1
_FIRST_PG_TIMESTAMP_US = -210_866_803_200_000_000
_DAY_US = 86_400_000_000
_TRANSIENT_STATES = ("08", "40001", "40P01", "53", "57P01", "57P02", "57P03", "57P05")
_TRANSIENT_TEXT = ("server closed the connection", "terminating connection", "connection reset", "ssl syscall",
                   "could not receive data", "could not send data", "connection to server was lost", "eof detected",
                   "too many clients", "remaining connection slots", "deadlock detected",
                   "could not serialize access", "the database system is", "broken pipe", "no connection to the server")
READ_LOCK_TIMEOUT_MS = 2_000   # a read waiting on a lock means DDL queued behind the guard: waiting cannot help
DUCKDB_PAGES_PER_TASK = 1000   # DuckDB's pg_pages_per_task (its default, not set here): one ctid range per 1,000 pages
GUARD_WAIT_S = 600        # the guard's lock wait when statement_timeout_s is 0 (no timeout): still bounded
_UNREACHABLE_TEXT = ("connection refused", "timeout expired", "could not translate host name", "no route to host",
                     "network is unreachable", "could not connect", "name or service not known", "timed out")


def classify(exc: BaseException, where: str, connecting: bool = False) -> RivetError:
    """Turn a psycopg / DuckDB error into a RivetError with the right code and exit class (never a password)."""
    if isinstance(exc, RivetError):
        return exc
    state = getattr(exc, "sqlstate", None) or ""
    raw = redact(str(exc).strip())
    text = raw.lower()
    msg = f"{where}: {raw}"
    if GUARD_MARKER in raw:
        detail = raw.split(GUARD_MARKER, 1)[1].split('"')[0].split(";")[0]
        col = detail.removeprefix("column ").split(" holds")[0]
        return RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: {detail}; the value has no exact Arrow form",
                          override_hint(col), ExitClass.REFUSED)
    if state in ("28P01", "28000") or "password authentication failed" in text or "no password supplied" in text \
            or "pg_hba.conf" in text or ("role" in text and "does not exist" in text):
        return RivetError("RIVET_SOURCE_AUTH", msg, "check the user and password of the source URL", ExitClass.USAGE)
    if state == "3D000" or ("database" in text and "does not exist" in text):
        return RivetError("RIVET_SOURCE_NO_SUCH_DATABASE", msg, "check the database name in the source URL")
    if state in ("42P01", "3F000") or ("relation" in text and "does not exist" in text):
        return RivetError("RIVET_SOURCE_NO_SUCH_TABLE", msg, "check the table name (schema.table) and the search_path")
    if state == "55P03" or "lock timeout" in text:
        # not retried inside the run: the lock is wanted by DDL queued behind rivet's own guard (hold_relation)
        return RivetError(LOCKED, f"{msg} (another session is waiting to rewrite, truncate or drop "
                          "a table this export reads)", "rerun when that statement has finished; rivet exits 2 so a "
                          "scheduler can retry", ExitClass.TRANSIENT)
    if isinstance(exc, duckdb.InterruptException) or raw.startswith("INTERRUPT Error"):
        # rivet never reports an interrupt it asked for (prefetch keeps the writer's error): DuckDB cancelled its
        # parallel scan because one of its threads failed, and may report this instead of that cause (the Arrow
        # stream of a running read re-raises it as an OSError with the same text)
        return RivetError("RIVET_SOURCE_CONNECTION_LOST", f"{msg} (DuckDB stopped its scan after a failure in "
                          "another of its threads, most often a lost connection)",
                          "transient: rivet retries it; rerun if retries ran out", ExitClass.TRANSIENT, transient=True)
    if state == "57014" or "statement timeout" in text:
        return RivetError("RIVET_SOURCE_TIMEOUT", msg, "raise statement_timeout_s in [source.tuning] (0 = none) or "
                          "read in smaller chunks", ExitClass.TRANSIENT)
    if state.startswith(_TRANSIENT_STATES) or any(t in text for t in _TRANSIENT_TEXT):
        if connecting and any(t in text for t in _UNREACHABLE_TEXT):
            return RivetError("RIVET_SOURCE_UNREACHABLE", msg, "check host and port, that the server runs and that "
                              "the network lets you reach it", ExitClass.TRANSIENT, transient=True)
        return RivetError("RIVET_SOURCE_CONNECTION_LOST" if state.startswith("08") or "connection" in text
                          else "RIVET_SOURCE_BUSY", msg, "transient: rivet retries it; rerun if retries ran out",
                          ExitClass.TRANSIENT, transient=True)
    if connecting or any(t in text for t in _UNREACHABLE_TEXT):
        return RivetError("RIVET_SOURCE_UNREACHABLE", msg, "check host and port, that the server runs and that the "
                          "network lets you reach it", ExitClass.TRANSIENT, transient=True)
    return RivetError("RIVET_SOURCE_QUERY", msg, "check the SQL of the export (query, columns, filters)")


def _close_quietly(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass


class _IdleConnections:
    """A few idle native connections per conninfo, reused by the next export in this process: a run of hundreds of
    small exports otherwise opens three connections per export (planning, guard, the task's catalog lookups), each
    a backend fork on the server. Only a connection that is open, autocommit and outside any transaction returns."""
    KEEP = 8

    def __init__(self) -> None:
        self._idle: dict[str, list[psycopg.Connection]] = {}
        self._lock = threading.Lock()

    def take(self, conninfo: str) -> psycopg.Connection:
        while True:
            with self._lock:
                idle = self._idle.get(conninfo)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if self._alive(conn):       # checked outside the lock: a round trip
                return conn
        # no server-side prepared statements: a reused connection would keep a plan for a table that has since
        # been altered ("cached plan must not change result type")
        return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)

    @staticmethod
    def _alive(conn: psycopg.Connection) -> bool:
        """Whether the server still serves this connection: it may have been terminated while idle (a restart, an
        idle timeout, pg_terminate_backend), which only a round trip reveals."""
        if conn.closed or conn.broken:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            _close_quietly(conn)
            return False

    def give_back(self, conninfo: str, conn: psycopg.Connection) -> None:
        healthy = (not conn.closed and not conn.broken and conn.autocommit
                   and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
        with self._lock:
            idle = self._idle.setdefault(conninfo, [])
            if healthy and len(idle) < self.KEEP:
                idle.append(conn)
                return
        _close_quietly(conn)


_POOL = _IdleConnections()


@functools.lru_cache(maxsize=64)
def _conninfo(url: str, statement_timeout_s: int, connect_timeout_s: int, tls: tuple, reading: bool) -> str:
    """PostgresSource.conninfo, computed once per distinct input: every export's source asks for it several times
    (pool keys, the guard, DuckDB's ATTACH), and psycopg's conninfo parsing was ~12 % of the CPU of a run of 200
    small exports."""
    opts = ["-c TimeZone=UTC"]
    if statement_timeout_s:
        opts.append(f"-c statement_timeout={int(statement_timeout_s * 1000)}")
    if reading:
        opts.append(f"-c lock_timeout={READ_LOCK_TIMEOUT_MS}")
    base = conninfo_to_dict(url)
    if base.get("options"):
        opts.insert(0, str(base["options"]))
    return make_conninfo(url, connect_timeout=max(2, int(connect_timeout_s)),
                         application_name=base.get("application_name", "rivet"), options=" ".join(opts),
                         **{k: str(v) for k, v in tls})


class PostgresSource(Source):
    engine = "postgres"
    # one server backend streams one result at about the speed of one core: a window read as one stream per core
    # keeps pace with the parallel table scan of a full export
    concurrent_reads = os.cpu_count() or 1

    def __init__(self, cfg: SourceConfig, tuning: Tuning):
        super().__init__(cfg, tuning)
        self._dialect = PostgresDialect()
        self._conn: psycopg.Connection | None = None
        self._guard: psycopg.Connection | None = None
        self._lock = threading.RLock()
        try:
            params = conninfo_to_dict(cfg.url)
        except psycopg.ProgrammingError as e:
            raise RivetError("RIVET_CONFIG_BAD_URL", f"the PostgreSQL source URL is not valid: {redact(str(e))}",
                             "postgresql://user:password@host:5432/database") from None
        register(str(params.get("password") or ""))   # values parsed from a conninfo string are str
        host, port, db = params.get("host", "localhost"), params.get("port", 5432), params.get("dbname", "")
        self._where = f"postgres {host}:{port}/{db}"

    @property
    def dialect(self) -> PostgresDialect:
        return self._dialect

    # ---- connections -------------------------------------------------------------------------------------------
    def conninfo(self, reading: bool = False) -> str:
        """libpq conninfo with rivet's session settings. `reading`: the connections that read rows also get a short
        lock_timeout. While rivet holds its guard (hold_relation) a read waits for a lock only when a DDL statement
        (ALTER/TRUNCATE/VACUUM FULL) queued for an ACCESS EXCLUSIVE lock behind that guard: waiting longer cannot
        help, so the read fails after READ_LOCK_TIMEOUT_MS (RIVET_SOURCE_LOCKED), the export starts no further chunk,
        and it ends and releases the guard."""
        return _conninfo(self.cfg.url, self.tuning.statement_timeout_s, self.tuning.connect_timeout_s,
                         tuple(sorted((self.cfg.tls or {}).items())), reading)

    def _connect(self) -> psycopg.Connection:
        try:
            return _POOL.take(self.conninfo())
        except psycopg.Error as e:
            raise classify(e, self._where, connecting=True) from None

    def _native(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str, params=None) -> list[tuple]:
        with self._lock:
            conn = self._native()
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except psycopg.Error as e:
                err = classify(e, self._where)
                if err.transient or conn.closed or conn.broken:
                    self._drop()
                raise err from None

    def _drop(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                _POOL.give_back(self.conninfo(), self._conn)
                self._conn = None

    @contextmanager
    def hold(self, relation: Relation) -> Iterator[None]:
        """Hold ACCESS SHARE locks on every table the export reads, from before any read takes its snapshot until
        the export is committed — what pg_dump does. Table rewrites (ALTER TABLE that rewrites, TRUNCATE, VACUUM
        FULL, CLUSTER) are not MVCC-safe: one committed after a read's snapshot was taken makes the table look
        empty to that read. With the guard, a rewrite in progress is waited for before anything is read (up to
        statement_timeout_s, else GUARD_WAIT_S), and none can start until the export is done.

        `SELECT ... LIMIT 0` in one transaction locks the table, or every relation a query reads (views expanded),
        and reads no row. The guard is its own connection: nothing else runs in its transaction."""
        wait_ms = int((self.tuning.statement_timeout_s or GUARD_WAIT_S) * 1000)
        conn = self._connect()
        try:
            try:
                conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY")
                conn.execute(f"SET LOCAL lock_timeout = {wait_ms}")
                conn.execute(f"SET LOCAL statement_timeout = {wait_ms}")
                conn.execute(f"SELECT * FROM {self._dialect.relation_sql(relation)} LIMIT 0")
            except psycopg.Error as e:
                raise classify(e, self._where) from None
            self._guard = conn
            yield
        finally:
            self._guard = None
            try:
                conn.execute("ROLLBACK")     # releases the locks; a healthy connection goes back to the pool
                _POOL.give_back(self.conninfo(), conn)
            except psycopg.Error:
                _close_quietly(conn)

    def verify_hold(self) -> None:
        """Before the run is certified: the guard's transaction must still be open (a server-side
        idle_in_transaction_session_timeout or a terminated backend would have released its locks)."""
        conn = self._guard
        if conn is None:
            return
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise RivetError("RIVET_SOURCE_GUARD_LOST", f"{self._where}: the session holding the export's table "
                             f"locks ended during the run ({redact(str(e).strip())}); a table rewrite could have "
                             "gone unseen", "rerun the export; if the server sets idle_in_transaction_session_timeout, "
                             "raise it for rivet's user", ExitClass.TRANSIENT) from None

    # ---- introspection -----------------------------------------------------------------------------------------
    def server_version(self) -> str:
        (v,), = self._run("SHOW server_version")
        return f"PostgreSQL {v.split()[0]}"

    def connection_limit(self) -> int | None:
        (limit,), = self._run("SELECT current_setting('max_connections')::int - "
                              "current_setting('superuser_reserved_connections')::int")
        return int(limit)

    def _regclass(self, table: str) -> int:
        quoted = self._dialect.quote_table(table)
        rows = self._run("SELECT to_regclass(%s)::oid", (quoted,))
        if not rows or rows[0][0] is None:
            names = [n for (n,) in self._run(
                "SELECT CASE WHEN n.nspname = ANY(current_schemas(false)) THEN c.relname "
                "ELSE n.nspname || '.' || c.relname END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname <> 'information_schema' "
                "AND n.nspname NOT LIKE 'pg\\_%%' LIMIT 10000")]
            close = difflib.get_close_matches(table, names, n=1)
            raise RivetError("RIVET_SOURCE_NO_SUCH_TABLE", f"{self._where}: table {table} does not exist (or is not "
                             "visible to this user)", f"did you mean {close[0]!r}?" if close else
                             "check the name: 'schema.table', case-sensitive as written")
        return rows[0][0]

    def describe(self, relation: Relation) -> list[SourceColumn]:
        if relation.table is not None:
            oid = self._regclass(relation.table)
            rows = self._run("SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
                             "FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
                             "ORDER BY a.attnum", (oid,))
            return [SourceColumn(n, t, nullable) for n, t, nullable in rows]
        # a query: plan it with LIMIT 0 (no row is read) and name the result's types from their oid and typmod
        assert relation.query is not None   # a Relation has exactly one of table/query
        with self._lock:
            conn = self._native()
            try:
                cur = conn.execute(f"SELECT * FROM ({strip_query(relation.query)}\n) AS {QUERY_ALIAS} LIMIT 0")
                res = cur.pgresult
                assert res is not None and cur.description is not None   # an executed SELECT has a result
                names = [c.name for c in cur.description]
                oids = [res.ftype(i) for i in range(res.nfields)]
                mods = [res.fmod(i) for i in range(res.nfields)]
                types = conn.execute("SELECT format_type(o, m) FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY "
                                     "AS x(o, m, i) ORDER BY i", (oids, mods)).fetchall()
            except psycopg.Error as e:
                err = classify(e, self._where)
                if err.transient or conn.closed or conn.broken:
                    self._drop()
                raise err from None
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RivetError("RIVET_SOURCE_DUPLICATE_COLUMN", f"the query returns more than one column named "
                             f"{min(dup)!r}", "give each selected column its own name (AS alias)")
        return [SourceColumn(n, t) for n, (t,) in zip(names, types)]

    def primary_key(self, table: str) -> list[SourceColumn]:
        oid = self._regclass(table)
        rows = self._run("SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
                         "FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
                         "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                         "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord", (oid,))
        return [SourceColumn(n, t, nullable) for n, t, nullable in rows]

    def key_index(self, table: str, column: str) -> tuple[bool, bool, bool]:
        oid = self._regclass(table)
        rows = self._run("SELECT NOT a.attnotnull, "
                         "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indkey[0] = a.attnum), "
                         "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique "
                         "AND i.indisvalid AND i.indpred IS NULL AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum) "
                         "FROM pg_attribute a WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 "
                         "AND NOT a.attisdropped", (oid, column))
        if not rows:
            return True, False, False
        nullable, indexed, unique = rows[0]
        return bool(nullable), bool(indexed), bool(unique)

    def column_values(self, sql: str) -> list[Any]:
        return [r[0] for r in self._run(sql)]

    def estimate_rows(self, relation: Relation) -> int | None:
        if relation.table is None:
            return None
        oid = self._regclass(relation.table)
        # partitioned tables keep no statistics of their own: add up the leaves (-1 = never analyzed)
        (n,), = self._run("SELECT CASE WHEN c.relkind = 'p' THEN (SELECT sum(l.reltuples) FILTER "
                          "(WHERE l.reltuples >= 0) FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid "
                          "WHERE t.isleaf) WHEN c.reltuples >= 0 THEN c.reltuples END FROM pg_class c WHERE c.oid = %s",
                          (oid,))
        return None if n is None else round(n)

    def scalar(self, sql: str) -> Any:
        rows = self._run(sql)
        if not rows:
            return None
        return rows[0][0] if len(rows[0]) == 1 else tuple(rows[0])

    def _table_schema(self, table: str) -> tuple[str, str, int]:
        """The (schema, table) a possibly unqualified name resolves to under the search_path, and its size in pages
        now (the file's size, not the planner's estimate)."""
        oid = self._regclass(table)
        (schema, name, pages), = self._run(
            "SELECT n.nspname, c.relname, pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))
        return schema, name, pages

    # ---- rows --------------------------------------------------------------------------------------------------
    def read(self, sql: str, schema: pa.Schema, batch_rows: int,
             scan_table: str | None = None, budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        # DuckDB's own scan of the attached table: parallel ctid ranges on several connections sharing one exported
        # snapshot. Only for plain column reads whose columns all keep DuckDB's type (scan_table), and only for a
        # table of more than one ctid range (DuckDB's 1,000 pages): a smaller one is one stream either way, and
        # through the table DuckDB loads and re-checks its catalog entry, ~25 ms against ~5 ms for the same rows
        # as a query (measured) — for hundreds of small exports, most of their read.
        q = self._dialect.quote_ident
        scanned = None   # the table DuckDB scans in parallel, else None: read as a query
        if scan_table is not None:
            s, t, pages = self._table_schema(scan_table)
            if pages > DUCKDB_PAGES_PER_TASK:
                scanned = scan_table
                cols, table = ", ".join(q(f.name) for f in schema), f"{q(s)}.{q(t)}"
        if scanned is not None:
            def query(src: str) -> str:
                return f"SELECT {cols} FROM {src}.{table}"
        else:
            def query(src: str) -> str:
                return f"SELECT * FROM postgres_query({duck.sql_string(src)}, {duck.sql_string(sql)})"
        checks = [(i, f.name) for i, f in enumerate(schema)
                  if pa.types.is_temporal(f.type) and (f.metadata or {}).get(NATIVE_TYPE_KEY) is not None]
        stream = self._stream(query, schema, batch_rows, checks, parallel=scanned is not None, budget=budget)
        decimals = [f.name for f in schema if pa.types.is_decimal(f.type)]
        return self._nan_checked(stream, scanned, decimals) if scanned is not None and decimals else stream

    def _nan_checked(self, stream: Iterator[pa.RecordBatch], table: str, decimals: list[str]):
        """The plain scan reads numeric NaN as 0 (the query path guards it on the server instead). Watch the decimal
        columns for zeros; only if one appeared, ask the server whether any of them holds NaN and refuse if so."""
        zero_seen: set[str] = set()
        for batch in stream:
            for name in decimals:
                if name not in zero_seen and call_function("any", [call_function("equal", [batch.column(name), pa.scalar(0)])]).as_py():
                    zero_seen.add(name)
            yield batch
        if not zero_seen:
            return
        q = self._dialect.quote_ident
        cols = sorted(zero_seen)
        found = self._run(f"SELECT {', '.join(f'bool_or({q(c)} = {chr(39)}NaN{chr(39)})' for c in cols)} "
                          f"FROM {self._dialect.quote_table(table)}")[0]
        nan_cols = [c for c, hit in zip(cols, found) if hit]
        if nan_cols:
            raise RivetError("RIVET_SOURCE_UNREPRESENTABLE",
                             f"{self._where}: column {nan_cols[0]} holds NaN, which no decimal can hold",
                             f'add [exports.columns] {nan_cols[0]} = "text" to export it exactly as text',
                             ExitClass.REFUSED)

    def _duck_cursor(self, parallel: bool) -> tuple[duckdb.DuckDBPyConnection, str]:
        """A cursor of a DuckDB instance of this process with this source attached, and the alias it has there.
        `parallel`: DuckDB's own table scan, which reads on every core (duck.attached)."""
        try:
            con, alias = duck.attached(self.conninfo(reading=True), "postgres", parallel)
        except duckdb.Error as e:
            raise classify(e, self._where, connecting=True) from None
        return con, alias

    def _stream(self, query: Callable[[str], str], schema: pa.Schema, batch_rows: int, checks: list[tuple[int, str]],
                parallel: bool, budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        con, src = self._duck_cursor(parallel)
        return BatchStream(self._batches(con, query(src), schema, batch_rows, checks, budget), con.interrupt)

    def _batches(self, con: duckdb.DuckDBPyConnection, query: str, schema: pa.Schema, batch_rows: int,
                 checks: list[tuple[int, str]], budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        try:
            try:
                # a shrinkable budget: DuckDB's vectors, regrouped to the budget's rows as it stands per batch
                reader = con.execute(query).to_arrow_reader(DUCKDB_PIECE_ROWS if budget else batch_rows)
                for batch in (regroup(reader, budget) if budget else reader):
                    bad = [(name, batch.column(i).type) for i, name in checks if _unrepresentable(batch.column(i))]
                    if bad:
                        raise _refusal(bad, self._where)
                    yield duck.conform(batch, schema)
            except RivetError:
                raise
            # the Arrow stream re-raises DuckDB's errors as OSError
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise classify(e, self._where) from None
        finally:
            con.close()


def _unrepresentable(arr: pa.Array) -> bool:
    """Whether a date/time/timestamp column as DuckDB hands it over holds a value no Arrow value of its type holds."""
    if arr.null_count == len(arr):
        return False
    if pa.types.is_time(arr.type):   # time64[us], as mapped
        return call_function("max", [arr.view(pa.int64())]).as_py() >= _DAY_US
    if pa.types.is_date(arr.type):
        mm = call_function("min_max", [arr.view(pa.int32())])
        return mm["min"].as_py() <= -_DATE_INFINITY or mm["max"].as_py() >= _DATE_INFINITY
    mm = call_function("min_max", [arr.view(pa.int64())])
    return mm["min"].as_py() < _FIRST_PG_TIMESTAMP_US or mm["max"].as_py() >= _TIMESTAMP_INFINITY


def _refusal(bad: list[tuple[str, pa.DataType]], where: str) -> RivetError:
    def what(t: pa.DataType) -> str:
        if pa.types.is_time(t):
            return "24:00:00, past the last time of day an Arrow time holds"
        if pa.types.is_date(t):
            return "infinity, which no Arrow date holds"
        return ("infinity or a timestamp after 294247-01-10 04:00:54.775806, the last an Arrow microsecond timestamp "
                "holds")
    return RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: " + "; ".join(
        f"column {name} holds {what(t)}" for name, t in bad), override_hint(*[name for name, _ in bad]),
        ExitClass.REFUSED)
