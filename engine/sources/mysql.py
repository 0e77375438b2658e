"""MySQL 8 and MariaDB: mysql-connector-python (C extension) for introspection, counts and settings; DuckDB's mysql
scanner (`mysql_query`) for the rows.

Every session rivet opens runs with time_zone '+00:00' (TIMESTAMP columns come out as UTC instants) and the
statement timeout of the tuning: MariaDB `max_statement_time` (seconds), MySQL `max_execution_time` (ms, SELECT only);
the flavour comes from VERSION(). For reads, MariaDB gets `SET STATEMENT max_statement_time=N FOR <select>` and MySQL
the optimizer hint `SELECT /*+ MAX_EXECUTION_TIME(ms) */`, because DuckDB's scanner session cannot be configured.

Zero dates: DuckDB turns '0000-00-00' (and, with mysql_incomplete_dates_as_nulls, '2024-00-10') into NULL without a
word. Rather than read every date as text, a read whose schema holds native date/datetime/timestamp columns asks
the server for one extra BIGINT column: bit i is set when temporal column i has a zero month or day in that row. The
server computes it while it sends the rows (no second scan, no text conversion of the dates); the reader checks it
per batch (one vectorized compare), drops it, and refuses the read naming the column and the `= "text"` override.
"""
from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

try:  # the C extension; it only loads if imported before pyarrow/duckdb (static TLS), see MySQLSource notes
    import _mysql_connector  # noqa: F401
    HAVE_CEXT = True
except ImportError:
    HAVE_CEXT = False
import duckdb
import mysql.connector
import pyarrow as pa
import pyarrow.compute as pc

from engine import duck
from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
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
    "cannot allocate memory in static TLS block" once pyarrow or duckdb is loaded. Import `_mysql_connector` (or
    this module) before them — e.g. first thing in engine/__init__ — to get it; otherwise the pure-Python driver is
    used, which is fine for what it does here (introspection and scalars; rows flow through DuckDB)."""
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

    def _native(self):
        if self._conn is not None:
            return self._conn
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
            cur = conn.cursor()
            cur.execute("SELECT VERSION(), @@SESSION.sql_mode")
            version, sql_mode = cur.fetchone()
            self._mariadb = "mariadb" in str(version).lower()
            self._dialect.backslash_escapes = "NO_BACKSLASH_ESCAPES" not in str(sql_mode).upper()
            cur.execute("SET time_zone = '+00:00'")
            t = self.tuning.statement_timeout_s
            if self._mariadb:
                cur.execute(f"SET SESSION max_statement_time = {float(t or 0)}")
            else:
                cur.execute(f"SET SESSION max_execution_time = {int((t or 0) * 1000)}")
            cur.close()
        except mysql.connector.Error as e:
            raise classify(e, self._where, connecting=True) from None
        self._conn = conn
        return conn

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
        body = strip_query(relation.query)
        with self._lock:
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
             scan_table: str | None = None) -> Iterator[pa.RecordBatch]:
        # scan_table buys nothing here (DuckDB does not parallelize a MySQL scan), so every read is one mysql_query
        with self._lock:
            self._native()   # fails fast (connect_timeout) on a dead or mute server; learns the flavour
        temporal = [f.name for f in schema
                    if (pa.types.is_timestamp(f.type) or pa.types.is_date(f.type))
                    and _kind((f.metadata or {}).get(NATIVE_TYPE_KEY)) in ("date", "datetime", "timestamp")]
        masks = [temporal[i:i + 62] for i in range(0, len(temporal), 62)]
        statement = self._statement(sql, masks)
        query = f"SELECT * FROM mysql_query('src', {duck.sql_string(statement)})"
        return self._stream(query, schema, batch_rows, masks)

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
                masks: list[list[str]]) -> Iterator[pa.RecordBatch]:
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
                reader = con.execute(query).to_arrow_reader(batch_rows)
                for batch in reader:
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
    bad = [n for i, n in enumerate(names) if bits >> i & 1]
    verb = "holds" if len(bad) == 1 else "hold"
    raise RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: column {', '.join(bad)} {verb} a zero date "
                     "('0000-00-00' or a zero month/day), which no Arrow date can hold",
                     override_hint(bad[0]), ExitClass.REFUSED)


def _text(v) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
