"""PostgreSQL type fidelity end to end: awkward values in a real table → map_columns → PostgresSource.read → Arrow,
compared with what PostgreSQL itself returns for the same rows (the value, or its declared text form)."""
from __future__ import annotations

import io
import math
import struct

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.sources.base import Relation
from engine.sources.postgres import PostgresSource
from engine.types import NATIVE_TYPE_KEY, map_columns, output_schema

DDL = """
DROP TABLE IF EXISTS awkward; DROP TYPE IF EXISTS mood;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE awkward (
  id int PRIMARY KEY, i2 int2, i4 int4, i8 int8,
  n12 numeric(12,2), n38 numeric(38,10), n50 numeric(50,5), nfree numeric,
  r real, d double precision, t text, vc varchar(10), ch char(4), b bool,
  dt date, tm time, ts timestamp, tstz timestamptz, iv interval,
  j json, jb jsonb, u uuid, by bytea, ia int[], ta text[], ia2 int[], m mood, ttz timetz);
INSERT INTO awkward VALUES
 (1, -32768, 2147483647, -9223372036854775808,
  9999999999.99, 9999999999999999999999999999.9999999999, 12345678901234567890123456789012345678901234.12345, 'NaN',
  '-Infinity', 'NaN', E'quote '' dq " bs \\\\ nl \\n ✓', '', 'ab', true,
  '1970-01-01', '23:59:59.999999', '2024-02-29 23:59:59.999999', '2024-03-10 12:34:56.123456+05:30',
  '-1 year -2 months +3 days -04:05:06.5',
  '{"b": 1,  "a": [1, 2]}', '{"b": 1, "a": [1,2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff00',
  '{1,NULL,3}', '{"a,b","c\\"d",NULL,"NULL",""}', '{{1,2},{3,4}}', 'happy', '12:34:56+03'),
 (2, 0, -1, 1, -0.01, -0.0000000001, -1, 123456789012345678901234567890.123456789012345678901234567890,
  3.4028235e38, -1.7976931348623157e308, '', 'tenchars!!', 'abcd', false,
  '9999-12-31', '00:00:00', '1900-01-01 00:00:00.000001', '1999-12-31 23:59:59.999999-08', '0',
  '[]', '[]', '00000000-0000-0000-0000-000000000000', '\\x', '{}', '{}', '{}', 'sad', '00:00:00-12:30'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, 'P1Y2M3DT4H5M6.000001S', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""

EXPECTED = {  # column → (fidelity, arrow type)
    "id": ("exact", pa.int32()), "i2": ("exact", pa.int16()), "i4": ("exact", pa.int32()), "i8": ("exact", pa.int64()),
    "n12": ("exact", pa.decimal128(12, 2)), "n38": ("exact", pa.decimal128(38, 10)),
    "n50": ("text", pa.string()), "nfree": ("text", pa.string()),
    "r": ("exact", pa.float32()), "d": ("exact", pa.float64()), "t": ("exact", pa.string()),
    "vc": ("exact", pa.string()), "ch": ("exact", pa.string()), "b": ("exact", pa.bool_()),
    "dt": ("exact", pa.date32()), "tm": ("exact", pa.time64("us")), "ts": ("exact", pa.timestamp("us")),
    "tstz": ("exact", pa.timestamp("us", tz="UTC")), "iv": ("text", pa.string()),
    "j": ("exact", pa.string()), "jb": ("exact", pa.string()), "u": ("exact", pa.string()),
    "by": ("exact", pa.binary()), "ia": ("text", pa.string()), "ta": ("text", pa.string()),
    "ia2": ("text", pa.string()), "m": ("text", pa.string()), "ttz": ("text", pa.string()),
}
# exact strings whose psycopg form differs: json is parsed, uuid is a UUID, char(n) keeps its pad blanks (which
# PostgreSQL ignores in every comparison and drops in char → text, as DuckDB does)
AS_TEXT_IN_TRUTH = {"j", "jb", "u", "ch"}


@pytest.fixture(scope="module")
def src(pg):
    pg.sql(DDL)
    s = PostgresSource(SourceConfig("postgres", pg.url), Tuning(statement_timeout_s=30, connect_timeout_s=5))
    yield s
    s.close()


def read_all(src, table, overrides=None, order="id"):
    cols = src.describe(Relation(table=table))
    mappings = map_columns("postgres", cols, overrides or {}, src.dialect)
    schema = output_schema([m for m in mappings if m.fidelity != "refused"])
    sql = src.dialect.select(Relation(table=table), [m.select_expr for m in mappings], [],
                             [src.dialect.quote_ident(order)])
    batches = list(src.read(sql, schema, 2))
    for b in batches:
        assert b.schema == schema and b.schema.metadata == schema.metadata
        assert all(f.metadata == g.metadata for f, g in zip(b.schema, schema))
    return mappings, pa.Table.from_batches(batches, schema)


def same(a, b, float32: bool = False) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        if float32:   # psycopg parses real from its shortest text form: compare as the float32 it denotes
            return struct.pack("<f", a) == struct.pack("<f", b)
    return a == b


def same_rows(t1: pa.Table, t2: pa.Table) -> bool:
    return t1.schema == t2.schema and all(
        same(a, b) for r1, r2 in zip(t1.to_pylist(), t2.to_pylist()) for a, b in zip(r1.values(), r2.values()))


def test_every_type_maps_and_reads_exactly(src, pg):
    mappings, table = read_all(src, "awkward")
    got = {m.name: (m.fidelity, m.arrow_type) for m in mappings}
    assert got == EXPECTED
    for m in mappings:
        assert table.schema.field(m.name).metadata[NATIVE_TYPE_KEY] == m.native_type.encode()
        if m.fidelity != "exact":
            assert m.note
    # ground truth from PostgreSQL itself: the value, or the server's text form for text mappings
    exprs = [f'"{m.name}"::text' if m.fidelity == "text" or m.name in AS_TEXT_IN_TRUTH else f'"{m.name}"'
             for m in mappings]
    with psycopg.connect(pg.url) as con:
        con.execute("SET IntervalStyle = 'iso_8601'")
        truth = con.execute(f"SELECT {', '.join(exprs)} FROM awkward ORDER BY id").fetchall()
    rows = table.to_pylist()
    assert len(rows) == len(truth) == 4
    for row, want in zip(rows, truth):
        for m, w in zip(mappings, want):
            assert same(row[m.name], w, m.arrow_type == pa.float32()), (row["id"], m.name, row[m.name], w)


def test_awkward_values_spelled_out(src):
    _, table = read_all(src, "awkward")
    r1, r2, r3, r4 = table.to_pylist()
    assert r1["nfree"] == "NaN" and r3["nfree"] == "-Infinity"
    assert r2["nfree"] == "123456789012345678901234567890.123456789012345678901234567890"
    assert r1["n50"] == "12345678901234567890123456789012345678901234.12345"
    assert str(r1["n38"]) == "9999999999999999999999999999.9999999999"
    assert r1["iv"] == "P-1Y-2M3DT-4H-5M-6.5S" and r2["iv"] == "PT0S" and r3["iv"] == "P1Y2M3DT4H5M6.000001S"
    assert r1["tstz"].isoformat() == "2024-03-10T07:04:56.123456+00:00"
    assert r2["tstz"].isoformat() == "2000-01-01T07:59:59.999999+00:00"
    assert r1["ts"].isoformat() == "2024-02-29T23:59:59.999999"
    assert r1["ia"] == "{1,NULL,3}" and r1["ta"] == '{"a,b","c\\"d",NULL,"NULL",""}' and r1["ia2"] == "{{1,2},{3,4}}"
    assert r1["jb"] == '{"a": [1, 2], "b": 1}' and r1["j"] == '{"b": 1,  "a": [1, 2]}'
    assert r1["ch"] == "ab" and r1["by"] == b"\x00\xff\x00" and r2["by"] == b""
    assert math.isnan(r1["d"]) and r1["r"] == float("-inf")
    assert r1["ttz"] == "12:34:56+03" and r1["m"] == "happy"
    assert all(v is None for k, v in r4.items() if k != "id")


def test_text_forms_survive_parquet_and_csv(src, tmp_path):
    _, table = read_all(src, "awkward")
    pq.write_table(table, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    assert same_rows(back, table) and back.num_rows == 4
    assert back.schema.field("iv").metadata[NATIVE_TYPE_KEY] == b"interval"
    buf = io.BytesIO()
    # every text-form mapping is CSV-writable (no lists, no intervals); binary needs the CSV writer's own encoding
    pacsv.write_csv(table.drop_columns(["by"]), buf)
    assert b"{{1,2},{3,4}}" in buf.getvalue() and b"P-1Y-2M3DT-4H-5M-6.5S" in buf.getvalue()


def test_nan_in_bounded_numeric_is_refused_then_exported_as_text(src, pg):
    pg.sql("DROP TABLE IF EXISTS nan_money; CREATE TABLE nan_money (id int, amount numeric(12,2));"
           "INSERT INTO nan_money VALUES (1, 10.5), (2, 'NaN'), (3, NULL)")
    with pytest.raises(RivetError) as e:
        read_all(src, "nan_money")
    assert e.value.code == "RIVET_SOURCE_UNREPRESENTABLE" and e.value.exit_class == ExitClass.REFUSED
    assert "amount" in e.value.message and "NaN" in e.value.message
    assert '[exports.columns] amount = "text"' in e.value.hint
    m, table = read_all(src, "nan_money", {"amount": "text"})
    assert [x.fidelity for x in m] == ["exact", "text"]
    assert table.column("amount").to_pylist() == ["10.50", "NaN", None]


def test_infinite_timestamps_are_refused_not_written_as_sentinels(src, pg):
    pg.sql("DROP TABLE IF EXISTS inf_ts; CREATE TABLE inf_ts (id int, at timestamp, d date);"
           "INSERT INTO inf_ts VALUES (1, '2024-01-01', '2024-01-01'), (2, 'infinity', '-infinity')")
    with pytest.raises(RivetError) as e:
        read_all(src, "inf_ts")
    assert e.value.code == "RIVET_SOURCE_UNREPRESENTABLE" and "infinity" in e.value.message
    _, table = read_all(src, "inf_ts", {"at": "text", "d": "text"})
    assert table.column("at").to_pylist() == ["2024-01-01 00:00:00", "infinity"]
    assert table.column("d").to_pylist() == ["2024-01-01", "-infinity"]


def test_overrides_text_and_skip(src):
    m, table = read_all(src, "awkward", {"n12": "text", "by": "skip", "tstz": "text"})
    names = [x.name for x in m]
    assert "by" not in names and "by" not in table.column_names
    assert table.column("n12").to_pylist()[:2] == ["9999999999.99", "-0.01"]
    assert table.column("tstz").to_pylist()[0] == "2024-03-10 07:04:56.123456+00"   # sessions run in UTC
    with pytest.raises(RivetError) as e:
        map_columns("postgres", src.describe(Relation(table="awkward")), {"nope": "text"}, src.dialect)
    assert e.value.code == "RIVET_CONFIG_UNKNOWN_COLUMN"
    with pytest.raises(RivetError) as e:
        map_columns("postgres", src.describe(Relation(table="awkward")), {"id": "bool"}, src.dialect)
    assert e.value.code == "RIVET_CONFIG_BAD_OVERRIDE"


def test_query_relation_maps_like_the_table(src):
    rel = Relation(query="SELECT id, nfree, iv, n12 * 1 AS n12x, n12, ia FROM awkward WHERE id <= 2")
    cols = src.describe(rel)
    assert [(c.name, c.native_type) for c in cols] == [
        ("id", "integer"), ("nfree", "numeric"), ("iv", "interval"), ("n12x", "numeric"),
        ("n12", "numeric(12,2)"), ("ia", "integer[]")]
    mappings = map_columns("postgres", cols, {}, src.dialect)
    assert [m.fidelity for m in mappings] == ["exact", "text", "text", "text", "exact", "text"]
    schema = output_schema(mappings)
    sql = src.dialect.select(rel, [m.select_expr for m in mappings], [], ['"id"'])
    rows = pa.Table.from_batches(list(src.read(sql, schema, 100)), schema).to_pylist()
    assert rows[0]["nfree"] == "NaN" and rows[0]["n12x"] == "9999999999.99" and rows[1]["iv"] == "PT0S"


def test_scan_table_path_gives_the_same_values(src):
    # the planner's fast path (DuckDB's own parallel scan) is only used for plain columns; it must agree with
    # the query path value for value, types and metadata included
    cols = src.describe(Relation(table="awkward"))
    plain = [m for m in map_columns("postgres", cols, {}, src.dialect) if m.select_expr == src.dialect.quote_ident(m.name)]
    assert {m.name for m in plain} >= {"i8", "tstz", "u", "jb", "by", "dt", "tm", "ch"}
    schema = output_schema(plain)
    via_query = src.dialect.select(Relation(table="awkward"), [m.select_expr for m in plain])
    a = pa.Table.from_batches(list(src.read(via_query, schema, 100)), schema).sort_by("id")
    b = pa.Table.from_batches(list(src.read(via_query, schema, 100, scan_table="awkward")), schema).sort_by("id")
    assert b.schema == schema and same_rows(a, b)
