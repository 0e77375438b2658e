"""SQL Server: pymssql (FreeTDS) for everything — introspection, counts and the rows.

DuckDB has no SQL Server scanner, so rows stream through pymssql: `fetchmany(batch_rows)` → one Arrow array per
column, of the type engine.types chose (never a whole-table fetch). Every read opens its own connection, so parallel
chunks read side by side while the adapter's own connection serves introspection and counts.

Every session: TDS 7.4 (so date, time, datetime2 and datetimeoffset arrive typed; the SQL rivet writes needs SQL
Server 2016+ for DATEDIFF_BIG and CONVERT style 3), autocommit, SET NOCOUNT ON, SET LOCK_TIMEOUT from
statement_timeout_s (0 = wait forever), and pymssql's query timeout = statement_timeout_s: FreeTDS gives up when the
server has sent nothing for that long (a per-wait limit, so a long read that keeps streaming is never cut). The
login timeout is connect_timeout_s, which also bounds the session setup query. FreeTDS keeps both timeouts process-wide: the last connection opened sets them.
When the database has ALLOW_SNAPSHOT_ISOLATION ON, sessions run at SNAPSHOT isolation: every statement reads one
consistent snapshot and takes no shared locks. Otherwise READ COMMITTED, which is consistent per statement when
READ_COMMITTED_SNAPSHOT is ON (Azure SQL's default). Never NOLOCK.

TLS, from [source] tls or the URL query (`?encrypt=true&trust_server_certificate=true`):
  encrypt = true | "require"  → FreeTDS encryption "require"  (refuse to talk unencrypted)
  encrypt = "request"         → "request"  (encrypt when the server can)
  encrypt = false | "off"     → "off"      (only the login packet is encrypted, if the server insists)
  unset                       → FreeTDS's default
FreeTDS checks the server certificate only against the `ca file` of a freetds.conf. trust_server_certificate = true
(or unset) encrypts without checking it; false is accepted only with FREETDSCONF naming such a freetds.conf.
"""
from __future__ import annotations

import datetime as dt
import difflib
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pymssql
from pymssql import _mssql

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.layouts import BatchBudget
from engine.secrets import redact, register
from engine.sources.base import Relation, Source, SourceColumn
from engine.sql import MssqlDialect
from engine.types import override_hint

TDS_VERSION = "7.4"
TLS_KEYS = ("encrypt", "trust_server_certificate")
URL_HINT = "mssql://user:password@host:1433/database"
_DRIVER_ERRORS = (pymssql.Error, _mssql.MSSQLException)
_ENCRYPTION = {"true": "require", "yes": "require", "1": "require", "require": "require", "required": "require",
               "mandatory": "require", "request": "request", "false": "off", "no": "off", "0": "off", "off": "off"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")

# SQL Server message numbers (and FreeTDS db-lib ones, 20000+) by what they mean for a retry
_AUTH = {18456, 18452, 18470, 18486, 18487, 18488}
_NO_DATABASE = {4060, 911}
_TIMEOUT = 20003                                   # db-lib: the server sent nothing within the timeout
_LOST = {20004, 20006, 20017, 20020, 20047, 233, 596, 10053, 10054}
_UNREACHABLE = {20009, 20002}
_BUSY = {1205, 1222, 701, 3961, 8645, 8651, 10928, 10929, 40197, 40501, 40613, 49918, 49919, 49920}
_DENIED = {229, 230, 262, 297, 300}
_LOST_TEXT = ("dbprocess is dead", "read from the server failed", "write to the server failed", "unexpected eof",
              "connection reset", "broken pipe", "not connected", "connection is closed", "timed out")


# ---- configuration ------------------------------------------------------------------------------------------------

def parse_url(url: str) -> tuple[dict, dict]:
    """mssql://user:pass@host:1433/db?encrypt=true → (connection parameters, TLS options from the query)."""
    try:
        u = urlsplit(url)
        port = u.port or 1433
    except ValueError as e:
        raise RivetError("RIVET_CONFIG_BAD_URL", f"the SQL Server source URL is not valid: {redact(str(e))}",
                         URL_HINT) from None
    if u.scheme not in ("mssql", "sqlserver"):
        raise RivetError("RIVET_CONFIG_BAD_URL", f"a SQL Server source URL starts with mssql://, not {u.scheme}://",
                         URL_HINT)
    query = dict(parse_qsl(u.query))
    unknown = sorted(set(query) - set(TLS_KEYS))
    if unknown:
        raise RivetError("RIVET_CONFIG_BAD_URL", f"the SQL Server source URL has an unknown option {unknown[0]!r}",
                         f"URL options: {', '.join(TLS_KEYS)} (or the same keys in [source] tls)")
    params = {"host": u.hostname or "127.0.0.1", "port": port, "user": unquote(u.username or ""),
              "password": unquote(u.password or ""), "database": unquote(u.path.lstrip("/"))}
    return params, query


def _word(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v).strip().lower()


def encryption_for(tls: dict) -> str | None:
    """FreeTDS's encryption level for the TLS options (see the module notes); None = FreeTDS's default."""
    unknown = [k for k in tls if k not in TLS_KEYS]
    if unknown:
        raise RivetError("RIVET_CONFIG_TLS", f"TLS option {unknown[0]!r} is not known for SQL Server",
                         f"SQL Server TLS options: {', '.join(TLS_KEYS)}")
    enc = _word(tls.get("encrypt"))
    if enc is not None and enc not in _ENCRYPTION:
        raise RivetError("RIVET_CONFIG_TLS", f"tls encrypt = {tls['encrypt']!r} is not one of true, false, "
                         '"request"', 'encrypt = true (require TLS), "request" (when offered) or false')
    level = _ENCRYPTION.get(enc) if enc else None
    trust = _word(tls.get("trust_server_certificate"))
    if trust is not None and trust not in _TRUE + _FALSE:
        raise RivetError("RIVET_CONFIG_TLS", f"tls trust_server_certificate = {tls['trust_server_certificate']!r} "
                         "is not true or false", "trust_server_certificate = true or false")
    if trust in _FALSE and level != "off" and not os.environ.get("FREETDSCONF"):
        raise RivetError("RIVET_CONFIG_TLS", "trust_server_certificate = false, but pymssql's FreeTDS checks a server "
                         "certificate only against the `ca file` of a freetds.conf, and FREETDSCONF is not set",
                         "set FREETDSCONF to a freetds.conf whose [global] section has `ca file = /path/ca.pem`, "
                         "or set trust_server_certificate = true")
    return level


def native_type(name: str, max_length: int, precision: int, scale: int) -> str:
    """sys.columns → the type as declared, in the form sp_describe_first_result_set names it: 'nvarchar(max)',
    'decimal(38,10)', 'datetime2(7)' (nchar/nvarchar lengths are characters, max_length counts bytes)."""
    t = name.lower()
    if t in ("char", "varchar", "binary", "varbinary"):
        return f"{t}({'max' if max_length == -1 else max_length})"
    if t in ("nchar", "nvarchar"):
        return f"{t}({'max' if max_length == -1 else max_length // 2})"
    if t in ("decimal", "numeric"):
        return f"{t}({precision},{scale})"
    if t in ("datetime2", "time", "datetimeoffset"):
        return f"{t}({scale})"
    return t


_PARAMETERISED = ("char", "varchar", "binary", "varbinary", "nchar", "nvarchar", "decimal", "numeric", "datetime2",
                  "time", "datetimeoffset")


def described_type(type_name: str, max_length: int, precision: int, scale: int) -> str:
    """sp_describe_first_result_set's system_type_name ('datetime2(7)'), completed from its max_length / precision /
    scale columns when it names a parameterised type without the parameters (Babelfish says 'datetime2')."""
    t = str(type_name).strip()
    if "(" in t or t.lower() not in _PARAMETERISED:
        return t
    return native_type(t, int(max_length or 0), int(precision or 0), int(scale or 0))


# ---- errors -------------------------------------------------------------------------------------------------------

def _parts(exc: BaseException) -> tuple[set[int], int | None, str]:
    """pymssql raises with the number of the most severe message and FreeTDS's text, in which 'DB-Lib error message
    NNNNN' lines name the client-side errors: as one argument ((number, b'text'),) from connect, as two
    (number, b'text') from Cursor.execute. → (all numbers, number, readable text)."""
    args = exc.args
    if len(args) == 1 and isinstance(args[0], tuple):
        args = args[0]
    number, arg = (args[0], args[1]) if len(args) == 2 and isinstance(args[0], int) else (None, args[0] if args else "")
    text = arg.decode("utf-8", "replace") if isinstance(arg, (bytes, bytearray)) else str(arg)
    nums = {int(n) for n in re.findall(r"error message (\d+)", text)}
    if isinstance(number, int):
        nums.add(number)
    server, _, client = text.partition("DB-Lib error message")
    if server.strip():
        readable = server
    else:
        lines = [ln for ln in ("DB-Lib error message" + client).splitlines()
                 if ln.strip() and not ln.startswith("DB-Lib error message") and "Check messages from" not in ln]
        readable = "; ".join(ln.strip() for ln in lines) or text
    return nums, number, " ".join(readable.split())


def classify(exc: BaseException, where: str, connecting: bool = False) -> RivetError:
    """Turn a pymssql error into a RivetError with the right code and exit class (never a password)."""
    if isinstance(exc, RivetError):
        return exc
    nums, number, raw = _parts(exc)
    raw = redact(raw)
    if len(raw) > 600:
        raw = raw[:600] + "…"
    if isinstance(number, int) and 0 < number < 20000:
        raw += f" (SQL Server error {number})"
    text = raw.lower()
    msg = f"{where}: {raw}"

    def err(code, hint, exit_class=ExitClass.USAGE, transient=False):
        return RivetError(code, msg, hint, exit_class, transient)

    unreachable = ("RIVET_SOURCE_UNREACHABLE", "check host and port, that the server runs and that the network lets "
                   "you reach it", ExitClass.TRANSIENT, True)
    retried = "transient: rivet retries it; rerun if retries ran out"
    # a failed login hides its reason (wrong password, or a database the login may not open) on purpose
    if nums & _AUTH or "login failed" in text:
        return err("RIVET_SOURCE_AUTH", "check the user and password of the source URL, and that the login may open "
                   "the database")
    if nums & _NO_DATABASE or "cannot open database" in text:
        return err("RIVET_SOURCE_NO_SUCH_DATABASE", "check the database name in the source URL")
    if _TIMEOUT in nums:   # FreeTDS's own timer; an OS-level "timed out" below is a lost connection
        if connecting:
            return err(*unreachable)
        return err("RIVET_SOURCE_TIMEOUT", "the server sent nothing for statement_timeout_s: raise it in "
                   "[source.tuning] (0 = none) or read in smaller chunks", ExitClass.TRANSIENT)
    if nums & _LOST or any(t in text for t in _LOST_TEXT):
        if connecting:
            return err(*unreachable)
        return err("RIVET_SOURCE_CONNECTION_LOST", retried, ExitClass.TRANSIENT, transient=True)
    if connecting or nums & _UNREACHABLE:
        return err(*unreachable)
    if nums & _BUSY or "deadlock" in text:
        return err("RIVET_SOURCE_BUSY", retried, ExitClass.TRANSIENT, transient=True)
    if 208 in nums or "invalid object name" in text:
        return err("RIVET_SOURCE_NO_SUCH_TABLE", "check the table name (schema.table or table)")
    if 8156 in nums or "specified more than once" in text:   # the latter: Babelfish's (PostgreSQL's) wording
        return err("RIVET_SOURCE_DUPLICATE_COLUMN", "give each selected column its own name (AS alias)")
    if 8155 in nums:
        return err("RIVET_SOURCE_QUERY", "give each selected column a name (AS alias)")
    if nums & _DENIED or "permission was denied" in text:
        return err("RIVET_SOURCE_QUERY", "the login lacks a permission: GRANT SELECT on the table (or schema) to it")
    if 1033 in nums:
        return err("RIVET_SOURCE_QUERY", "rivet reads a query as a derived table, where T-SQL allows ORDER BY only "
                   "with TOP or OFFSET: drop the ORDER BY (rivet orders what needs order)")
    if "keyword 'with'" in text:
        return err("RIVET_SOURCE_QUERY", "rivet reads a query as a derived table, where T-SQL allows no WITH (CTE): "
                   "put the CTE in a view and export the view")
    return err("RIVET_SOURCE_QUERY", "check the SQL of the export (query, columns, filters)")


# ---- rows → Arrow -------------------------------------------------------------------------------------------------

def record_batches(fetchmany: Callable[[int], list], schema: pa.Schema,
                   batch_rows: int, budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
    """Rows as pymssql returns them (tuples of Python values), `batch_rows` at a time, as record batches of exactly
    `schema` (names, types, field metadata). Only one batch of rows is held at a time."""
    while True:
        rows = fetchmany(budget.rows if budget is not None else batch_rows)
        if not rows:
            return
        yield rows_to_batch(rows, schema)


def rows_to_batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    if len(rows[0]) != len(schema):
        raise _schema_changed(len(rows[0]), len(schema))
    arrays = [_array(values, field) for values, field in zip(zip(*rows), schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _array(values: tuple, field: pa.Field) -> pa.Array:
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        if pa.types.is_string(field.type):
            try:   # a cursor COALESCE over text-delivered columns arrives typed
                return pa.array([_as_text(v) for v in values], type=pa.string())
            except TypeError:
                pass
        raise RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"column {field.name}: a value does not fit "
                         f"{field.type} ({e})", override_hint(field.name), ExitClass.REFUSED) from None


def _as_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, uuid.UUID):
        return str(v).upper()   # as SQL Server prints it
    if isinstance(v, (dt.datetime, dt.time)):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, (dt.date, Decimal, int, float)):
        return v.isoformat() if isinstance(v, dt.date) else str(v)
    raise TypeError(type(v).__name__)


def _schema_changed(got: int, want: int) -> RivetError:
    return RivetError("RIVET_SOURCE_SCHEMA_CHANGED", f"the source returned {got} columns where the plan expects {want}",
                      "the relation changed since planning: run `rivet plan` / `rivet check` again", ExitClass.DRIFT)


# ---- the adapter --------------------------------------------------------------------------------------------------

_TYPE_SQL = ("CASE WHEN c.system_type_id = 240 THEN TYPE_NAME(c.user_type_id) ELSE TYPE_NAME(c.system_type_id) "
             "END AS type_name")
_COLUMN_SQL = f"c.name, {_TYPE_SQL}, c.max_length, c.precision, c.scale, c.is_nullable"


class MssqlSource(Source):
    engine = "mssql"

    def __init__(self, cfg: SourceConfig, tuning: Tuning):
        super().__init__(cfg, tuning)
        self._dialect = MssqlDialect()
        self._conn = None
        self._version = ""
        self._lock = threading.RLock()
        self._params, url_tls = parse_url(cfg.url)
        register(self._params["password"])
        self._encryption = encryption_for({**url_tls, **(cfg.tls or {})})
        p = self._params
        self._where = f"mssql {p['host']}:{p['port']}/{p['database']}"

    @property
    def dialect(self) -> MssqlDialect:
        return self._dialect

    # ---- connections -------------------------------------------------------------------------------------------
    def _connect(self):
        p, t = self._params, self.tuning
        try:
            conn = pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"] or None,
                                   password=p["password"] or None, database=p["database"],
                                   login_timeout=max(1, math.ceil(t.connect_timeout_s)), charset="UTF-8",
                                   appname="rivet", tds_version=TDS_VERSION, encryption=self._encryption,
                                   autocommit=True)
        except _DRIVER_ERRORS as e:
            raise classify(e, self._where, connecting=True) from None
        try:
            # process-wide in FreeTDS: set it (0 too) on every connect so another source's value never lingers. The
            # session setup below is part of connecting (connect_timeout_s); statements get statement_timeout_s.
            conn._conn.query_timeout = max(1, math.ceil(t.connect_timeout_s))
            cur = conn.cursor()
            lock_ms = int(t.statement_timeout_s * 1000) if t.statement_timeout_s else -1
            cur.execute(f"SET NOCOUNT ON; SET LOCK_TIMEOUT {lock_ms}; "
                        "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS v, "
                        "CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS e, "
                        "(SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()) AS s")
            row = cur.fetchone()
            assert row is not None   # a SELECT without FROM returns one row
            version, edition, snapshot = cast("tuple[str, str, int | None]", row)   # nvarchar, nvarchar, tinyint
            if snapshot == 1:
                cur.execute("SET TRANSACTION ISOLATION LEVEL SNAPSHOT")
            conn._conn.query_timeout = math.ceil(t.statement_timeout_s) if t.statement_timeout_s else 0
        except _DRIVER_ERRORS as e:
            _close(conn)
            raise classify(e, self._where) from None
        self._version = f"SQL Server {version} ({edition})"
        return conn

    def _native(self):
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str) -> list[tuple]:
        with self._lock:
            conn = self._native()
            try:
                cur = conn.cursor()
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
            except _DRIVER_ERRORS as e:
                err = classify(e, self._where)
                if err.exit_class == ExitClass.TRANSIENT:   # lost, busy or timed out: start over on a new session
                    self._drop()
                raise err from None

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ---- introspection -----------------------------------------------------------------------------------------
    def server_version(self) -> str:
        with self._lock:
            self._native()
            return self._version

    def _object_id(self, table: str) -> int:
        name = self._dialect.literal(self._dialect.quote_table(table))
        rows = self._run(f"SELECT o.object_id FROM sys.objects o WHERE o.object_id = OBJECT_ID({name}) "
                         "AND o.type IN ('U', 'V')")
        if rows:
            return int(rows[0][0])
        names = [str(n) for row in self._run(
            "SELECT TOP 10000 s.name + '.' + o.name AS n, CASE WHEN s.name = SCHEMA_NAME() THEN o.name END AS b "
            "FROM sys.objects o JOIN sys.schemas s ON s.schema_id = o.schema_id "
            "WHERE o.type IN ('U', 'V') AND o.is_ms_shipped = 0") for n in row if n is not None]
        close = difflib.get_close_matches(table, names, n=1)
        raise RivetError("RIVET_SOURCE_NO_SUCH_TABLE", f"{self._where}: table {table} does not exist (or is not "
                         "visible to this user)", f"did you mean {close[0]!r}?" if close else
                         "check the name: 'schema.table', or 'table' in the login's default schema")

    def describe(self, relation: Relation) -> list[SourceColumn]:
        if relation.table is not None:
            oid = self._object_id(relation.table)
            rows = self._run(f"SELECT {_COLUMN_SQL} FROM sys.columns c WHERE c.object_id = {oid} ORDER BY c.column_id")
            return [SourceColumn(str(n), native_type(str(t), ml, p, s), bool(nl)) for n, t, ml, p, s, nl in rows]
        # a query: the server describes its result without running it, in the very derived-table form every read
        # uses (so a query T-SQL cannot wrap fails here, at check/plan time). Columns: is_hidden, column_ordinal,
        # name, is_nullable, system_type_id, system_type_name, max_length, precision, scale, ...
        body = f"SELECT * FROM {self._dialect.relation_sql(relation)}"
        rows = self._run(f"EXEC sp_describe_first_result_set @tsql = {self._dialect.literal(body)}")
        columns = [SourceColumn(str(r[2]), described_type(r[5], r[6], r[7], r[8]), bool(r[3])) for r in rows if not r[0]]
        if not columns:
            raise RivetError("RIVET_SOURCE_QUERY", f"{self._where}: the export's query returns no columns",
                             "write a SELECT statement")
        return columns

    def primary_key(self, table: str) -> list[SourceColumn]:
        oid = self._object_id(table)
        rows = self._run(f"SELECT {_COLUMN_SQL} FROM sys.indexes i JOIN sys.index_columns ic "
                         "ON ic.object_id = i.object_id AND ic.index_id = i.index_id JOIN sys.columns c "
                         "ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
                         f"WHERE i.object_id = {oid} AND i.is_primary_key = 1 AND ic.key_ordinal > 0 "
                         "ORDER BY ic.key_ordinal")
        return [SourceColumn(str(n), native_type(str(t), ml, p, s), bool(nl)) for n, t, ml, p, s, nl in rows]

    def estimate_rows(self, relation: Relation) -> int | None:
        if relation.table is None:
            return None
        oid = self._object_id(relation.table)
        # heap (0) or clustered index (1), summed over partitions; readable with plain SELECT permission
        (n,), = self._run(f"SELECT SUM(p.rows) AS n FROM sys.partitions p WHERE p.object_id = {oid} "
                          "AND p.index_id IN (0, 1)")
        return None if n is None else int(n)

    def scalar(self, sql: str) -> Any:
        rows = self._run(sql)
        if not rows:
            return None
        return rows[0][0] if len(rows[0]) == 1 else tuple(rows[0])

    # ---- rows --------------------------------------------------------------------------------------------------
    def read(self, sql: str, schema: pa.Schema, batch_rows: int,
             scan_table: str | None = None, budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        # scan_table buys nothing here: there is no faster path than the TDS stream itself
        return self._stream(sql, schema, batch_rows, budget)

    def _stream(self, sql: str, schema: pa.Schema, batch_rows: int,
                budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        conn = self._connect()
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql)
                width = len(cur.description or ())
                if width != len(schema):
                    raise _schema_changed(width, len(schema))
                yield from record_batches(cur.fetchmany, schema, batch_rows, budget)
            except _DRIVER_ERRORS as e:
                raise classify(e, self._where) from None
        finally:
            _close(conn)


def _close(conn) -> None:
    """Cancel whatever the session still runs (a statement whose client timed out goes on on the server, a count
    for hours), then close it."""
    try:
        conn._conn.cancel()
    except (AttributeError, *_DRIVER_ERRORS):
        pass
    try:
        conn.close()
    except _DRIVER_ERRORS:
        pass
