"""PostgreSQL: psycopg for introspection, counts and settings; DuckDB's postgres scanner for the rows.

Every connection rivet opens carries statement_timeout and TimeZone=UTC as startup options (libpq `options`), so
the native connection and the DuckDB scanner's connections (several, for a parallel scan) all get them. A pooler
in transaction mode (PgBouncer) must allow the `options` startup parameter (ignore_startup_parameters = options).
"""
from __future__ import annotations

import base64
import difflib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engine import duck
from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.secrets import redact, register
from engine.sources.base import Relation, Source, SourceColumn
from engine.sql import QUERY_ALIAS, PostgresDialect, strip_query
from engine.types import GUARD_MARKER, NATIVE_TYPE_KEY, override_hint

# DuckDB reads PostgreSQL ±infinity as the extreme values of the Arrow storage type; no real value is there.
_INFINITY = {pa.int64(): (-(2**63 - 1), 2**63 - 1), pa.int32(): (-(2**31 - 1), 2**31 - 1)}
_TRANSIENT_STATES = ("08", "40001", "40P01", "53", "55P03", "57P01", "57P02", "57P03", "57P05")
_TRANSIENT_TEXT = ("server closed the connection", "terminating connection", "connection reset", "ssl syscall",
                   "could not receive data", "could not send data", "connection to server was lost", "eof detected",
                   "too many clients", "remaining connection slots", "deadlock detected",
                   "could not serialize access", "the database system is", "broken pipe", "no connection to the server")
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


class PostgresSource(Source):
    engine = "postgres"

    def __init__(self, cfg: SourceConfig, tuning: Tuning):
        super().__init__(cfg, tuning)
        self._dialect = PostgresDialect()
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        try:
            params = conninfo_to_dict(cfg.url)
        except psycopg.ProgrammingError as e:
            raise RivetError("RIVET_CONFIG_BAD_URL", f"the PostgreSQL source URL is not valid: {redact(str(e))}",
                             "postgresql://user:password@host:5432/database") from None
        register(params.get("password"))
        host, port, db = params.get("host", "localhost"), params.get("port", 5432), params.get("dbname", "")
        self._where = f"postgres {host}:{port}/{db}"

    @property
    def dialect(self) -> PostgresDialect:
        return self._dialect

    # ---- connections -------------------------------------------------------------------------------------------
    def conninfo(self) -> str:
        opts = ["-c TimeZone=UTC"]
        if self.tuning.statement_timeout_s:
            opts.append(f"-c statement_timeout={int(self.tuning.statement_timeout_s * 1000)}")
        base = conninfo_to_dict(self.cfg.url)
        if base.get("options"):
            opts.insert(0, base["options"])
        return make_conninfo(self.cfg.url, connect_timeout=max(2, int(self.tuning.connect_timeout_s)),
                             application_name=base.get("application_name", "rivet"), options=" ".join(opts),
                             **{k: str(v) for k, v in (self.cfg.tls or {}).items()})

    def _native(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.conninfo(), autocommit=True)
            except psycopg.Error as e:
                raise classify(e, self._where, connecting=True) from None
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
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ---- introspection -----------------------------------------------------------------------------------------
    def server_version(self) -> str:
        (v,), = self._run("SHOW server_version")
        return f"PostgreSQL {v.split()[0]}"

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
        with self._lock:
            conn = self._native()
            try:
                cur = conn.execute(f"SELECT * FROM ({strip_query(relation.query)}\n) AS {QUERY_ALIAS} LIMIT 0")
                res = cur.pgresult
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

    def _table_schema(self, table: str) -> tuple[str, str]:
        """The (schema, table) a possibly unqualified name resolves to under the search_path."""
        oid = self._regclass(table)
        (schema, name), = self._run("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                                    "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))
        return schema, name

    # ---- rows --------------------------------------------------------------------------------------------------
    def read(self, sql: str, schema: pa.Schema, batch_rows: int,
             scan_table: str | None = None) -> Iterator[pa.RecordBatch]:
        if scan_table is not None:
            # DuckDB's own scan of the attached table: parallel ctid ranges on several connections sharing one
            # exported snapshot. Only for plain column reads, and only when every column keeps DuckDB's type.
            s, t = self._table_schema(scan_table)
            q = self._dialect.quote_ident
            cols = ", ".join(q(f.name) for f in schema)
            query = f"SELECT {cols} FROM src.{q(s)}.{q(t)}"
            threads = None
        else:
            query = f"SELECT * FROM postgres_query('src', {duck.sql_string(sql)})"
            threads = 1   # one COPY stream: more DuckDB threads only add contention
        infinity_checks = [(i, f.name) for i, f in enumerate(schema)
                           if (pa.types.is_timestamp(f.type) or pa.types.is_date(f.type))
                           and (f.metadata or {}).get(NATIVE_TYPE_KEY) is not None]
        stream = self._stream(query, schema, batch_rows, threads, ordered=scan_table is None, checks=infinity_checks)
        if scan_table is None:
            return stream
        decimals = [f.name for f in schema if pa.types.is_decimal(f.type)]
        return self._nan_checked(stream, scan_table, decimals) if decimals else stream

    def copy_parquet(self, scan_table: str, schema: pa.Schema, out: Path, compression: str, max_file_size: int | None,
                     row_group_rows: int = 122_880, on_progress=None) -> list[Path]:
        """The fused fast path for a plain full-table read to Parquet: DuckDB scans (parallel ctid ranges, one
        snapshot) and writes the Parquet itself, 30% less CPU than Arrow export + pyarrow here. `schema` travels as
        the file's ARROW:schema so readers see the same types and `rivet.native_type` field metadata.
        Returns the written files (one, or several under `out` as a directory when max_file_size rotates)."""
        s, t = self._table_schema(scan_table)
        q = self._dialect.quote_ident
        cols = ", ".join(q(f.name) for f in schema)
        blob = base64.b64encode(schema.serialize().to_pybytes()).decode()
        codec = {"none": "uncompressed"}.get(compression, compression)
        options = [f"FORMAT parquet, COMPRESSION {codec}, ROW_GROUP_SIZE {int(row_group_rows)}",
                   f"KV_METADATA {{'ARROW:schema': {duck.sql_string(blob)}}}"]
        if codec == "zstd":
            options.append("COMPRESSION_LEVEL 3")
        if max_file_size:
            options.append(f"FILE_SIZE_BYTES {int(max_file_size)}, FILENAME_PATTERN 'part{{i}}'")
        target = out if max_file_size else out.with_suffix(".parquet")
        con = duck.connect(preserve_insertion_order=False)
        stop = threading.Event()
        poller = None
        try:
            try:
                con.execute(f"ATTACH {duck.sql_string(self.conninfo())} AS src (TYPE postgres, READ_ONLY)")
            except duckdb.Error as e:
                raise classify(e, self._where, connecting=True) from None
            if on_progress:
                def poll():
                    while not stop.wait(0.25):
                        try:
                            on_progress(max(0.0, con.query_progress()) / 100.0)
                        except duckdb.Error:
                            pass
                poller = threading.Thread(target=poll, name="rivet-progress", daemon=True)
                poller.start()
            try:
                con.execute(f"COPY (SELECT {cols} FROM src.{q(s)}.{q(t)}) TO {duck.sql_string(str(target))} "
                            f"({', '.join(options)})")
            except (duckdb.Error, OSError) as e:
                raise classify(e, self._where) from None
        finally:
            stop.set()
            if poller:
                poller.join()
            con.close()
        files = sorted(target.glob("*.parquet")) if max_file_size else [target]
        self._check_written(files, schema, scan_table)
        return files

    def _check_written(self, files: list[Path], schema: pa.Schema, table: str) -> None:
        """What the scanner cannot say while scanning: ±infinity dates (written as extreme values) and numeric NaN
        (read as 0). One pass over just those columns of the written files; the server is asked only about zeros."""
        q = self._dialect.quote_ident
        temporal = [f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        decimals = [f.name for f in schema if pa.types.is_decimal(f.type)]
        if not (temporal or decimals) or not files:
            return
        probes = [f"bool_or(isinf({q(c)}))" for c in temporal] + [f"bool_or({q(c)} = 0)" for c in decimals]
        con = duck.connect()
        try:
            listing = "[" + ", ".join(duck.sql_string(str(f)) for f in files) + "]"
            row = con.execute(f"SELECT {', '.join(probes)} FROM read_parquet({listing})").fetchone()
        finally:
            con.close()
        for name, hit in zip(temporal, row[: len(temporal)]):
            if hit:
                raise RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{self._where}: column {name} holds infinity, "
                                 "which no Arrow timestamp can hold", override_hint(name), ExitClass.REFUSED)
        zeros = [c for c, hit in zip(decimals, row[len(temporal):]) if hit]
        if zeros:
            for _ in self._nan_checked(iter(()), table, zeros, assume_zero=True):
                pass

    def _nan_checked(self, stream: Iterator[pa.RecordBatch], table: str, decimals: list[str],
                     assume_zero: bool = False):
        """The plain scan reads numeric NaN as 0 (the query path guards it on the server instead). Watch the decimal
        columns for zeros; only if one appeared, ask the server whether any of them holds NaN and refuse if so."""
        zero_seen: set[str] = set(decimals) if assume_zero else set()
        for batch in stream:
            for name in decimals:
                if name not in zero_seen and pc.any(pc.equal(batch.column(name), 0)).as_py():
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

    def _stream(self, query: str, schema: pa.Schema, batch_rows: int, threads: int | None, ordered: bool,
                checks: list[tuple[int, str]]) -> Iterator[pa.RecordBatch]:
        con = duck.connect(threads=threads, preserve_insertion_order=ordered)
        try:
            try:
                con.execute(f"ATTACH {duck.sql_string(self.conninfo())} AS src (TYPE postgres, READ_ONLY)")
            except duckdb.Error as e:
                raise classify(e, self._where, connecting=True) from None
            try:
                reader = con.execute(query).to_arrow_reader(batch_rows)
                for batch in reader:
                    for i, name in checks:
                        _refuse_infinity(batch.column(i), name, self._where)
                    yield duck.conform(batch, schema)
            except RivetError:
                raise
            # the Arrow stream re-raises DuckDB's errors as OSError
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise classify(e, self._where) from None
        finally:
            con.close()


def _refuse_infinity(arr: pa.Array, name: str, where: str) -> None:
    if arr.null_count == len(arr):
        return
    storage = pa.int64() if pa.types.is_timestamp(arr.type) else pa.int32()
    lo, hi = _INFINITY[storage]
    mm = pc.min_max(arr.view(storage))
    if mm["min"].as_py() == lo or mm["max"].as_py() == hi:
        raise RivetError("RIVET_SOURCE_UNREPRESENTABLE", f"{where}: column {name} holds infinity, which no Arrow "
                         "date/timestamp can hold", f'set [exports.columns] {name} = "text" to export its text form '
                         '(or "skip")', ExitClass.REFUSED)
