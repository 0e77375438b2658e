"""MssqlSource and MssqlDialect against a real SQL Server: literals and identifiers full of quotes, brackets and
comment markers come back as the very value sent; introspection of tables and queries; batched reads; timeouts,
lock waits, snapshot sessions and TLS as the module notes of engine/sources/mssql.py say.

Runs only when RIVET_TEST_MSSQL_URL names a server (docs/mssql.md); otherwise the module reports itself skipped.
"""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest

from tests.mssql.conftest import NUMBERS, SERVER_URL, SKIP_REASON, babelfish_skip_reason

if not SERVER_URL:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import pyarrow as pa  # noqa: E402

from engine.config import SourceConfig, Tuning  # noqa: E402
from engine.errors import ExitClass, RivetError  # noqa: E402
from engine.sources import open_source  # noqa: E402
from engine.sources.base import Relation  # noqa: E402
from engine.sql import MssqlDialect  # noqa: E402
from engine.types import map_columns, output_schema  # noqa: E402

pytestmark = pytest.mark.mssql
MS = MssqlDialect()
NASTY = ["it's", "back\\slash", "\\'; DROP TABLE x; --", "-- comment", "/* c */", "two '' quotes", "tab\tnew\nline",
         "unicode ✓ é 中 \U0001F600", "'", "N'x'", "]", "[x]", "%s %(x)s ?", ""]


@pytest.fixture()
def src(ms):
    with open_source(SourceConfig("mssql", ms.url), Tuning(statement_timeout_s=30, connect_timeout_s=10)) as s:
        yield s


@pytest.fixture()
def big(ms):
    ms.sql("DROP TABLE IF EXISTS dbo.big; CREATE TABLE dbo.big (id bigint NOT NULL PRIMARY KEY, "
           "amount decimal(12,2), note nvarchar(100), at datetime2(7))")
    ms.sql(NUMBERS.format(n=20000) + " INSERT INTO dbo.big SELECT i, i / 100.0, CONCAT(N'n', i), "
           "DATEADD(second, i, CAST('2024-01-01' AS datetime2(7))) FROM n")
    return ms


def test_literals_round_trip(src):
    for s in NASTY:
        assert src.scalar(f"SELECT {MS.literal(s)} AS v") == s, s
    for v in [Decimal("-9999999999999999999999999999.9999999999"), 2**63 - 1, -1.5, None, True,
              dt.date(2024, 2, 29), dt.time(10, 11, 12, 123456)]:
        got = src.scalar(f"SELECT {MS.literal(v)} AS v")
        assert got == v, (v, got)
    raw = b"\x00\x01'"
    assert src.scalar(f"SELECT {MS.literal(raw)} AS v") == raw
    aware = dt.datetime(2024, 6, 1, 12, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    assert src.scalar(f"SELECT {MS.literal(aware)} AS v") == aware


def test_naive_datetime_literal_compares_exactly_with_each_column_type(src, ms):
    ms.sql("DROP TABLE IF EXISTS dbo.cmp; CREATE TABLE dbo.cmp (dtm datetime, dt7 datetime2(7), sdt smalldatetime, "
           "dto datetimeoffset(7)); INSERT INTO dbo.cmp VALUES ('2024-01-01T00:00:00.003', "
           "'2024-01-01T00:00:00.003', '2024-01-01T00:01:00', '2024-01-01T00:00:00.003+00:00')")
    v = dt.datetime(2024, 1, 1, 0, 0, 0, 3000)
    for col in ("dtm", "dt7", "dto"):
        assert src.scalar(f"SELECT COUNT_BIG(*) AS n FROM dbo.cmp WHERE [{col}] > {MS.literal(v)}") == 0, col
        assert src.scalar(f"SELECT COUNT_BIG(*) AS n FROM dbo.cmp WHERE [{col}] >= {MS.literal(v)}") == 1, col
    minute = dt.datetime(2024, 1, 1, 0, 1)
    assert src.scalar(f"SELECT COUNT_BIG(*) AS n FROM dbo.cmp WHERE sdt > {MS.literal(minute)}") == 0
    # with SET DATEFORMAT dmy and another language the literal still means the same instant. Babelfish sends
    # SET LANGUAGE's "Changed language setting" (5703) at severity 10, which pymssql raises as an error (SQL
    # Server sends it as information): there only the DATEFORMAT half runs
    language = "" if ms.babelfish else "SET LANGUAGE French; "
    assert src.scalar(f"SET DATEFORMAT dmy; {language}SELECT COUNT_BIG(*) AS n FROM dbo.cmp "
                      f"WHERE dtm >= {MS.literal(v)} AND dtm < {MS.literal(dt.date(2024, 1, 2))}") == 1


@pytest.mark.parametrize("name", ["x]; DROP TABLE y; --", "brack]et", "[pre", "semi;colon", "sp ace", "dot.ted"])
def test_hostile_identifiers_name_exactly_one_table(src, ms, name):
    if "]" in name and ms.babelfish:
        pytest.skip(babelfish_skip_reason("its parser rejects ']]' (an escaped ']') inside a [bracketed] name"))
    ms.sql(f"CREATE TABLE dbo.{MS.quote_ident(name)} (v int); INSERT INTO dbo.{MS.quote_ident(name)} VALUES (7)")
    try:
        table = f"dbo.{MS.quote_ident(name)}"
        assert src.scalar(MS.select(Relation(table=table), [MS.quote_ident("v")])) == 7
        if "." not in name:   # as written in rivet.toml: the whole text is one name
            assert src.scalar(MS.select(Relation(table=f"dbo.{name}"), [MS.quote_ident("v")])) == 7
        assert [c.name for c in src.describe(Relation(table=table))] == ["v"]
    finally:
        ms.sql(f"DROP TABLE dbo.{MS.quote_ident(name)}")


def test_introspection(src, big):
    assert src.server_version().startswith("SQL Server ")
    cols = src.describe(Relation(table="dbo.big"))
    # Babelfish stores datetime2(7) as datetime2(6) (microseconds) and says so
    at = "datetime2(6)" if big.babelfish else "datetime2(7)"
    assert [(c.name, c.native_type, c.nullable) for c in cols] == [
        ("id", "bigint", False), ("amount", "decimal(12,2)", True), ("note", "nvarchar(100)", True),
        ("at", at, True)]
    # a query is described by the server in the same words, without running it
    q = src.describe(Relation(query="SELECT id, amount, note, at FROM dbo.big WHERE id < 0"))
    assert [(c.name, c.native_type) for c in q] == [(c.name, c.native_type) for c in cols]
    assert [c.name for c in src.primary_key("dbo.big")] == ["id"]
    assert [c.name for c in src.primary_key("big")] == ["id"]   # the login's default schema
    if big.babelfish:   # sys.partitions.rows is PostgreSQL's estimate there: 0 until ANALYZE ran
        assert src.estimate_rows(Relation(table="dbo.big")) in range(0, 20001)
    else:
        assert src.estimate_rows(Relation(table="dbo.big")) == 20000
    assert src.estimate_rows(Relation(query="SELECT 1 AS x")) is None
    with pytest.raises(RivetError) as e:
        src.describe(Relation(table="dbo.bgi"))
    assert e.value.code == "RIVET_SOURCE_NO_SUCH_TABLE" and "dbo.big" in e.value.hint
    with pytest.raises(RivetError) as e:
        src.describe(Relation(query="SELECT id, id FROM dbo.big"))
    assert e.value.code == "RIVET_SOURCE_DUPLICATE_COLUMN"


def test_read_streams_in_bounded_batches(src, big):
    rel = Relation(table="dbo.big")
    mappings = map_columns("mssql", src.describe(rel), {}, MS)
    schema = output_schema(mappings)
    sql = MS.select(rel, [m.select_expr for m in mappings], [], ["[id]"])
    batches = list(src.read(sql, schema, 3000))
    assert [b.num_rows for b in batches] == [3000] * 6 + [2000]
    assert all(b.schema.equals(schema, check_metadata=True) for b in batches)
    t = pa.Table.from_batches(batches)
    assert t.column("id").to_pylist() == list(range(1, 20001))
    assert t.column("amount")[0].as_py() == Decimal("0.01")
    if big.babelfish:   # datetime2(7) is a datetime2(6) there: an exact timestamp[us], no text
        assert t.column("at")[1].as_py() == dt.datetime(2024, 1, 1, 0, 0, 2)
    else:
        assert t.column("at")[1].as_py() == "2024-01-01T00:00:02.0000000"
    assert src.scalar(MS.count(rel, [f"[id] BETWEEN {MS.literal(1)} AND {MS.literal(100)}"])) == 100
    assert src.scalar(MS.min_max(rel, "[id]")) == (1, 20000)


def test_statement_timeout(ms):
    with open_source(SourceConfig("mssql", ms.url), Tuning(statement_timeout_s=1, connect_timeout_s=10)) as s:
        slow = ("SELECT COUNT_BIG(*) AS n FROM sys.all_objects a CROSS JOIN sys.all_objects b "
                "CROSS JOIN sys.all_objects c")
        if ms.babelfish:
            # PostgreSQL keeps running a statement whose client went away until it writes a row, and a count writes
            # none: a three-way join would run for hours after the test. A plain two-way join took 0.1 s on an idle
            # machine (inside the timeout); a checksum over every pair, three times, takes several seconds and ends
            slow = ("SELECT COUNT_BIG(*) AS n FROM sys.all_objects a CROSS JOIN sys.all_objects b "
                    "CROSS JOIN (VALUES (1), (2), (3)) v(x) WHERE CHECKSUM(a.name, b.name, v.x) % 7 = 3")
        with pytest.raises(RivetError) as e:
            list(s.read(slow, pa.schema([("n", pa.int64())]), 10))
        assert e.value.code == "RIVET_SOURCE_TIMEOUT" and e.value.exit_class == ExitClass.TRANSIENT
        assert s.scalar("SELECT 1 AS one") == 1          # the adapter's own session still works


class RowLock:
    """Another session holding an uncommitted update of dbo.big row 1."""

    def __init__(self, ms):
        self.con = ms.connect()
        self.con.cursor().execute("BEGIN TRAN; UPDATE dbo.big SET note = N'locked' WHERE id = 1")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.con.cursor().execute("ROLLBACK")
        self.con.close()


def test_lock_wait_is_bounded(ms, big):
    with RowLock(ms), open_source(SourceConfig("mssql", ms.url), Tuning(statement_timeout_s=2,
                                                                        connect_timeout_s=10)) as s:
        if ms.babelfish:
            # PostgreSQL readers never wait for a writer's row lock: the committed version comes back at once
            # (and Babelfish reports snapshot isolation on for every database, so rivet's sessions use SNAPSHOT)
            assert s.scalar("SELECT note FROM dbo.big WHERE id = 1") == "n1"
            return
        with pytest.raises(RivetError) as e:
            s.scalar("SELECT note FROM dbo.big WHERE id = 1")
        assert e.value.exit_class == ExitClass.TRANSIENT    # LOCK_TIMEOUT (busy) or no answer in time


def test_snapshot_sessions_do_not_wait(ms, big):
    # before the lock: turning snapshot isolation on waits for open transactions. Babelfish has no ALTER DATABASE
    # and reports snapshot_isolation_state = 1 for every database
    if not ms.babelfish:
        ms.sql(f"ALTER DATABASE [{ms.name}] SET ALLOW_SNAPSHOT_ISOLATION ON", database="master")
    try:
        with RowLock(ms), open_source(SourceConfig("mssql", ms.url), Tuning(statement_timeout_s=2,
                                                                            connect_timeout_s=10)) as s:
            assert s.scalar("SELECT transaction_isolation_level AS l FROM sys.dm_exec_sessions "
                            "WHERE session_id = @@SPID") == 5                # SNAPSHOT
            assert s.scalar("SELECT note FROM dbo.big WHERE id = 1") == "n1"   # the committed version, at once
    finally:
        if not ms.babelfish:
            ms.sql(f"ALTER DATABASE [{ms.name}] SET ALLOW_SNAPSHOT_ISOLATION OFF", database="master")


def test_parallel_reads_use_their_own_connections(src, big):
    schema = pa.schema([("id", pa.int64())])
    totals = []

    def read(lo, hi):
        sql = MS.select(Relation(table="dbo.big"), ["[id]"], [f"[id] BETWEEN {lo} AND {hi}"])
        totals.append(sum(b.num_rows for b in src.read(sql, schema, 500)))
    threads = [threading.Thread(target=read, args=(k * 5000 + 1, (k + 1) * 5000)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(totals) == [5000] * 4


def test_encrypted_session(ms):
    cfg = SourceConfig("mssql", ms.url, tls={"encrypt": True, "trust_server_certificate": True})
    with open_source(cfg, Tuning(connect_timeout_s=10)) as s:
        assert s.scalar("SELECT encrypt_option AS e FROM sys.dm_exec_connections WHERE session_id = @@SPID") == "TRUE"


def test_wrong_password_is_auth_and_never_shown(ms):
    from urllib.parse import urlsplit, urlunsplit
    p = urlsplit(ms.url)
    wrong = urlunsplit(p._replace(netloc=f"{p.username}:Wrong-pw-123@{p.hostname}:{p.port or 1433}"))
    with pytest.raises(RivetError) as e:
        open_source(SourceConfig("mssql", wrong), Tuning(connect_timeout_s=10)).server_version()
    assert e.value.code == "RIVET_SOURCE_AUTH" and e.value.exit_class == ExitClass.USAGE
    assert "Wrong-pw-123" not in e.value.message + e.value.hint
