"""PostgresSource and MySQLSource against the real servers: introspection, errors a user meets (bad password,
unreachable or mute server, missing table, timeouts, a connection killed mid-read), and batched reads that return
every row exactly once in bounded batches."""
from __future__ import annotations

import socket
import threading
import time
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import duckdb

from engine import duck
from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.sources import open_source
from engine.sources.base import Relation
from engine.sources.mysql import MySQLSource
from engine.sources.postgres import PostgresSource
from engine.types import map_columns, output_schema

N = 200_000
SECRET = "Sup3r-s3cret-pw"
FAST = Tuning(statement_timeout_s=30, connect_timeout_s=2)


def with_netloc(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))


@pytest.fixture(scope="module")
def pgsrc(pg):
    pg.sql("DROP TABLE IF EXISTS big; CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, amount numeric(12,2),"
           " note text, at timestamp);"
           f"INSERT INTO big SELECT g, g % 7, g / 100.0, 'n' || g, timestamp '2024-01-01' + g * interval '1 second'"
           f" FROM generate_series(1, {N}) g; ANALYZE big;"
           "DROP TABLE IF EXISTS pk2; CREATE TABLE pk2 (b int, a text, v int, PRIMARY KEY (a, b))")
    s = PostgresSource(SourceConfig("postgres", pg.url), FAST)
    yield s
    s.close()


@pytest.fixture(scope="module")
def mysrc(mysql):
    for stmt in ["DROP TABLE IF EXISTS big",
                 ("CREATE TABLE big (id bigint PRIMARY KEY, grp int NOT NULL, amount decimal(12,2), note text, "
                  "at datetime(6))"),
                 (f"INSERT INTO big SELECT seq, seq % 7, seq / 100, CONCAT('n', seq), "
                  f"TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_{N}"),
                 "ANALYZE TABLE big",
                 "DROP TABLE IF EXISTS pk2", "CREATE TABLE pk2 (b int, a varchar(10), v int, PRIMARY KEY (a, b))"]:
        mysql.sql(stmt)
    s = MySQLSource(SourceConfig("mysql", mysql.url), FAST)
    yield s
    s.close()


@pytest.fixture(params=["postgres", "mysql"])
def src(request):
    return request.getfixturevalue("pgsrc" if request.param == "postgres" else "mysrc")


def plan_sql(src, rel, where=(), order=("id",)):
    mappings = map_columns(src.engine, src.describe(rel), {}, src.dialect)
    sql = src.dialect.select(rel, [m.select_expr for m in mappings], list(where),
                             [src.dialect.quote_ident(c) for c in order])
    return sql, output_schema(mappings)


@pytest.fixture
def mute_server():
    """A TCP port that accepts connections and never says a word (a hung server, a black-holed proxy)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv.getsockname()[1]
    srv.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- introspection ------------------------------------------------------------------------------------------------

def test_open_source_and_server_version(pg, mysql):
    with open_source(SourceConfig("postgres", pg.url), FAST) as s:
        assert isinstance(s, PostgresSource) and s.server_version().startswith("PostgreSQL 1")
    with open_source(SourceConfig("mysql", mysql.url), FAST) as s:
        assert isinstance(s, MySQLSource) and "MariaDB" in s.server_version()


def test_describe_primary_key_estimate_scalar(src):
    cols = src.describe(Relation(table="big"))
    assert [c.name for c in cols] == ["id", "grp", "amount", "note", "at"]
    assert [c.nullable for c in cols][:3] == [False, False, True]
    assert [c.name for c in src.primary_key("big")] == ["id"]
    assert [c.name for c in src.primary_key("pk2")] == ["a", "b"]      # key order, not table order
    assert src.primary_key("big")[0].native_type in ("bigint", "bigint(20)")
    est = src.estimate_rows(Relation(table="big"))
    assert est is not None and N * 0.5 <= est <= N * 1.5
    assert src.estimate_rows(Relation(query="select 1")) is None
    q = src.dialect
    assert src.scalar(q.count(Relation(table="big"), [f"{q.quote_ident('grp')} = 0"])) == N // 7
    assert tuple(src.scalar(q.min_max(Relation(table="big"), q.quote_ident("id")))) == (1, N)
    assert src.scalar(q.select(Relation(table="big"), [q.quote_ident("amount")], ["id = 12345"])) == Decimal("123.45")


def test_describe_a_query_reads_no_rows(src):
    slow = "SELECT id, pg_sleep(10) AS s FROM big" if src.engine == "postgres" else "SELECT id, SLEEP(10) AS s FROM big"
    t0 = time.monotonic()
    cols = src.describe(Relation(query=slow))
    assert time.monotonic() - t0 < 2
    assert [c.name for c in cols] == ["id", "s"]


def test_duplicate_query_columns_are_named(src):
    with pytest.raises(RivetError) as e:
        src.describe(Relation(query="SELECT id, id FROM big"))
    assert e.value.code == "RIVET_SOURCE_DUPLICATE_COLUMN" and "id" in e.value.message


def test_missing_table(src):
    for call in (lambda: src.describe(Relation(table="bgi")), lambda: src.primary_key("bgi"),
                 lambda: src.estimate_rows(Relation(table="bgi"))):
        with pytest.raises(RivetError) as e:
            call()
        assert e.value.code == "RIVET_SOURCE_NO_SUCH_TABLE" and e.value.exit_class == ExitClass.USAGE
        assert "big" in e.value.hint
    with pytest.raises(RivetError) as e:   # the same through the read path (DuckDB's messages)
        list(src.read(src.dialect.select(Relation(table="no_such"), []), pa.schema([("x", pa.int32())]), 10))
    assert e.value.code == "RIVET_SOURCE_NO_SUCH_TABLE"
    with pytest.raises(RivetError) as e:
        src.scalar("SELECT nope FROM big")
    assert e.value.code == "RIVET_SOURCE_QUERY" and not e.value.transient


# ---- reads --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["query", "scan_table"])
def test_200k_rows_in_batches_exactly_once(src, path):
    rel = Relation(table="big")
    sql, schema = plan_sql(src, rel, order=())
    if path == "scan_table":
        sql = src.dialect.select(rel, [src.dialect.quote_ident(f.name) for f in schema])
    batches, ids = 0, []
    for b in src.read(sql, schema, 30_000, scan_table="big" if path == "scan_table" else None):
        assert b.schema == schema and 0 < b.num_rows <= 30_000
        batches += 1
        ids.append(b.column("id"))
    ids = pa.chunked_array(ids)
    assert len(ids) == N and pc.count_distinct(ids).as_py() == N
    assert pc.min(ids).as_py() == 1 and pc.max(ids).as_py() == N and batches >= N // 30_000


def test_a_one_stream_read_runs_on_a_one_thread_duckdb_and_a_big_table_scan_on_every_core(pgsrc, monkeypatch):
    """A `postgres_query` read is one stream: a second DuckDB worker would only poll for its one task and burn a core
    the server and the Parquet writer need (≈ 0.7 CPU-s per 5 M rows measured). DuckDB's own table scan splits a
    table into ctid ranges of 1,000 pages and uses every core; a smaller table is read as a query (one stream either
    way, and the scan's catalog work cost ~25 ms against ~5 ms for the same rows)."""
    reads = []
    real_attached, real_batches = duck.attached, PostgresSource._batches

    def attached(target, kind, parallel=True):
        con, alias = real_attached(target, kind, parallel)
        reads.append([con.execute("SELECT current_setting('threads')").fetchone()[0]])
        return con, alias

    def batches(self, con, query, *args, **kwargs):
        reads[-1].append("postgres_query(" in query)
        return real_batches(self, con, query, *args, **kwargs)
    monkeypatch.setattr(duck, "attached", attached)
    monkeypatch.setattr(PostgresSource, "_batches", batches)
    rel = Relation(table="big")
    sql, schema = plan_sql(pgsrc, rel, order=())
    assert sum(b.num_rows for b in pgsrc.read(sql, schema, 50_000)) == N
    scan = pgsrc.dialect.select(rel, [pgsrc.dialect.quote_ident(f.name) for f in schema])
    assert sum(b.num_rows for b in pgsrc.read(scan, schema, 50_000, scan_table="big")) == N   # 1,600+ pages
    small = Relation(table="pk2")
    small_schema = plan_sql(pgsrc, small, order=())[1]
    pk2 = pgsrc.dialect.select(small, [pgsrc.dialect.quote_ident(f.name) for f in small_schema])
    assert sum(b.num_rows for b in pgsrc.read(pk2, small_schema, 50_000, scan_table="pk2")) == 0
    # [DuckDB threads, read as a query?] per read
    assert reads == [[1, True], [duck.os.cpu_count(), False], [1, True]]


def test_ordered_read_keeps_order_and_filters(src):
    q = src.dialect
    sql, schema = plan_sql(src, Relation(table="big"), [f"{q.quote_ident('id')} > {q.literal(150_000)}"], ["at"])
    ids = pa.chunked_array([b.column("id") for b in src.read(sql, schema, 7_000)]).to_pylist()
    assert ids == list(range(150_001, N + 1))


def test_early_close_releases_the_read(src, pg, mysql):
    sql, schema = plan_sql(src, Relation(table="big"))
    gen = src.read(sql, schema, 1_000)
    first = next(gen)
    assert first.num_rows == 1_000
    gen.close()
    # the scanner's read has ended on the server (its connection may stay idle in DuckDB's pool for the next read)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if src.engine == "postgres":
            n = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%COPY%big%' "
                       "AND state <> 'idle' AND pid <> pg_backend_pid()")
        else:
            n = mysql.sql("SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%FROM `big`%' "
                          "AND ID <> CONNECTION_ID()")
        if n[0][0] == 0:
            break
        time.sleep(0.1)
    assert n[0][0] == 0
    assert sum(b.num_rows for b in src.read(sql, schema, 50_000)) == N   # and the next read works


def test_statement_timeout_applies_to_reads(pg, mysql):
    for engine, url, slow in [("postgres", pg.url, "SELECT 1 AS x FROM pg_sleep(5)"),
                              ("mysql", mysql.url, "SELECT SLEEP(5) AS x FROM seq_1_to_2")]:
        s = open_source(SourceConfig(engine, url), Tuning(statement_timeout_s=1, connect_timeout_s=2))
        t0 = time.monotonic()
        with pytest.raises(RivetError) as e:
            list(s.read(slow, pa.schema([("x", pa.int64())]), 10))
        assert time.monotonic() - t0 < 4, engine
        assert e.value.code == "RIVET_SOURCE_TIMEOUT" and e.value.exit_class == ExitClass.TRANSIENT, engine
        s.close()


def test_connection_killed_mid_read_is_transient(src, pg, mysql):
    if src.engine == "postgres":
        sql, marker = "SELECT g FROM generate_series(1, 20000000) g", "generate_series(1, 20000000)"
    else:
        sql, marker = "SELECT seq AS g FROM seq_1_to_20000000", "seq_1_to_20000000"
    gen = src.read(sql, pa.schema([("g", pa.int64())]), 1_000)
    next(gen)
    if src.engine == "postgres":
        pg.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%{marker}%' "
               "AND pid <> pg_backend_pid()")
    else:
        for (pid,) in mysql.sql(f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' "
                                "AND ID <> CONNECTION_ID()"):
            mysql.sql(f"KILL {int(pid)}")
    with pytest.raises(RivetError) as e:
        for _ in gen:
            pass
    assert e.value.transient and e.value.exit_class == ExitClass.TRANSIENT, e.value.render()


def test_native_connection_recovers_after_being_killed(src, pg, mysql):
    assert src.scalar("SELECT 1") == 1
    if src.engine == "postgres":
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rivet' "
               "AND datname = current_database()")
    else:
        for (pid,) in mysql.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                                f"AND DB = '{mysql.name}'"):
            mysql.sql(f"KILL {int(pid)}")
    with pytest.raises(RivetError) as e:
        src.scalar("SELECT 2")
    assert e.value.transient
    assert src.scalar("SELECT 3") == 3   # the runner's retry gets a fresh connection


# ---- connection failures ------------------------------------------------------------------------------------------

def test_postgres_auth_failure_never_shows_the_password(pg):
    url = with_netloc(pg.url, f"no_such_role:{SECRET}@127.0.0.1:{urlsplit(pg.url).port or 5432}")
    s = PostgresSource(SourceConfig("postgres", url), FAST)
    for call in (s.server_version, lambda: list(s.read("SELECT 1", pa.schema([("x", pa.int32())]), 10))):
        with pytest.raises(RivetError) as e:
            call()
        assert e.value.code == "RIVET_SOURCE_AUTH" and e.value.exit_class == ExitClass.USAGE
        assert not e.value.transient and SECRET not in e.value.render() and SECRET not in e.value.to_json()


def test_mysql_auth_failure_never_shows_the_password(mysql, mysrc):
    user = f"rivet_{mysql.name[-8:]}"
    mysql.sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'")
    mysql.sql(f"GRANT SELECT ON `{mysql.name}`.* TO '{user}'@'%'")
    try:
        url = with_netloc(mysql.url, f"{user}:{SECRET}@127.0.0.1:{urlsplit(mysql.url).port or 3306}")
        s = MySQLSource(SourceConfig("mysql", url), FAST)
        with pytest.raises(RivetError) as e:
            s.server_version()
        assert e.value.code == "RIVET_SOURCE_AUTH" and e.value.exit_class == ExitClass.USAGE
        assert SECRET not in e.value.render()
        ok = MySQLSource(SourceConfig("mysql", with_netloc(mysql.url, f"{user}:right-password@127.0.0.1:"
                                                           f"{urlsplit(mysql.url).port or 3306}")), FAST)
        assert sum(b.num_rows for b in ok.read("SELECT id FROM big WHERE id <= 10", pa.schema([("id", pa.int64())]),
                                               100)) == 10
        # a SELECT-only user cannot create the empty temporary table that describes a query: say so plainly
        with pytest.raises(RivetError) as e:
            ok.describe(Relation(query="SELECT id FROM big"))
        assert e.value.code == "RIVET_SOURCE_DESCRIBE_DENIED" and "CREATE TEMPORARY TABLES" in e.value.hint
        assert [c.name for c in ok.describe(Relation(table="big"))][:2] == ["id", "grp"]
        ok.close()
    finally:
        mysql.sql(f"DROP USER '{user}'@'%'")


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_refused_port_fails_fast_and_transient(pg, mysql, engine):
    url = with_netloc(pg.url if engine == "postgres" else mysql.url, f"root@127.0.0.1:{free_port()}")
    s = open_source(SourceConfig(engine, url), FAST)
    for call in (s.server_version, lambda: list(s.read("SELECT 1", pa.schema([("x", pa.int32())]), 10))):
        t0 = time.monotonic()
        with pytest.raises(RivetError) as e:
            call()
        assert time.monotonic() - t0 < 2
        assert e.value.code == "RIVET_SOURCE_UNREACHABLE" and e.value.transient
        assert e.value.exit_class == ExitClass.TRANSIENT


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_mute_server_fails_within_connect_timeout(pg, mysql, mute_server, engine):
    url = with_netloc(pg.url if engine == "postgres" else mysql.url, f"root@127.0.0.1:{mute_server}")
    s = open_source(SourceConfig(engine, url), FAST)
    for call in (s.server_version, lambda: list(s.read("SELECT 1", pa.schema([("x", pa.int32())]), 10))):
        t0 = time.monotonic()
        with pytest.raises(RivetError) as e:
            call()
        assert time.monotonic() - t0 < FAST.connect_timeout_s + 2.5, engine
        assert e.value.code == "RIVET_SOURCE_UNREACHABLE" and e.value.transient


def test_duckdb_mysql_attach_cannot_hang(mysql, mute_server):
    # DuckDB's MySQL client has no connect timeout; the adapter's watchdog gives up after connect_timeout_s
    s = MySQLSource(SourceConfig("mysql", with_netloc(mysql.url, f"root@127.0.0.1:{mute_server}")), FAST)
    t0 = time.monotonic()
    hung = s._attach(duck.connect(threads=1))
    assert isinstance(hung, threading.Thread) and time.monotonic() - t0 < FAST.connect_timeout_s + 2


def test_bad_urls_are_config_errors():
    with pytest.raises(RivetError) as e:
        MySQLSource(SourceConfig("mysql", "postgresql://x@h/db"), FAST)
    assert e.value.code == "RIVET_CONFIG_BAD_URL"
    with pytest.raises(RivetError) as e:
        MySQLSource(SourceConfig("mysql", f"mysql://u:{SECRET}@h:notaport/db"), FAST)
    assert e.value.code == "RIVET_CONFIG_BAD_URL" and SECRET not in e.value.render()


def test_a_pooled_connection_the_server_killed_is_not_handed_out(pg, pgsrc):
    """An idle connection kept for the next export (a long-lived TUI, an in-process batch) may be terminated by the
    server meanwhile (restart, idle timeout, an operator's pg_terminate_backend): the next export must connect
    afresh, not fail with "terminating connection due to administrator command"."""
    cfg = SourceConfig("postgres", pg.url)
    with open_source(cfg, FAST) as s:
        s.server_version()                       # its connection goes back to the idle pool on close
    killed = pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'rivet' AND pid <> pg_backend_pid()")[0][0]
    assert killed >= 1
    with open_source(cfg, FAST) as s:
        assert s.server_version().startswith("PostgreSQL")
        assert [c.name for c in s.describe(Relation(table="big"))][:2] == ["id", "grp"]


def test_a_scan_duckdb_interrupted_itself_is_retried_not_blamed_on_the_sql():
    """When one thread of DuckDB's parallel PostgreSQL scan loses its connection (pg_terminate_backend, a failover),
    DuckDB cancels the sibling threads and may report their "INTERRUPT Error" instead of the cause (seen under load
    in tests/reliability/test_connection_faults.py). Rivet never reports an interrupt it asked for, so this one is
    a lost connection: transient and retried, not "check the SQL" with exit 1."""
    from engine.sources.postgres import classify
    # as DuckDB raises it, and as the Arrow stream of a running read re-raises it (an OSError with the same text)
    for exc in (duckdb.InterruptException("INTERRUPT Error: Interrupted!"), OSError("INTERRUPT Error: Interrupted!")):
        err = classify(exc, "postgres 127.0.0.1:5432/db")
        assert (err.code, err.exit_class, err.transient) == ("RIVET_SOURCE_CONNECTION_LOST", ExitClass.TRANSIENT,
                                                             True), type(exc)
        assert "lost connection" in err.message
