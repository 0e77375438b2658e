"""MySQL 8 and MariaDB through mysql-connector-python's C extension: introspection, counts, settings and the rows.

Every session rivet opens runs with time_zone '+00:00' (TIMESTAMP columns come out as UTC instants) and the
statement timeout of the tuning: MariaDB `max_statement_time` (seconds), MySQL `max_execution_time` (ms, SELECT only);
the flavour comes from VERSION().

Rows (C extension loaded): one fresh connection per read, one consistent snapshot (`START TRANSACTION WITH
CONSISTENT SNAPSHOT, READ ONLY`), an unbuffered result read with libmysqlclient's own fetch_row in raw mode (bytes,
no per-value Python conversion). Each slice of rows becomes Arrow in one call (a struct array built from the row
tuples, then split into columns), and pyarrow.compute parses the server's text into exactly the planned types
(ints incl. unsigned, DECIMAL → decimal128 exactly, DATETIME/DATE/TIMESTAMP, FLOAT/DOUBLE, BIT, YEAR). Measured on
MariaDB, 5 M rows (scripts/bench_mysql_paths.py): 7.2 s against 20.7 s for DuckDB's mysql scanner and 5.1 s for
`mariadb --quick`; the server spends 3.6 s of CPU on it, as on `mariadb --quick`, where the scanner makes it burn
15.8 s. Zero dates ('0000-00-00', '2024-00-10') fail that parse; the reader then looks for them in the batch (one
vectorized regex) and refuses the read naming the columns and the `= "text"` override. Closing a read early closes
its socket without draining the rest of the result.

Without the C extension (see MySQLSource), the pure-Python driver would need ~9 s of CPU per million rows
(measured; DuckDB's scanner about 1.6 s plus 3 s on the server), so rows go through `mysql_query` then: MariaDB gets `SET STATEMENT max_statement_time=N FOR
<select>` and MySQL the optimizer hint `SELECT /*+ MAX_EXECUTION_TIME(ms) */`, because the scanner's session cannot
be configured. DuckDB turns zero dates into NULL without a word, so that read asks the server for one extra BIGINT
column per 62 temporal columns (bit i set when column i has a zero month or day in that row), checked per batch.
"""
from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:  # the C extension; it only loads if imported before pyarrow/duckdb (static TLS), see MySQLSource notes
    from _mysql_connector import MySQLInterfaceError
    HAVE_CEXT = True
except ImportError:
    HAVE_CEXT = False
import duckdb
import mysql.connector
import pyarrow as pa
import pyarrow.compute as pc
from mysql.connector.constants import FieldFlag, FieldType

from engine import duck
from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.layouts import DUCKDB_PIECE_ROWS, BatchBudget, regroup
from engine.secrets import redact, register
from engine.sources.base import Relation, Source, SourceColumn
from engine.sql import QUERY_ALIAS, MySQLDialect, strip_query
from engine.types import NATIVE_TYPE_KEY, override_hint

ZERO_DATE_COLUMN = "rivet_zero_dates"
_SELECT = re.compile(r"^\s*SELECT\s", re.IGNORECASE)
_AUTH = {1044, 1045, 1698, 1251, 2049, 2059, 1820, 1862}
_UNREACHABLE = {2002, 2003, 2005, 2026}
_LOST = {2006, 2013, 2055, 1053, 1152, 1153, 1154, 1156, 1158, 1159, 1160, 1161, 1927, 4031}
_BUSY = {1040, 1203, 1205, 1213, 1615}
_TIMEOUT = {3024, 1969, 1317, 1028}
# what the driver raises: the C API object raises its own MySQLInterfaceError (with errno), the wrappers Error
_DRIVER_ERRORS: tuple[type[Exception], ...] = (mysql.connector.Error,) + ((MySQLInterfaceError,) if HAVE_CEXT else ())
# rows turned into Arrow per call: bounds the Python objects alive at once (a batch is built from several slices)
SLICE_ROWS = 8192
_TEMPORAL_FIELDS = {FieldType.DATE, FieldType.NEWDATE, FieldType.DATETIME, FieldType.TIMESTAMP}
_INT_FIELDS = {FieldType.TINY, FieldType.SHORT, FieldType.INT24, FieldType.LONG, FieldType.LONGLONG, FieldType.YEAR}
_ZERO_DATE = r"^\d{4}-(00|\d\d-00)"   # a zero month or day, in the server's text of a DATE/DATETIME/TIMESTAMP


def _kind(native: bytes | None) -> str:
    return (native or b"").decode().strip().lower().split("(")[0].split()[0] if native else ""


def classify(exc: BaseException, where: str, connecting: bool = False, elapsed: float = 0.0,
             timeout_s: float = 0.0) -> RivetError:
    if isinstance(exc, RivetError):
        return exc
    errno = getattr(exc, "errno", None)
    raw = redact(" ".join(str(exc).split()))
    raw = re.sub(r'(for MySQL query) ".*?"(:)', r"\1\2", raw, flags=re.DOTALL)   # the SQL text can be very long
    if len(raw) > 600:
        raw = raw[:600] + "…"
    text = raw.lower()
    msg = f"{where}: {raw}"

    def err(code, hint, exit_class=ExitClass.USAGE, transient=False):
        return RivetError(code, msg, hint, exit_class, transient)

    if errno in _AUTH or "access denied" in text:
        return err("RIVET_SOURCE_AUTH", "check the user and password of the source URL")
    if errno == 1049 or "unknown database" in text:
        return err("RIVET_SOURCE_NO_SUCH_DATABASE", "check the database name in the source URL")
    if connecting:   # before the errno checks: the pure-Python driver reports a connect timeout as 3024
        return err("RIVET_SOURCE_UNREACHABLE", "check host and port, that the server runs and that the network lets "
                   "you reach it", ExitClass.TRANSIENT, transient=True)
    if errno == 1146 or ("table" in text and "doesn't exist" in text):
        return err("RIVET_SOURCE_NO_SUCH_TABLE", "check the table name (database.table or table)")
    if errno in _TIMEOUT or "max_statement_time" in text or "execution time exceeded" in text \
            or (timeout_s and elapsed >= timeout_s * 0.95 and "failed to fetch" in text):
        return err("RIVET_SOURCE_TIMEOUT", "raise statement_timeout_s in [source.tuning] (0 = none) or read in "
                   "smaller chunks", ExitClass.TRANSIENT)
    if errno in _UNREACHABLE or "can't connect" in text or "unknown mysql server host" in text \
            or "unknown server host" in text or "connection refused" in text:
        return err("RIVET_SOURCE_UNREACHABLE", "check host and port, that the server runs and that the network lets "
                   "you reach it", ExitClass.TRANSIENT, transient=True)
    if errno in _LOST or "lost connection" in text or "gone away" in text or "failed to fetch" in text \
            or "connection was killed" in text or "server closed" in text or "connection not available" in text \
            or isinstance(exc, mysql.connector.errors.InterfaceError):
        return err("RIVET_SOURCE_CONNECTION_LOST", "transient: rivet retries it; rerun if retries ran out",
                   ExitClass.TRANSIENT, transient=True)
    if errno in _BUSY or "deadlock" in text or "too many connections" in text or "lock wait timeout" in text:
        return err("RIVET_SOURCE_BUSY", "transient: rivet retries it; rerun if retries ran out",
                   ExitClass.TRANSIENT, transient=True)
    if "date out of range" in text or "incorrect datetime" in text:
        return RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: a date/datetime column holds a value with a zero "
                          f"month or day, which no Arrow date can hold ({raw})",
                          'set [exports.columns] <column> = "text" for the date columns to export their exact text',
                          ExitClass.REFUSED)
    return err("RIVET_SOURCE_QUERY", "check the SQL of the export (query, columns, filters)")


class MySQLSource(Source):
    """Note for whoever imports this: mysql-connector's C extension (`_mysql_connector`) fails to load with
    "cannot allocate memory in static TLS block" once pyarrow or duckdb is loaded, and (vendored libssl) once the
    system libcrypto is loaded by hashlib unless `ssl` was imported before it. Import it first thing — engine/__init__
    does — to get the fast row path; without it the pure-Python driver does introspection and scalars, and rows flow
    through DuckDB's scanner (faster than the pure-Python driver)."""
    engine = "mysql"

    def __init__(self, cfg: SourceConfig, tuning: Tuning):
        super().__init__(cfg, tuning)
        self._dialect = MySQLDialect()
        self._conn = None
        self._lock = threading.RLock()
        self._mariadb: bool | None = None
        self._params = self._parse_url(cfg.url)
        register(self._params.get("password"))
        p = self._params
        self._where = f"mysql {p['host']}:{p['port']}/{p.get('database', '')}"

    @staticmethod
    def _parse_url(url: str) -> dict:
        try:
            u = urlsplit(url)
            port = u.port or 3306
        except ValueError as e:
            raise RivetError("RIVET_CONFIG_BAD_URL", f"the MySQL source URL is not valid: {redact(str(e))}",
                             "mysql://user:password@host:3306/database") from None
        if u.scheme not in ("mysql", "mariadb", "mysql+mysqlconnector", "mysql+pymysql"):
            raise RivetError("RIVET_CONFIG_BAD_URL", f"a MySQL source URL starts with mysql://, not {u.scheme}://",
                             "mysql://user:password@host:3306/database")
        p = {"host": u.hostname or "127.0.0.1", "port": port, "user": unquote(u.username or ""),
             "password": unquote(u.password or "")}
        db = unquote(u.path.lstrip("/"))
        if db:
            p["database"] = db
        p.update({k: v for k, v in parse_qsl(u.query)})
        return p

    @property
    def dialect(self) -> MySQLDialect:
        return self._dialect

    # ---- connections -------------------------------------------------------------------------------------------
    def _tls(self) -> dict:
        return {**{k: v for k, v in self._params.items() if k.startswith("ssl")}, **(self.cfg.tls or {})}

    def _open(self, snapshot: bool = False):
        """A new connection with rivet's session: UTC, the statement timeout; `snapshot` starts a read-only
        transaction with a consistent snapshot. The first one also learns the flavour and the sql_mode."""
        p, tls = self._params, self._tls()
        kw = {"host": p["host"], "port": p["port"], "user": p["user"], "password": p["password"],
              "connection_timeout": max(1, int(self.tuning.connect_timeout_s)), "autocommit": True,
              "use_pure": not HAVE_CEXT, "charset": "utf8mb4"}
        if "database" in p:
            kw["database"] = p["database"]
        for k in ("ssl_ca", "ssl_cert", "ssl_key"):
            if k in tls:
                kw[k] = tls[k]
        mode = str(tls.get("ssl_mode", "")).lower()
        if mode == "disabled":
            kw["ssl_disabled"] = True
        elif mode in ("verify_ca", "verify_identity"):
            kw["ssl_verify_cert"] = True
            kw["ssl_verify_identity"] = mode == "verify_identity"
        try:
            conn = mysql.connector.connect(**kw)
        except mysql.connector.Error as e:
            raise classify(e, self._where, connecting=True) from None
        try:
            cur = conn.cursor()
            if self._mariadb is None:
                cur.execute("SELECT VERSION(), @@SESSION.sql_mode")
                row = cur.fetchone()
                assert row is not None   # a SELECT without FROM returns one row
                version, sql_mode = row
                self._mariadb = "mariadb" in str(version).lower()
                self._dialect.backslash_escapes = "NO_BACKSLASH_ESCAPES" not in str(sql_mode).upper()
            t = self.tuning.statement_timeout_s
            timeout = (f"max_statement_time = {float(t or 0)}" if self._mariadb
                       else f"max_execution_time = {int((t or 0) * 1000)}")
            cur.execute(f"SET time_zone = '+00:00', SESSION {timeout}")
            if snapshot:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.close()
        except mysql.connector.Error as e:
            try:
                conn.close()
            except mysql.connector.Error:
                pass
            raise classify(e, self._where) from None
        return conn

    def _native(self):
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _run(self, sql: str, params=None) -> list[tuple]:
        with self._lock:
            conn = self._native()
            try:
                cur = conn.cursor()
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.with_rows else []
                cur.close()
                return rows
            except mysql.connector.Error as e:
                err = classify(e, self._where)
                if err.transient:
                    self._drop()
                raise err from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except mysql.connector.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ---- introspection -----------------------------------------------------------------------------------------
    def server_version(self) -> str:
        (v,), = self._run("SELECT VERSION()")
        return str(v)

    def connection_limit(self) -> int | None:
        (limit,), = self._run("SELECT @@max_connections")
        return int(limit)

    def _split(self, table: str) -> tuple[str | None, str]:
        parts = self._dialect.split_table(table)
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])

    def _columns_of(self, table: str) -> list[tuple]:
        db, name = self._split(table)
        return self._run("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES', COLUMN_KEY "
                         "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                         "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                         (db, name))

    def _no_such_table(self, table: str) -> RivetError:
        names = [str(n) for (n,) in self._run("SELECT TABLE_NAME FROM information_schema.TABLES "
                                              "WHERE TABLE_SCHEMA = DATABASE() LIMIT 10000")]
        close = difflib.get_close_matches(self._split(table)[1], names, n=1)
        return RivetError("RIVET_SOURCE_NO_SUCH_TABLE", f"{self._where}: table {table} does not exist (or is not "
                          "visible to this user)", f"did you mean {close[0]!r}?" if close else
                          "check the name: 'database.table' or 'table'")

    def describe(self, relation: Relation) -> list[SourceColumn]:
        if relation.table is not None:
            rows = self._columns_of(relation.table)
            if not rows:
                raise self._no_such_table(relation.table)
            return [SourceColumn(str(n), str(t), bool(nullable)) for n, t, nullable, _ in rows]
        # a query: materialize its shape (LIMIT 0: no row is read) as a session temporary table and read the
        # declared types back; the cursor description alone loses tinyint(1), unsigned and decimal precision.
        tmp = f"rivet_describe_{threading.get_ident()}"
        assert relation.query is not None   # a Relation has exactly one of table/query
        body = strip_query(relation.query)
        with self._lock:
            self._native()   # connect first: a wrong password is an authentication error, not a missing grant
            try:
                self._run(f"CREATE TEMPORARY TABLE `{tmp}` AS SELECT * FROM ({body}\n) AS {QUERY_ALIAS} LIMIT 0")
                try:
                    rows = self._run(f"SHOW COLUMNS FROM `{tmp}`")
                finally:
                    self._run(f"DROP TEMPORARY TABLE IF EXISTS `{tmp}`")
            except RivetError as e:
                if "denied" in e.message.lower():
                    raise RivetError("RIVET_SOURCE_DESCRIBE_DENIED", f"{self._where}: cannot learn the column types of "
                                     "the export's query: the user may not create temporary tables",
                                     "GRANT CREATE TEMPORARY TABLES on the database to the export user (rivet "
                                     "creates an empty one from the query), or export a view of the query as a "
                                     "table") from None
                if "duplicate column" in e.message.lower():
                    raise RivetError("RIVET_SOURCE_DUPLICATE_COLUMN", e.message,
                                     "give each selected column its own name (AS alias)") from None
                raise
        return [SourceColumn(str(r[0]), _text(r[1]), _text(r[2]) == "YES") for r in rows]

    def primary_key(self, table: str) -> list[SourceColumn]:
        db, name = self._split(table)
        rows = self._columns_of(table)
        if not rows:
            raise self._no_such_table(table)
        order = self._run("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
                          "WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                          "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                          (db, name))
        by_name = {str(n): (str(t), bool(nl)) for n, t, nl, _ in rows}
        return [SourceColumn(str(n), *by_name[str(n)]) for (n,) in order]

    def key_index(self, table: str, column: str) -> tuple[bool, bool, bool]:
        db, name = self._split(table)
        by_name = {str(n): bool(nl) for n, _, nl, _ in self._columns_of(table)}
        if not by_name:
            raise self._no_such_table(table)
        # an index "leads" with the column when it is its first part; unique when NON_UNIQUE = 0 over that one column
        rows = self._run("SELECT s.NON_UNIQUE, (SELECT COUNT(*) FROM information_schema.STATISTICS o "
                         "WHERE o.TABLE_SCHEMA = s.TABLE_SCHEMA AND o.TABLE_NAME = s.TABLE_NAME "
                         "AND o.INDEX_NAME = s.INDEX_NAME) FROM information_schema.STATISTICS s "
                         "WHERE s.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND s.TABLE_NAME = %s "
                         "AND s.COLUMN_NAME = %s AND s.SEQ_IN_INDEX = 1", (db, name, column))
        unique = any(int(nu) == 0 and int(n) == 1 for nu, n in rows)
        return by_name.get(column, True), bool(rows), unique

    def column_values(self, sql: str) -> list[Any]:
        return [r[0] for r in self._run(sql)]

    def estimate_rows(self, relation: Relation) -> int | None:
        if relation.table is None:
            return None
        db, name = self._split(relation.table)
        rows = self._run("SELECT TABLE_ROWS FROM information_schema.TABLES "
                         "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s", (db, name))
        if not rows:
            raise self._no_such_table(relation.table)
        return None if rows[0][0] is None else int(rows[0][0])

    def scalar(self, sql: str) -> Any:
        rows = self._run(sql)
        if not rows:
            return None
        return rows[0][0] if len(rows[0]) == 1 else tuple(rows[0])

    # ---- rows --------------------------------------------------------------------------------------------------
    def read(self, sql: str, schema: pa.Schema, batch_rows: int,
             scan_table: str | None = None, budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        # scan_table buys nothing here: neither path splits one MySQL result (the runner's chunks parallelize)
        with self._lock:
            self._native()   # fails fast (connect_timeout) on a dead or mute server; learns the flavour
        if HAVE_CEXT:
            return self._read_rows(sql, schema, batch_rows, budget)
        return self._read_duckdb(sql, schema, batch_rows, budget)

    def _read_rows(self, sql: str, schema: pa.Schema, batch_rows: int,
                   budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        conn = self._open(snapshot=True)
        # the C API object under the connection: its fetch_row hands over a tuple of bytes per row straight from
        # libmysqlclient, without the per-row Python of the cursors (2x the client CPU, measured)
        api = conn._cmysql
        started = time.monotonic()
        try:
            api.query(sql.encode(), raw=True, buffered=False)
            fields = api.fetch_fields()
            if len(fields) != len(schema):
                raise _column_count_changed(len(fields), len(schema))
            rows = iter(api.fetch_row, None)
            # a tuple per row → one Arrow call per slice: a struct of binary children, split into columns below
            struct = pa.struct([pa.field(f"c{i}", pa.binary()) for i in range(len(fields))])
            while True:
                if budget is not None:   # auto_shrink: the rows of this batch as the budget stands now
                    batch_rows = budget.rows
                step = max(1, min(batch_rows, SLICE_ROWS))
                parts, n = [], 0
                while n < batch_rows:
                    got = list(islice(rows, min(step, batch_rows - n)))
                    if not got:
                        break
                    parts.append(_typed(pa.array(got, struct), schema, fields, self._where))
                    n += len(got)
                if not n:
                    return
                yield parts[0] if len(parts) == 1 else pa.concat_batches(parts)
                if n < batch_rows:
                    return
        except _DRIVER_ERRORS as e:
            raise classify(e, self._where, elapsed=time.monotonic() - started,
                           timeout_s=self.tuning.statement_timeout_s) from None
        finally:
            # close the socket without draining what the server still sends (free_result would read it all);
            # the server ends the query and rolls the read-only transaction back
            api.close()

    def _read_duckdb(self, sql: str, schema: pa.Schema, batch_rows: int,
                     budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        temporal = [f.name for f in schema
                    if (pa.types.is_timestamp(f.type) or pa.types.is_date(f.type))
                    and _kind((f.metadata or {}).get(NATIVE_TYPE_KEY)) in ("date", "datetime", "timestamp")]
        masks = [temporal[i:i + 62] for i in range(0, len(temporal), 62)]
        statement = self._statement(sql, masks)
        query = f"SELECT * FROM mysql_query('src', {duck.sql_string(statement)})"
        return self._stream(query, schema, batch_rows, masks, budget)

    def _statement(self, sql: str, masks: list[list[str]]) -> str:
        """The SELECT sent to the server: zero-date check columns first, then the statement timeout."""
        m = _SELECT.match(sql)
        if masks:
            if not m:
                raise RivetError("RIVET_INTERNAL_READ_SQL", "a MySQL read with date columns must be a SELECT built by "
                                 "engine.sql", "this is a bug in rivet; report it", ExitClass.INTERNAL)
            q = self._dialect.quote_ident
            cols = []
            for k, names in enumerate(masks):
                bits = " | ".join(f"(((MONTH({q(n)}) = 0 OR DAYOFMONTH({q(n)}) = 0) IS TRUE) << {i})"
                                  for i, n in enumerate(names))
                cols.append(f"({bits}) AS {q(f'{ZERO_DATE_COLUMN}_{k}')}")
            sql = sql[:m.end()] + ", ".join(cols) + ", " + sql[m.end():]
        t = self.tuning.statement_timeout_s
        if t:
            if self._mariadb:
                sql = f"SET STATEMENT max_statement_time={float(t)} FOR {sql}"
            elif m:   # MySQL: the hint has to follow the first SELECT keyword
                m2 = _SELECT.match(sql)
                assert m2 is not None   # sql still starts with the SELECT that m matched
                sql = sql[:m2.end()] + f"/*+ MAX_EXECUTION_TIME({int(t * 1000)}) */ " + sql[m2.end():]
        return sql

    def _attach(self, con) -> threading.Thread | None:
        p, tls = self._params, self._tls()
        lit = duck.sql_string
        opts = [f"HOST {lit(p['host'])}", f"PORT {int(p['port'])}", f"USER {lit(p['user'])}",
                f"PASSWORD {lit(p['password'])}"]
        if "database" in p:
            opts.append(f"DATABASE {lit(p['database'])}")
        opts += [f"{k.upper()} {lit(str(v))}" for k, v in tls.items()
                 if k in ("ssl_mode", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher")]
        for setting in ("mysql_tinyint1_as_boolean = false",       # TINYINT(1) holding 2 or -1 stays an integer
                        "mysql_bit1_as_boolean = true",
                        "mysql_incomplete_dates_as_nulls = true",   # zero month/day → NULL, caught by the check column
                        "mysql_time_as_time = false",
                        "mysql_session_time_zone = '+00:00'"):
            con.execute(f"SET {setting}")
        # credentials go through a secret (never part of a connection string a DuckDB error could echo)
        con.execute(f"CREATE SECRET rivet_src (TYPE mysql, {', '.join(opts)})")
        # DuckDB's MySQL client has no connect timeout: a server that accepts and never answers would hang the
        # ATTACH forever. Run it on a watchdog thread and give up after connect_timeout_s (returns the thread then).
        box: dict = {}

        def attach():
            try:
                con.execute("ATTACH '' AS src (TYPE mysql, SECRET rivet_src, READ_ONLY)")
            except duckdb.Error as e:
                box["error"] = e
        th = threading.Thread(target=attach, name="rivet-mysql-attach", daemon=True)
        th.start()
        th.join(max(1, self.tuning.connect_timeout_s) + 1)
        if th.is_alive():
            return th
        if "error" in box:
            raise classify(box["error"], self._where, connecting=True)
        return None

    def _stream(self, query: str, schema: pa.Schema, batch_rows: int,
                masks: list[list[str]], budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        con = duck.connect(threads=1, preserve_insertion_order=True)
        abandoned = False
        try:
            if self._attach(con) is not None:
                abandoned = True   # closing a connection whose ATTACH still runs would block on it
                raise RivetError("RIVET_SOURCE_UNREACHABLE", f"{self._where}: the server accepted the connection but "
                                 f"did not answer within {self.tuning.connect_timeout_s} s",
                                 "check that the server is healthy", ExitClass.TRANSIENT, transient=True)
            started = time.monotonic()
            try:
                reader = con.execute(query).to_arrow_reader(DUCKDB_PIECE_ROWS if budget else batch_rows)
                for batch in (regroup(reader, budget) if budget else reader):
                    if masks:
                        for k, names in enumerate(masks):
                            _refuse_zero_dates(batch.column(k), names, self._where)
                        batch = pa.RecordBatch.from_arrays(batch.columns[len(masks):],
                                                           names=batch.schema.names[len(masks):])
                    yield duck.conform(batch, schema)
            except RivetError:
                raise
            # the Arrow stream re-raises DuckDB's errors as OSError
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise classify(e, self._where, elapsed=time.monotonic() - started,
                               timeout_s=self.tuning.statement_timeout_s) from None
        finally:
            if not abandoned:
                con.close()


def _refuse_zero_dates(mask: pa.Array, names: list[str], where: str) -> None:
    if mask.null_count == len(mask) or not pc.max(mask).as_py():
        return
    bits = 0
    for v in pc.unique(pc.filter(mask, pc.not_equal(mask, 0))).to_pylist():
        bits |= int(v)
    raise _zero_dates([n for i, n in enumerate(names) if bits >> i & 1], where)


def _zero_dates(bad: list[str], where: str) -> RivetError:
    verb = "holds" if len(bad) == 1 else "hold"
    return RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: column {', '.join(bad)} {verb} a zero date "
                      "('0000-00-00' or a zero month/day), which no Arrow date can hold",
                      override_hint(*bad), ExitClass.REFUSED)


def _column_count_changed(got: int, want: int) -> RivetError:
    return RivetError("RIVET_SOURCE_SCHEMA_CHANGED", f"the source returned {got} columns where the plan expects {want}",
                      "the relation changed since planning: run `rivet plan` / `rivet check` again", ExitClass.DRIFT)


# ---- the server's text → Arrow --------------------------------------------------------------------------------------

def _typed(rows: pa.StructArray, schema: pa.Schema, fields: list[tuple], where: str) -> pa.RecordBatch:
    """A record batch of exactly `schema` from raw rows (binary columns holding the server's text)."""
    raw = rows.flatten()
    out = []
    for col, field, meta in zip(raw, schema, fields):
        try:
            out.append(_convert(col, field.type, meta))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise _unreadable(raw, schema, fields, field, meta, e, where) from None
    return pa.RecordBatch.from_arrays(out, schema=schema)


def _unreadable(raw: list[pa.Array], schema: pa.Schema, fields: list[tuple], field: pa.Field, meta: tuple,
                e: Exception, where: str) -> RivetError:
    """Why a column's text did not parse: zero dates (named for every column of the batch that holds one), another
    date no Arrow date can hold ('2024-02-30' under ALLOW_INVALID_DATES), or a type that changed since planning."""
    def temporal(f: pa.Field, m: tuple) -> bool:
        return m[8] in _TEMPORAL_FIELDS and pa.types.is_temporal(f.type)
    bad = [f.name for c, f, m in zip(raw, schema, fields)
           if temporal(f, m) and pc.any(pc.match_substring_regex(c.cast(pa.string()), _ZERO_DATE)).as_py()]
    if bad:
        return _zero_dates(bad, where)
    if temporal(field, meta):
        return RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: column {field.name} holds a value no Arrow "
                          f"{field.type} can hold ({e})", override_hint(field.name), ExitClass.REFUSED)
    return RivetError("RIVET_SOURCE_SCHEMA_CHANGED", f"column {field.name}: the source sent "
                      f"{FieldType.get_info(meta[8])}, the plan expects {field.type} ({e})",
                      "the column's type changed since planning: run `rivet check` again", ExitClass.DRIFT)


def _convert(col: pa.Array, to: pa.DataType, meta: tuple) -> pa.Array:
    """Raw values of one column (binary: text protocol) → `to`. Parsed straight into the target type; when that
    fails (a DECIMAL '3.000' read into an integer, a DATETIME into a date) through the type the server declared,
    then a safe cast, as any other reader would (overflow or truncation raise)."""
    ftype, flags, decimals = meta[8], meta[9], meta[10]
    if ftype == FieldType.BIT:   # sent as big-endian bytes, not as text
        return pa.array([None if v is None else int.from_bytes(v, "big") for v in col.to_pylist()],
                        pa.uint64()).cast(to)
    if pa.types.is_binary(to) or pa.types.is_large_binary(to):
        return col.cast(to)
    text = col.cast(pa.string())   # validates UTF-8 (the session's charset is utf8mb4)
    try:
        return _parse(text, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        declared = _declared(ftype, flags, decimals)
        if declared is None or declared == to:
            raise
        return _parse(text, declared).cast(to)


def _parse(text: pa.Array, to: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(to) and to.tz:   # the session runs in UTC: the text is the UTC wall clock
        return text.cast(pa.timestamp(to.unit)).cast(to)
    return text.cast(to)


def _declared(ftype: int, flags: int, decimals: int) -> pa.DataType | None:
    if ftype in (FieldType.DECIMAL, FieldType.NEWDECIMAL):
        return pa.decimal128(38, decimals) if decimals <= 38 else None
    if ftype in (FieldType.FLOAT, FieldType.DOUBLE):
        return pa.float64()
    if ftype in _INT_FIELDS:
        return pa.uint64() if flags & FieldFlag.UNSIGNED else pa.int64()
    if ftype in (FieldType.DATETIME, FieldType.TIMESTAMP):
        return pa.timestamp("us")
    if ftype in (FieldType.DATE, FieldType.NEWDATE):
        return pa.date32()
    return None


def _text(v) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
