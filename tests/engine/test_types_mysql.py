"""MariaDB/MySQL type fidelity end to end: awkward values in a real table → map_columns → MySQLSource.read → Arrow,
compared with what the server itself returns for the same rows (the value, or its declared text form)."""
from __future__ import annotations

import datetime as dt
import io
import math
import struct
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.sources.base import Relation
from engine.sources.mysql import MySQLSource
from engine.types import NATIVE_TYPE_KEY, map_columns, output_schema

AWKWARD = [
    "DROP TABLE IF EXISTS awkward",
    """CREATE TABLE awkward (
      id int PRIMARY KEY, t1 tinyint(1), t1u tinyint(1) unsigned, i8 tinyint, si smallint unsigned, mi mediumint,
      iu int unsigned, bi bigint, bu bigint unsigned, d12 decimal(12,3), d38 decimal(38,10), d65 decimal(65,30),
      f float, db double, vc varchar(20), tx text, ch char(3), dt6 datetime(6), dt datetime, ts timestamp(6) NULL,
      d date, tm time(6), j json, e enum('a','b'), s set('x','y'), b1 bit(1), b8 bit(8), b64 bit(64), bl blob,
      vb varbinary(8), yr year) DEFAULT CHARSET utf8mb4""",
    "SET time_zone = '+05:30'",   # TIMESTAMP values are stored as UTC instants: insert them from a non-UTC session
    """INSERT INTO awkward VALUES
     (1, 2, 255, -128, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615, -123456789.123,
      9999999999999999999999999999.9999999999, '12345678901234567890123456789012345.123456789012345678901234567891',
      0.1, -1e300, 'a''b\\\\c ✓', '', 'ab', '2024-02-29 23:59:59.999999', '1000-01-01 00:00:00',
      '2024-03-10 12:34:56.123456', '1000-01-01', '-838:59:59.000000', '{"k": [1, 2]}', 'b', 'x,y', b'1',
      b'10000001', 18446744073709551615, x'00ff', x'', 2155),
     (2, -1, 0, 127, 0, 8388607, 0, 9223372036854775807, 0, 0, -0.0000000001, '-0.000000000000000000000000000001',
      -3.4e38, 2.2250738585072014e-308, '', NULL, '', '9999-12-31 23:59:59.999999', '2024-01-01 12:00:00',
      '1970-01-01 05:30:01.000001', '9999-12-31', '12:00:00.5', '[]', 'a', '', b'0', b'0', 0, x'', NULL, 1901),
     (3, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL),
     (4, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
]
ZERO_DATES = [
    "DROP TABLE IF EXISTS zero_dates",
    """CREATE TABLE zero_dates (id int PRIMARY KEY, dt datetime NULL, d date NULL, ts timestamp NULL,
      dtn datetime NOT NULL, ok datetime(6) NULL)""",
    "SET SESSION sql_mode = ''",   # what lets zero dates in: legacy applications run like this
    """INSERT INTO zero_dates VALUES
     (1, '2024-01-01 00:00:00', '2024-01-01', '2024-01-01 00:00:00', '2024-01-01 00:00:00', '2024-01-01 00:00:00.5'),
     (2, NULL, NULL, NULL, '2024-01-02 00:00:00', NULL),
     (3, '0000-00-00 00:00:00', '2024-00-10', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2024-01-03')""",
]

EXPECTED = {
    "id": ("exact", pa.int32()), "t1": ("exact", pa.int8()), "t1u": ("exact", pa.uint8()), "i8": ("exact", pa.int8()),
    "si": ("exact", pa.uint16()), "mi": ("exact", pa.int32()), "iu": ("exact", pa.uint32()),
    "bi": ("exact", pa.int64()), "bu": ("exact", pa.uint64()), "d12": ("exact", pa.decimal128(12, 3)),
    "d38": ("exact", pa.decimal128(38, 10)), "d65": ("text", pa.string()), "f": ("exact", pa.float32()),
    "db": ("exact", pa.float64()), "vc": ("exact", pa.string()), "tx": ("exact", pa.string()),
    "ch": ("exact", pa.string()), "dt6": ("exact", pa.timestamp("us")), "dt": ("exact", pa.timestamp("us")),
    "ts": ("exact", pa.timestamp("us", tz="UTC")), "d": ("exact", pa.date32()), "tm": ("text", pa.string()),
    "j": ("exact", pa.string()), "e": ("exact", pa.string()), "s": ("exact", pa.string()),
    "b1": ("exact", pa.bool_()), "b8": ("exact", pa.uint64()), "b64": ("exact", pa.uint64()),
    "bl": ("exact", pa.binary()), "vb": ("exact", pa.binary()), "yr": ("exact", pa.int16()),
}


def run(mysql, statements):
    con = mysql.connect()
    try:
        cur = con.cursor()
        for s in statements:
            cur.execute(s)
    finally:
        con.close()


@pytest.fixture(scope="module")
def src(mysql):
    run(mysql, AWKWARD)
    run(mysql, ZERO_DATES)
    s = MySQLSource(SourceConfig("mysql", mysql.url), Tuning(statement_timeout_s=30, connect_timeout_s=5))
    yield s
    s.close()


def read_all(src, table, overrides=None):
    cols = src.describe(Relation(table=table))
    mappings = map_columns("mysql", cols, overrides or {}, src.dialect)
    schema = output_schema(mappings)
    sql = src.dialect.select(Relation(table=table), [m.select_expr for m in mappings], [], ["`id`"])
    batches = list(src.read(sql, schema, 2))
    for b in batches:
        assert b.schema == schema and all(f.metadata == g.metadata for f, g in zip(b.schema, schema))
    return mappings, pa.Table.from_batches(batches, schema)


def truth(mysql, mappings, table):
    """The server's own answer through mysql-connector in a UTC session: temporal values as their text (the
    driver turns zero dates into None), everything else through the mapping's own select expression."""
    exprs = [f"CAST(`{m.name}` AS CHAR)" if pa.types.is_temporal(m.arrow_type) else m.select_expr for m in mappings]
    con = mysql.connect()
    try:
        cur = con.cursor()
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {', '.join(exprs)} FROM `{table}` ORDER BY id")
        return cur.fetchall()
    finally:
        con.close()


def as_server_text(v):
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def same(a, b, arrow_type) -> bool:
    if isinstance(b, (bytes, bytearray)) and arrow_type == pa.bool_():
        return a == bool(int.from_bytes(b, "big"))
    if isinstance(b, (bytes, bytearray)) and not pa.types.is_binary(arrow_type):
        b = b.decode()
    if isinstance(b, set):
        b = ",".join(sorted(b))
    if pa.types.is_timestamp(arrow_type) and isinstance(a, dt.datetime) and isinstance(b, str):
        return a.replace(tzinfo=None) == dt.datetime.fromisoformat(b)
    if pa.types.is_temporal(arrow_type):
        return as_server_text(a) == b
    if arrow_type == pa.float32() and a is not None and b is not None:
        return struct.pack("<f", a) == struct.pack("<f", b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_every_type_maps_and_reads_exactly(src, mysql):
    mappings, table = read_all(src, "awkward")
    assert {m.name: (m.fidelity, m.arrow_type) for m in mappings} == EXPECTED
    for m in mappings:
        assert table.schema.field(m.name).metadata[NATIVE_TYPE_KEY] == m.native_type.encode()
    want_rows = truth(mysql, mappings, "awkward")
    rows = table.to_pylist()
    assert len(rows) == len(want_rows) == 4
    for row, want in zip(rows, want_rows):
        for m, w in zip(mappings, want):
            assert same(row[m.name], w, m.arrow_type), (row["id"], m.name, row[m.name], w)


def test_awkward_values_spelled_out(src):
    _, table = read_all(src, "awkward")
    r1, r2, r3, r4 = table.to_pylist()
    assert [r["t1"] for r in (r1, r2, r3, r4)] == [2, -1, 1, 0]       # not True, True, True, False
    assert r1["bu"] == 2**64 - 1 and r1["iu"] == 2**32 - 1 and r1["b64"] == 2**64 - 1 and r1["b8"] == 0b10000001
    assert r1["bi"] == -(2**63) and r1["si"] == 65535
    assert r1["d65"] == "12345678901234567890123456789012345.123456789012345678901234567891"
    assert r2["d65"] == "-0.000000000000000000000000000001"
    assert r1["d38"] == Decimal("9999999999999999999999999999.9999999999")
    assert r1["ts"].isoformat() == "2024-03-10T07:04:56.123456+00:00"           # inserted at +05:30
    assert r2["ts"].isoformat() == "1970-01-01T00:00:01.000001+00:00"
    assert r1["dt6"].isoformat() == "2024-02-29T23:59:59.999999" and r1["d"] == dt.date(1000, 1, 1)
    assert r1["tm"] == "-838:59:59.000000" and r2["tm"] == "12:00:00.500000"
    assert r1["vc"] == "a'b\\c ✓" and r1["ch"] == "ab" and r1["bl"] == b"\x00\xff" and r1["vb"] == b""
    assert r1["j"] == '{"k": [1, 2]}' and r1["s"] == "x,y" and r2["s"] == "" and r1["e"] == "b"
    assert r1["b1"] is True and r2["b1"] is False and r1["yr"] == 2155
    assert all(v is None for k, v in r4.items() if k not in ("id", "t1"))


def test_output_survives_parquet_and_csv(src, tmp_path):
    _, table = read_all(src, "awkward")
    pq.write_table(table, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema == table.schema and back.to_pylist() == table.to_pylist()
    buf = io.BytesIO()
    pacsv.write_csv(table.drop_columns(["bl", "vb"]), buf)   # binary needs the CSV writer's own encoding
    assert b"18446744073709551615" in buf.getvalue()


def test_zero_dates_are_refused_naming_the_columns(src):
    with pytest.raises(RivetError) as e:
        read_all(src, "zero_dates")
    err = e.value
    assert err.code == "RIVET_SOURCE_UNREPRESENTABLE" and err.exit_class == ExitClass.REFUSED
    assert "dt, d, ts, dtn" in err.message and "zero date" in err.message
    assert '[exports.columns] dt = "text"' in err.hint


def test_zero_dates_exported_exactly_as_text_with_the_override(src):
    mappings, table = read_all(src, "zero_dates", {c: "text" for c in ("dt", "d", "ts", "dtn")})
    assert [m.fidelity for m in mappings] == ["exact", "text", "text", "text", "text", "exact"]
    rows = table.to_pylist()
    assert [r["dt"] for r in rows] == ["2024-01-01 00:00:00", None, "0000-00-00 00:00:00"]
    assert [r["d"] for r in rows] == ["2024-01-01", None, "2024-00-10"]
    assert [r["ts"] for r in rows] == ["2024-01-01 00:00:00", None, "0000-00-00 00:00:00"]
    assert [r["dtn"] for r in rows] == ["2024-01-01 00:00:00", "2024-01-02 00:00:00", "0000-00-00 00:00:00"]
    assert [r["ok"] for r in rows] == [dt.datetime(2024, 1, 1, 0, 0, 0, 500000), None, dt.datetime(2024, 1, 3)]


def test_only_rows_read_are_checked_for_zero_dates(src):
    cols = src.describe(Relation(table="zero_dates"))
    mappings = map_columns("mysql", cols, {}, src.dialect)
    sql = src.dialect.select(Relation(table="zero_dates"), [m.select_expr for m in mappings], ["`id` < 3"], ["`id`"])
    rows = pa.Table.from_batches(list(src.read(sql, output_schema(mappings), 10))).to_pylist()
    assert [r["id"] for r in rows] == [1, 2] and rows[1]["dt"] is None and rows[1]["dtn"] == dt.datetime(2024, 1, 2)


def test_query_relation_keeps_declared_types(src):
    rel = Relation(query="SELECT id, t1, bu, d65, tm, dt6, 1.5 AS lit FROM awkward")
    cols = src.describe(rel)
    assert [(c.name, c.native_type) for c in cols] == [
        ("id", "int(11)"), ("t1", "tinyint(1)"), ("bu", "bigint(20) unsigned"), ("d65", "decimal(65,30)"),
        ("tm", "time(6)"), ("dt6", "datetime(6)"), ("lit", "decimal(2,1)")]
    mappings = map_columns("mysql", cols, {}, src.dialect)
    sql = src.dialect.select(rel, [m.select_expr for m in mappings], [], ["`id`"])
    rows = pa.Table.from_batches(list(src.read(sql, output_schema(mappings), 100))).to_pylist()
    assert rows[0]["t1"] == 2 and rows[0]["bu"] == 2**64 - 1 and rows[0]["lit"] == Decimal("1.5")
    assert rows[1]["d65"] == "-0.000000000000000000000000000001"


def test_unknown_type_is_refused_with_the_override_named(src, mysql):
    mysql.sql("DROP TABLE IF EXISTS geo")
    mysql.sql("CREATE TABLE geo (id int, g point)")
    mappings = map_columns("mysql", src.describe(Relation(table="geo")), {}, src.dialect)
    g = mappings[1]
    assert g.fidelity == "refused" and '[exports.columns] g = "text"' in g.note
    assert [f.name for f in output_schema(mappings)] == ["id"]
