"""SQL Server type mapping from type descriptors (as sys.columns / sp_describe_first_result_set name them): Arrow
type, fidelity and the server-side select expression for every type, plus the `[exports.columns]` overrides."""
from __future__ import annotations

import pyarrow as pa
import pytest

from engine.errors import RivetError
from engine.planner import check_mappings
from engine.config import DestinationConfig, ExportConfig
from engine.sources.base import SourceColumn
from engine.sources.mssql import native_type
from engine.sql import MssqlDialect
from engine.types import NATIVE_TYPE_KEY, map_columns, output_schema

MS = MssqlDialect()


def one(native: str, name: str = "c", override: str | None = None):
    [m] = map_columns("mssql", [SourceColumn(name, native)], {name: override} if override else {}, MS)
    return m


@pytest.mark.parametrize("native, arrow, fidelity, expr", [
    ("bit", pa.bool_(), "exact", "[c]"),
    ("tinyint", pa.uint8(), "exact", "[c]"),                  # 0..255 in SQL Server
    ("smallint", pa.int16(), "exact", "[c]"),
    ("int", pa.int32(), "exact", "[c]"),
    ("bigint", pa.int64(), "exact", "[c]"),
    ("decimal(38,10)", pa.decimal128(38, 10), "exact", "[c]"),
    ("decimal(38,0)", pa.decimal128(38, 0), "exact", "[c]"),
    ("numeric(5,2)", pa.decimal128(5, 2), "exact", "[c]"),
    ("decimal", pa.decimal128(18, 0), "exact", "[c]"),         # T-SQL's default precision
    ("money", pa.decimal128(19, 4), "exact", "CAST([c] AS decimal(19,4)) AS [c]"),
    ("smallmoney", pa.decimal128(10, 4), "exact", "CAST([c] AS decimal(10,4)) AS [c]"),
    ("float", pa.float64(), "exact", "[c]"),
    ("float(53)", pa.float64(), "exact", "[c]"),
    ("float(24)", pa.float32(), "exact", "[c]"),
    ("real", pa.float32(), "exact", "[c]"),
    ("char(10)", pa.string(), "exact", "[c]"),
    ("varchar(255)", pa.string(), "exact", "[c]"),
    ("varchar(max)", pa.string(), "exact", "[c]"),
    ("nchar(5)", pa.string(), "exact", "[c]"),
    ("nvarchar(max)", pa.string(), "exact", "[c]"),
    ("text", pa.string(), "exact", "[c]"),
    ("ntext", pa.string(), "exact", "[c]"),
    ("sysname", pa.string(), "exact", "[c]"),
    ("date", pa.date32(), "exact", "[c]"),
    ("time(7)", pa.time64("ns"), "exact", "DATEDIFF_BIG(nanosecond, CAST('00:00:00' AS time(7)), [c]) AS [c]"),
    ("time", pa.time64("ns"), "exact", "DATEDIFF_BIG(nanosecond, CAST('00:00:00' AS time(7)), [c]) AS [c]"),
    ("time(6)", pa.time64("us"), "exact", "[c]"),
    ("time(0)", pa.time64("us"), "exact", "[c]"),
    ("datetime", pa.timestamp("us"), "exact", "[c]"),
    ("smalldatetime", pa.timestamp("us"), "exact", "[c]"),
    ("datetime2(7)", pa.string(), "text", "STUFF(CONVERT(varchar(27), [c], 121), 11, 1, 'T') AS [c]"),
    ("datetime2", pa.string(), "text", "STUFF(CONVERT(varchar(27), [c], 121), 11, 1, 'T') AS [c]"),
    ("datetime2(6)", pa.timestamp("us"), "exact", "[c]"),
    ("datetime2(0)", pa.timestamp("us"), "exact", "[c]"),
    ("datetimeoffset(7)", pa.string(), "text",
     "REPLACE(STUFF(CONVERT(varchar(34), [c], 121), 11, 1, 'T'), ' ', '') AS [c]"),
    ("datetimeoffset(0)", pa.string(), "text",
     "REPLACE(STUFF(CONVERT(varchar(34), [c], 121), 11, 1, 'T'), ' ', '') AS [c]"),
    ("uniqueidentifier", pa.string(), "exact", "CONVERT(char(36), [c]) AS [c]"),
    ("binary(16)", pa.binary(), "exact", "[c]"),
    ("varbinary(max)", pa.binary(), "exact", "[c]"),
    ("image", pa.binary(), "exact", "[c]"),
    ("timestamp", pa.binary(), "exact", "[c]"),                # rowversion: 8 bytes
    ("rowversion", pa.binary(), "exact", "[c]"),
    ("xml", pa.string(), "text", "CONVERT(nvarchar(max), [c]) AS [c]"),
    ("hierarchyid", pa.string(), "text", "[c].ToString() AS [c]"),
])
def test_mapping(native, arrow, fidelity, expr):
    m = one(native)
    assert (m.arrow_type, m.fidelity, m.select_expr) == (arrow, fidelity, expr)
    assert m.field.metadata[NATIVE_TYPE_KEY] == native.encode()


def test_text_notes_say_why():
    assert "100 ns" in one("datetime2(7)").note and "delivered as text" in one("datetime2(7)").note
    assert "offset" in one("datetimeoffset(7)").note
    assert "100 ns kept" in one("time(7)").note


@pytest.mark.parametrize("native", ["sql_variant", "geometry", "geography", "some_clr_type"])
def test_refused_names_the_override(native):
    m = one(native, name="odd col")
    assert m.fidelity == "refused" and m.select_expr == ""
    assert '[exports.columns] odd col = "text"' in m.note
    exp = ExportConfig(name="e", destination=DestinationConfig(type="local", path="/tmp"), table="t")
    with pytest.raises(RivetError) as e:
        check_mappings(exp, [m], strict=False)
    assert e.value.code == "RIVET_TYPE_REFUSED"


@pytest.mark.parametrize("native, expr", [
    ("sql_variant", "CONVERT(nvarchar(max), [c]) AS [c]"),
    ("datetime", "CONVERT(nvarchar(40), [c], 121) AS [c]"),           # style 0 would print 'Jan  2 2024  3:04AM'
    ("datetime2(7)", "CONVERT(nvarchar(40), [c], 121) AS [c]"),
    ("datetimeoffset(7)", "CONVERT(nvarchar(40), [c], 121) AS [c]"),
    ("float", "CONVERT(nvarchar(40), [c], 3) AS [c]"),                # style 0 keeps 6 digits
    ("real", "CONVERT(nvarchar(40), [c], 3) AS [c]"),
    ("money", "CONVERT(nvarchar(40), [c], 2) AS [c]"),                # style 0 keeps 2 decimals
    ("varbinary(max)", "CONVERT(varchar(max), [c], 2) AS [c]"),
    ("timestamp", "CONVERT(varchar(max), [c], 2) AS [c]"),
    ("geometry", "[c].ToString() AS [c]"),
    ("int", "CONVERT(nvarchar(max), [c]) AS [c]"),
])
def test_text_override(native, expr):
    m = one(native, override="text")
    assert (m.arrow_type, m.fidelity, m.select_expr) == (pa.string(), "text", expr)


def test_skip_override_and_output_schema():
    cols = [SourceColumn("id", "int"), SourceColumn("v", "sql_variant"), SourceColumn("at", "datetime2(7)")]
    maps = map_columns("mssql", cols, {"v": "skip"}, MS)
    assert [m.name for m in maps] == ["id", "at"]
    assert output_schema(maps).names == ["id", "at"]


def test_hostile_column_names_are_quoted_in_every_expression():
    name = "x]; DROP TABLE t; --"
    for native in ("money", "datetime2(7)", "uniqueidentifier", "time(7)", "xml"):
        m = one(native, name=name)
        assert "[x]]; DROP TABLE t; --]" in m.select_expr
        assert m.select_expr.endswith(" AS [x]]; DROP TABLE t; --]")


@pytest.mark.parametrize("name, max_length, precision, scale, want", [
    # sys.columns → the declared type, as sp_describe_first_result_set writes it (nvarchar lengths in characters)
    ("int", 4, 10, 0, "int"),
    ("decimal", 17, 38, 10, "decimal(38,10)"),
    ("numeric", 5, 5, 2, "numeric(5,2)"),
    ("varchar", -1, 0, 0, "varchar(max)"),
    ("varchar", 255, 0, 0, "varchar(255)"),
    ("nvarchar", 100, 0, 0, "nvarchar(50)"),
    ("nvarchar", -1, 0, 0, "nvarchar(max)"),
    ("nchar", 20, 0, 0, "nchar(10)"),
    ("varbinary", -1, 0, 0, "varbinary(max)"),
    ("binary", 8, 0, 0, "binary(8)"),
    ("datetime2", 8, 27, 7, "datetime2(7)"),
    ("time", 5, 16, 7, "time(7)"),
    ("datetimeoffset", 10, 34, 7, "datetimeoffset(7)"),
    ("datetime", 8, 23, 3, "datetime"),
    ("timestamp", 8, 0, 0, "timestamp"),
    ("float", 8, 53, 0, "float"),
    ("uniqueidentifier", 16, 0, 0, "uniqueidentifier"),
])
def test_native_type_from_sys_columns(name, max_length, precision, scale, want):
    assert native_type(name, max_length, precision, scale) == want
    assert one(want).fidelity in ("exact", "text")


@pytest.mark.parametrize("type_name, max_length, precision, scale, want", [
    ("datetime2(7)", 8, 27, 7, "datetime2(7)"),           # SQL Server names the parameters itself
    ("nvarchar(100)", 200, 0, 0, "nvarchar(100)"),
    ("datetime2", 8, 26, 6, "datetime2(6)"),              # Babelfish names the type alone: its columns complete it
    ("time", 5, 15, 6, "time(6)"),
    ("datetimeoffset", 10, 33, 6, "datetimeoffset(6)"),
    ("decimal", 9, 12, 2, "decimal(12,2)"),
    ("nvarchar", -1, 0, 0, "nvarchar(max)"),
    ("int", 4, 10, 0, "int"),
    ("xml", -1, 0, 0, "xml"),
])
def test_described_type_from_sp_describe_first_result_set(type_name, max_length, precision, scale, want):
    from engine.sources.mssql import described_type
    assert described_type(type_name, max_length, precision, scale) == want
