"""MySQLSource.read on the C driver (raw rows → Arrow, parsed with pyarrow.compute) against the real MariaDB:
every MySQL type round-trips to the planned Arrow type, the same values as the DuckDB scanner path and as the server
spells them; zero and invalid dates are refused naming the columns; NULL stays NULL; 200k rows arrive exactly once in
exact batches; a read sees one snapshot; an early close frees the connection at once."""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.sources import mysql as mysql_source
from engine.sources.base import Relation
from engine.sources.mysql import MySQLSource
from engine.types import map_columns, output_schema

N = 200_000
TYPES = """CREATE TABLE fp_types (
  id int PRIMARY KEY, t1 tinyint(1), tu tinyint unsigned, si smallint, su smallint unsigned, mi mediumint,
  mu mediumint unsigned, i int, iu int unsigned, bi bigint, bu bigint unsigned, d0 decimal(38,0), d12 decimal(12,3),
  d38 decimal(38,10), d65 decimal(65,30), f float, db double, dt0 datetime, dt3 datetime(3), dt6 datetime(6),
  ts0 timestamp NULL, ts6 timestamp(6) NULL, d date, tm time(6), yr year, b1 bit(1), b8 bit(8), b64 bit(64),
  vc varchar(50), ch char(5), tx text, lt longtext, j json, e enum('a','b c'), s set('x','y'), bl blob,
  vb varbinary(16), bn binary(4)) DEFAULT CHARSET utf8mb4"""
ROWS = """INSERT INTO fp_types VALUES
 (1, 2, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
  99999999999999999999999999999999999999, 999999999.999, 9999999999999999999999999999.9999999999,
  '99999999999999999999999999999999999.999999999999999999999999999999', 3.40282e38, 1.7976931348623157e308,
  '9999-12-31 23:59:59', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999', '2038-01-19 08:44:07',
  '2038-01-19 08:44:07.999999', '9999-12-31', '838:59:59.000000', 2155, b'1', b'11111111', 18446744073709551615,
  'a''b\\\\c ✓ 🦆', 'ab  ', 'line1\\nline2\\ttab', REPEAT('x', 100000), '{"k": [1, 2.5, null]}', 'b c', 'x,y',
  x'00ff00', x'c328', x'00000000'),
 (2, -1, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  -99999999999999999999999999999999999999, -999999999.999, -0.0000000001, '-0.000000000000000000000000000001',
  -1.17549e-38, -2.2250738585072014e-308, '1000-01-01 00:00:00', '1000-01-01 00:00:00.001',
  '1000-01-01 00:00:00.000001', '1970-01-01 05:30:01', '1970-01-01 05:30:01.000001', '1000-01-01',
  '-838:59:59.000000', 1901, b'0', b'0', 0, '', '', '', '', '[]', 'a', '', x'', x'', x'ffffffff'),
 (3, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0.5, 1, 1, 0.1, 0.1, '2024-02-29 12:34:56', '2024-02-29 12:34:56.5',
  '2024-02-29 12:34:56.123456', '2024-03-10 12:34:56', '2024-03-10 12:34:56.654321', '2024-02-29', '00:00:00.000001',
  2024, b'1', b'10000001', 9223372036854775808, 'plain', 'c', 'NULL', 'null', '"s"', 'a', 'y', x'41', x'42', x'43440000'),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""
FAST = Tuning(statement_timeout_s=30, connect_timeout_s=5)
CEXT = mysql_source.HAVE_CEXT   # engine/__init__ loads the C extension before pyarrow/duckdb (and ssl first)


def test_the_c_driver_is_loaded():
    assert CEXT, "mysql-connector's C extension did not load: MySQL reads would fall back to the slow paths"


@pytest.fixture(scope="module")
def src(mysql):
    con = mysql.connect()
    try:
        cur = con.cursor()
        for stmt in ["DROP TABLE IF EXISTS fp_types", TYPES,
                     "SET time_zone = '+05:30'",   # TIMESTAMPs are UTC instants: insert them from elsewhere
                     ROWS,
                     "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'",   # legacy modes that let odd dates in
                     "DROP TABLE IF EXISTS fp_dates",
                     "CREATE TABLE fp_dates (id int PRIMARY KEY, dt datetime NULL, d date NULL, ts timestamp NULL)",
                     ("INSERT INTO fp_dates SELECT seq, '2024-01-01 10:00:00' + INTERVAL seq MINUTE, "
                      "'2024-01-01' + INTERVAL seq DAY, NULL FROM seq_1_to_50"),
                     "DROP TABLE IF EXISTS fp_big",
                     "CREATE TABLE fp_big (id bigint PRIMARY KEY, note varchar(20), amount decimal(12,2)) ENGINE=InnoDB",
                     f"INSERT INTO fp_big SELECT seq, CONCAT('n', seq), seq / 100 FROM seq_1_to_{N}"]:
            cur.execute(stmt)
    finally:
        con.close()
    s = MySQLSource(SourceConfig("mysql", mysql.url), FAST)
    yield s
    s.close()


def planned(src, table: str, overrides=None, where=()):
    rel = Relation(table=table)
    mappings = map_columns("mysql", src.describe(rel), overrides or {}, src.dialect)
    sql = src.dialect.select(rel, [m.select_expr for m in mappings], list(where), ["`id`"])
    return sql, output_schema(mappings)


def read(src, table: str, batch_rows: int = 3, overrides=None, where=()) -> pa.Table:
    sql, schema = planned(src, table, overrides, where)
    batches = list(src.read(sql, schema, batch_rows))
    assert all(b.schema == schema and b.schema.metadata == schema.metadata for b in batches)
    return pa.Table.from_batches(batches, schema)


def test_every_type_round_trips_like_the_duckdb_path(src):
    """Same planned schema, same values, column for column, as DuckDB's scanner (an independent reader). d0 is left
    out: the scanner cannot read a 38-digit DECIMAL(38,0) at all ("Could not convert string ... to DECIMAL(37,0)")."""
    sql, schema = planned(src, "fp_types", {"d0": "skip"})
    fast = pa.Table.from_batches(list(src.read(sql, schema, 3)), schema)
    slow = pa.Table.from_batches(list(src._read_duckdb(sql, schema, 3)), schema)
    assert fast.num_rows == 4
    for name in schema.names:
        assert fast.column(name).to_pylist() == slow.column(name).to_pylist(), name


def test_every_type_spelled_out(src):
    r1, r2, r3, r4 = read(src, "fp_types").to_pylist()
    assert [r["t1"] for r in (r1, r2, r3)] == [2, -1, 1]               # TINYINT(1) is an int8: 2 and -1 stay
    assert (r1["tu"], r1["su"], r1["mu"], r1["iu"], r1["bu"]) == (255, 65535, 16777215, 2**32 - 1, 2**64 - 1)
    assert (r2["si"], r2["mi"], r2["i"], r2["bi"]) == (-32768, -8388608, -(2**31), -(2**63))
    assert r1["d0"] == Decimal("9" * 38) and r2["d0"] == Decimal("-" + "9" * 38)
    assert r1["d12"] == Decimal("999999999.999") and r3["d12"] == Decimal("0.500")
    assert r2["d38"] == Decimal("-0.0000000001") and r2["d65"] == "-0.000000000000000000000000000001"
    assert r1["db"] == 1.7976931348623157e308 and r2["db"] == -2.2250738585072014e-308 and r3["db"] == 0.1
    assert r3["f"] == pa.scalar(0.1, pa.float32()).as_py()
    assert r1["dt3"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999000)
    assert r2["dt6"] == dt.datetime(1000, 1, 1, 0, 0, 0, 1) and r3["dt3"] == dt.datetime(2024, 2, 29, 12, 34, 56, 500000)
    assert r1["ts0"].isoformat() == "2038-01-19T03:14:07+00:00"                    # inserted at +05:30
    assert r2["ts6"].isoformat() == "1970-01-01T00:00:01.000001+00:00"
    assert r3["ts6"].isoformat() == "2024-03-10T07:04:56.654321+00:00"
    assert r1["d"] == dt.date(9999, 12, 31) and r2["d"] == dt.date(1000, 1, 1)
    assert (r1["tm"], r2["tm"], r3["tm"]) == ("838:59:59.000000", "-838:59:59.000000", "00:00:00.000001")
    assert (r1["yr"], r2["yr"]) == (2155, 1901)
    assert (r1["b1"], r2["b1"]) == (True, False) and (r1["b8"], r3["b8"]) == (255, 129) and r3["b64"] == 2**63
    assert r1["vc"] == "a'b\\c ✓ 🦆" and r1["ch"] == "ab" and r1["tx"] == "line1\nline2\ttab"
    assert r1["lt"] == "x" * 100_000 and r1["j"] == '{"k": [1, 2.5, null]}' and r1["e"] == "b c" and r1["s"] == "x,y"
    assert r1["bl"] == b"\x00\xff\x00" and r1["vb"] == b"\xc3\x28" and r1["bn"] == b"\x00" * 4   # not UTF-8: bytes
    # empty is not NULL, and 'NULL' / 'null' are text
    assert (r2["vc"], r2["ch"], r2["tx"], r2["bl"], r2["s"]) == ("", "", "", b"", "")
    assert (r3["tx"], r3["lt"]) == ("NULL", "null")
    assert all(v is None for k, v in r4.items() if k != "id")


def test_types_and_nulls_match_the_planned_schema(src):
    sql, schema = planned(src, "fp_types")
    (batch,) = list(src.read(sql, schema, 10))
    for name in schema.names:
        assert batch.column(name).type == schema.field(name).type
        assert batch.column(name).null_count == (0 if name == "id" else 1), name


def test_zero_dates_are_refused_naming_the_columns_in_a_later_batch(src, mysql):
    con = mysql.connect()
    try:
        cur = con.cursor()
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("UPDATE fp_dates SET dt = '0000-00-00 00:00:00', ts = '0000-00-00 00:00:00' WHERE id = 40")
        cur.execute("UPDATE fp_dates SET d = '2024-00-10' WHERE id = 45")
    finally:
        con.close()
    sql, schema = planned(src, "fp_dates")
    got = []
    with pytest.raises(RivetError) as e:
        for b in src.read(sql, schema, 16):
            got.append(b.num_rows)
    assert got == [16, 16]   # the rows before the batch that holds them were delivered
    err = e.value
    assert err.code == "RIVET_SOURCE_UNREPRESENTABLE" and err.exit_class == ExitClass.REFUSED
    assert "column dt, d, ts hold a zero date" in err.message and '[exports.columns] dt = "text"' in err.hint
    # only the rows read are checked
    assert read(src, "fp_dates", 16, where=["`id` < 40"]).num_rows == 39
    # and "text" delivers the server's exact text
    rows = read(src, "fp_dates", 16, {"dt": "text", "d": "text", "ts": "text"}).to_pylist()
    assert rows[39]["dt"] == "0000-00-00 00:00:00" and rows[39]["ts"] == "0000-00-00 00:00:00"
    assert rows[44]["d"] == "2024-00-10" and rows[0]["d"] == "2024-01-02" and rows[0]["ts"] is None


def test_an_invalid_date_is_refused_naming_the_column(src, mysql):
    con = mysql.connect()
    try:
        cur = con.cursor()
        cur.execute("CREATE TABLE fp_invalid (id int PRIMARY KEY, d date)")
        cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        cur.execute("INSERT INTO fp_invalid VALUES (1, '2024-02-28'), (2, '2024-02-30')")
    finally:
        con.close()
    with pytest.raises(RivetError) as e:
        read(src, "fp_invalid")
    assert e.value.code == "RIVET_SOURCE_UNREPRESENTABLE" and "column d" in e.value.message
    assert "2024-02-30" in e.value.message and '[exports.columns] d = "text"' in e.value.hint
    assert read(src, "fp_invalid", overrides={"d": "text"}).column("d").to_pylist() == ["2024-02-28", "2024-02-30"]


def test_200k_rows_exactly_once_in_exact_batches(src):
    sql, schema = planned(src, "fp_big")
    sizes, ids, total = [], [], Decimal(0)
    for b in src.read(sql, schema, 30_001):   # not a multiple of the driver slice: batches span slices
        sizes.append(b.num_rows)
        ids.append(b.column("id"))
        total += pc.sum(b.column("amount")).as_py()
    assert sizes == [30_001] * 6 + [N - 6 * 30_001]
    ids = pa.chunked_array(ids)
    assert pc.count_distinct(ids).as_py() == N and pc.min(ids).as_py() == 1 and pc.max(ids).as_py() == N
    assert ids.to_pylist() == list(range(1, N + 1))   # the planned ORDER BY is kept
    assert total == Decimal(N * (N + 1) // 2) / 100


def test_a_read_sees_one_snapshot(src, mysql):
    sql, schema = planned(src, "fp_big")
    gen = src.read(sql, schema, 1_000)
    first = next(gen)
    # while the read runs, other sessions delete, add and change rows it has not sent yet
    mysql.sql(f"DELETE FROM fp_big WHERE id > {N - 50_000}")
    mysql.sql(f"INSERT INTO fp_big SELECT seq, 'late', 0 FROM seq_{N + 1}_to_{N + 100}")
    mysql.sql("UPDATE fp_big SET note = 'changed' WHERE id BETWEEN 100000 AND 100010")
    rest = pa.Table.from_batches([first, *gen])
    try:
        assert rest.num_rows == N and rest.column("id").to_pylist() == list(range(1, N + 1))
        assert "changed" not in rest.column("note").to_pylist() and "late" not in rest.column("note").to_pylist()
    finally:
        mysql.sql(f"DELETE FROM fp_big WHERE id > {N}")
        mysql.sql(f"INSERT INTO fp_big SELECT seq, CONCAT('n', seq), seq / 100 FROM seq_{N - 50_000 + 1}_to_{N}")
        mysql.sql("UPDATE fp_big SET note = CONCAT('n', id) WHERE id BETWEEN 100000 AND 100010")


def test_early_close_frees_the_connection_at_once(src, mysql):
    # a result far too big to drain: closing must drop the socket, not read the rest
    marker = "seq_1_to_500000000"
    gen = src.read(f"SELECT seq AS g FROM {marker}", pa.schema([("g", pa.int64())]), 10_000)
    assert next(gen).num_rows == 10_000
    t0 = time.monotonic()
    gen.close()
    assert time.monotonic() - t0 < 1
    deadline, left = time.monotonic() + 5, None
    while time.monotonic() < deadline:
        left = mysql.sql(f"SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' "
                         "AND ID <> CONNECTION_ID()")[0][0]
        if left == 0:
            break
        time.sleep(0.1)
    assert left == 0
    assert read(src, "fp_big", 100_000, where=["`id` <= 10"]).num_rows == 10   # and the source reads on


def test_values_parse_through_the_declared_type_when_needed(src):
    # what conform's safe cast did on the DuckDB path: a DECIMAL or DOUBLE with an integral value into an integer
    sql = ("SELECT CAST(3 AS DECIMAL(5,3)) AS a, 1e3 AS b, CAST('2024-01-02 00:00:00' AS DATETIME) AS c, "
           "CAST(5 AS UNSIGNED) AS d")
    schema = pa.schema([("a", pa.int64()), ("b", pa.int32()), ("c", pa.date32()), ("d", pa.bool_())])
    (b,) = list(src.read(sql, schema, 10))
    assert b.to_pylist() == [{"a": 3, "b": 1000, "c": dt.date(2024, 1, 2), "d": True}]


def test_a_type_that_no_longer_fits_is_drift_naming_the_column(src):
    with pytest.raises(RivetError) as e:
        list(src.read("SELECT id, note FROM fp_big WHERE id <= 3", pa.schema([("id", pa.int64()),
                                                                           ("note", pa.int32())]), 10))
    assert e.value.code == "RIVET_SOURCE_SCHEMA_CHANGED" and e.value.exit_class == ExitClass.DRIFT
    assert "column note" in e.value.message
    with pytest.raises(RivetError) as e:   # overflow is never wrapped or clipped
        list(src.read("SELECT 300 AS x", pa.schema([("x", pa.int8())]), 10))
    assert e.value.code == "RIVET_SOURCE_SCHEMA_CHANGED"
    with pytest.raises(RivetError) as e:
        list(src.read("SELECT id FROM fp_big WHERE id <= 3", pa.schema([("id", pa.int64()), ("x", pa.int64())]), 10))
    assert e.value.code == "RIVET_SOURCE_SCHEMA_CHANGED" and "the plan expects 2" in e.value.message


def test_empty_result_yields_nothing(src):
    assert list(src.read("SELECT id FROM fp_big WHERE id < 0", pa.schema([("id", pa.int64())]), 10)) == []
