"""SQL Server dialect without a server: golden strings for every shape rivet sends (quoting, literals, windows,
counts, time windows), injection attempts in identifiers and values, and the SQL the planner builds for each mode.

No SQL Server can run on this machine; tests/mssql/ runs the same shapes against a real one (RIVET_TEST_MSSQL_URL).
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import DestinationConfig, ExportConfig, SourceConfig, Tuning
from engine.errors import RivetError
from engine.planner import CURSOR_FIELD, cursor_text, cursor_value, plan_export, window_predicate
from engine.sources.base import Relation, SourceColumn
from engine.sources.mssql import MssqlSource
from engine.sql import MssqlDialect, dialect_for
from engine.state.store import StateStore

MS = MssqlDialect()
BRACKETED = re.compile(r"\[(?:[^\]]|\]\])*\]")
N_STRING = re.compile(r"N'(?:[^']|'')*'", re.DOTALL)


# ---- identifiers --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, want", [
    ("orders", "[orders]"),
    ("Mixed Case", "[Mixed Case]"),
    ("we]ird", "[we]]ird]"),
    ("[already]", "[[already]]]"),
    ("x]; DROP TABLE users; --", "[x]]; DROP TABLE users; --]"),
    ("semi;colon", "[semi;colon]"),
    ("-- comment", "[-- comment]"),
    ('dq"x', '[dq"x]'),
    ("naïve ✓", "[naïve ✓]"),
])
def test_quote_ident(name, want):
    assert MS.quote_ident(name) == want


@pytest.mark.parametrize("table, want", [
    ("orders", "[orders]"),
    ("dbo.orders", "[dbo].[orders]"),
    ("[my.schema].[t.x]", "[my.schema].[t.x]"),
    ("[a]]b].c", "[a]]b].[c]"),
    ("sales.[order lines]", "[sales].[order lines]"),
    ("orders]; DROP TABLE users; --", "[orders]]; DROP TABLE users; --]"),
    ("dbo.x]; SELECT 1 --", "[dbo].[x]]; SELECT 1 --]"),
    ("[abc", "[[abc]"),           # not a bracketed part: the text is the name
])
def test_quote_table(table, want):
    assert MS.quote_table(table) == want


@pytest.mark.parametrize("bad", ["", "a.b.c", "a.", ".b", "x\x00y", "[a].[b].[c]"])
def test_quote_table_refuses_malformed(bad):
    with pytest.raises(RivetError) as e:
        MS.quote_table(bad)
    assert e.value.code.startswith("RIVET_CONFIG_")


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_any_identifier_is_one_bracketed_token(name):
    quoted = MS.quote_ident(name)
    assert BRACKETED.fullmatch(quoted)
    assert quoted[1:-1].replace("]]", "]") == name


# ---- literals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, want", [
    (None, "NULL"),
    (True, "1"), (False, "0"),                                   # T-SQL has no TRUE / FALSE
    (-42, "-42"), (2**63 - 1, "9223372036854775807"),
    (Decimal("1E+3"), "1000"), (Decimal("-0.000001"), "-0.000001"),
    (Decimal("12345678901234567890123456789.012345678"), "12345678901234567890123456789.012345678"),
    (1.5, "1.5"), (1e-05, "1e-05"),
    ("it's", "N'it''s'"),
    ("N'x'", "N'N''x'''"),                                       # an N prefix inside the value stays data
    ("x'; DROP TABLE t; --", "N'x''; DROP TABLE t; --'"),
    ("back\\slash", "N'back\\slash'"),                           # no backslash escapes in T-SQL
    ("unicode ✓ é 中", "N'unicode ✓ é 中'"),
    ("", "N''"),
    (b"", "0x"), (b"\x00\xff'", "0x00ff27"),
    (dt.date(2024, 2, 29), "CONVERT(date, '20240229', 112)"),
    (dt.date(999, 1, 2), "CONVERT(date, '09990102', 112)"),
    (dt.time(10, 11, 12, 123456), "CAST('10:11:12.123456' AS time(7))"),
])
def test_literal(value, want):
    assert MS.literal(value) == want


@pytest.mark.parametrize("value, want", [
    # naive: an untyped ISO 8601 string the server converts to the compared column's type (datetime, datetime2, ...)
    (dt.datetime(2024, 1, 2, 3, 4, 5), "'2024-01-02T03:04:05.000'"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 3000), "'2024-01-02T03:04:05.003'"),       # fits a datetime column exactly
    (dt.datetime(2024, 1, 2, 3, 4, 5, 123456), "'2024-01-02T03:04:05.123456'"),
    (dt.datetime(1, 1, 1, 0, 0, 0, 1), "'0001-01-01T00:00:00.000001'"),
    # aware: a datetimeoffset, the same instant whatever the column
    (dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
     "CAST('2024-01-02T03:04:05.000006+05:30' AS datetimeoffset(7))"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
     "CAST('2024-01-02T03:04:05.000+00:00' AS datetimeoffset(7))"),
])
def test_datetime_literals_keep_every_digit(value, want):
    assert MS.literal(value) == want


def test_literal_refuses_nul_nan_and_unknown_types():
    with pytest.raises(RivetError) as e:
        MS.literal("a\x00b")
    assert e.value.code == "RIVET_SQL_NUL_IN_VALUE"
    for bad in (float("nan"), float("inf"), Decimal("NaN"), object()):
        with pytest.raises(RivetError):
            MS.literal(bad)


@given(st.text().filter(lambda s: "\x00" not in s))
def test_any_string_is_one_n_literal(s):
    lit = MS.literal(s)
    assert N_STRING.fullmatch(lit)
    assert lit[2:-1].replace("''", "'") == s


# ---- query shapes -------------------------------------------------------------------------------------------------

def test_query_shapes():
    t = Relation(table="dbo.orders")
    q = Relation(query="SELECT id, v FROM dbo.orders -- trailing comment\n;  ")
    assert MS.relation_sql(t) == "[dbo].[orders]"
    assert MS.relation_sql(q) == "(SELECT id, v FROM dbo.orders -- trailing comment\n) AS rivet_q"
    assert MS.select(t, ["[id]", "CAST([m] AS decimal(19,4)) AS [m]"], ["[id] > 5", "[x] = N'a'"], ["[id]"]) == (
        "SELECT [id], CAST([m] AS decimal(19,4)) AS [m] FROM [dbo].[orders] WHERE ([id] > 5) AND ([x] = N'a') "
        "ORDER BY [id]")
    assert MS.select(t, []) == "SELECT * FROM [dbo].[orders]"
    assert MS.count(t, ["[id] BETWEEN 1 AND 10"]) == (
        "SELECT COUNT_BIG(*) AS n FROM [dbo].[orders] WHERE ([id] BETWEEN 1 AND 10)")
    assert MS.count(q) == "SELECT COUNT_BIG(*) AS n FROM (SELECT id, v FROM dbo.orders -- trailing comment\n) AS rivet_q"
    assert MS.min_max(t, "[id]") == "SELECT MIN([id]) AS lo, MAX([id]) AS hi FROM [dbo].[orders]"
    assert MS.min_max(t, "[at]", ["[k] = 1"]) == (
        "SELECT MIN([at]) AS lo, MAX([at]) AS hi FROM [dbo].[orders] WHERE ([k] = 1)")
    assert MS.cast_text("[x]") == "CONVERT(nvarchar(max), [x])"
    assert dialect_for("mssql").name == "mssql"


def test_time_windows():
    assert MS.now_minus_days(7) == "DATEADD(day, -7, SYSUTCDATETIME())"
    assert MS.now_minus_days(0) == "DATEADD(day, -0, SYSUTCDATETIME())"
    assert MS.unix_now_minus_days(2) == "(DATEDIFF_BIG(second, '19700101', SYSUTCDATETIME()) - 172800)"
    for bad in (-1, 1.5, "7", True):
        with pytest.raises(RivetError):
            MS.now_minus_days(bad)
        with pytest.raises(RivetError):
            MS.unix_now_minus_days(bad)


def _export(**kw) -> ExportConfig:
    return ExportConfig(name="orders", destination=DestinationConfig(type="local", path="/tmp/out"), **kw)


def test_chunk_windows_integer_and_days():
    rel, col = Relation(table="dbo.orders"), MS.quote_ident("id")
    ints = window_predicate(_export(table="dbo.orders", mode="chunked", chunk_size=100), MS, col, 1, 100)
    assert MS.select(rel, ["[id]"], ints) == "SELECT [id] FROM [dbo].[orders] WHERE ([id] BETWEEN 1 AND 100)"
    assert MS.count(rel, ints) == "SELECT COUNT_BIG(*) AS n FROM [dbo].[orders] WHERE ([id] BETWEEN 1 AND 100)"
    days = window_predicate(_export(table="dbo.orders", mode="chunked", chunk_by_days=2), MS, "[at]",
                            dt.date(2024, 1, 1), dt.date(2024, 1, 3))
    assert MS.select(rel, ["[id]"], days) == (
        "SELECT [id] FROM [dbo].[orders] WHERE ([at] >= CONVERT(date, '20240101', 112)) "
        "AND ([at] < CONVERT(date, '20240103', 112))")


@pytest.mark.parametrize("arrow_type, stored, want", [
    # the stored cursor (text) back to a literal the server compares exactly against the column
    ("timestamp[us]", "2024-05-01T09:40:00.003000", "'2024-05-01T09:40:00.003'"),
    ("timestamp[us]", "2024-05-01T09:40:00.123456", "'2024-05-01T09:40:00.123456'"),
    ("string", "2024-05-01T09:40:00.1234567", "N'2024-05-01T09:40:00.1234567'"),     # datetime2(7) text
    ("string", "2024-05-01T09:40:00.1234567+02:00", "N'2024-05-01T09:40:00.1234567+02:00'"),
    ("int64", "9007199254740993", "9007199254740993"),
    ("decimal128(38, 10)", "12345678901234567890.0000000001", "12345678901234567890.0000000001"),
    ("string", "x'; DROP TABLE t; --", "N'x''; DROP TABLE t; --'"),
])
def test_incremental_cursor_literals(arrow_type, stored, want):
    t = {"timestamp[us]": pa.timestamp("us"), "string": pa.string(), "int64": pa.int64(),
         "decimal128(38, 10)": pa.decimal128(38, 10)}[arrow_type]
    assert MS.literal(cursor_value(stored, t)) == want


def test_cursor_text_round_trips_datetime_cursor():
    v = dt.datetime(2024, 1, 2, 3, 4, 5, 3000)
    assert MS.literal(cursor_value(cursor_text(v), pa.timestamp("us"))) == "'2024-01-02T03:04:05.003'"


# ---- the planner's SQL for every mode, from a catalog answered without a server ----------------------------------

COLUMNS = [SourceColumn("id", "bigint", False), SourceColumn("updated_at", "datetime2(7)"),
           SourceColumn("created_at", "datetime2(3)", False), SourceColumn("amount", "money"),
           SourceColumn("v", "nvarchar(max)"), SourceColumn("day", "date", False)]


class CatalogOnly(MssqlSource):
    """The real adapter (dialect, engine name, URL parsing) with its catalog answers fixed: planning reads only the
    catalog and MIN/MAX, so the SQL it builds is exactly what a server would be sent."""

    def describe(self, relation):
        return COLUMNS

    def primary_key(self, table):
        return COLUMNS[:1]

    def estimate_rows(self, relation):
        return 1000

    def scalar(self, sql):
        self.sent = sql
        return (dt.date(2024, 1, 1), dt.date(2024, 1, 4)) if "[day]" in sql else (1, 250)


@pytest.fixture()
def plan(tmp_path):
    store = StateStore(tmp_path / "state.duckdb", lock_wait_s=5)
    src = CatalogOnly(SourceConfig("mssql", "mssql://sa:Secret-pw1@127.0.0.1:1433/shop"), Tuning())

    def make(**kw):
        return plan_export(_export(table="dbo.orders", **kw), src, store)
    return make


SELECT_LIST = ("SELECT [id], STUFF(CONVERT(varchar(27), [updated_at], 121), 11, 1, 'T') AS [updated_at], "
               "[created_at], CAST([amount] AS decimal(19,4)) AS [amount], [v], [day]")


def test_plan_full(plan):
    p = plan(mode="full")
    assert [t.sql for t in p.tasks] == [f"{SELECT_LIST} FROM [dbo].[orders]"]
    assert [m.fidelity for m in p.mappings] == ["exact", "text", "exact", "exact", "exact", "exact"]


def test_plan_incremental_first_run_and_coalesce(plan):
    p = plan(mode="incremental", cursor_column="updated_at")
    assert p.tasks[0].sql == f"{SELECT_LIST} FROM [dbo].[orders] ORDER BY [updated_at]"
    c = plan(mode="incremental", cursor_column="updated_at", incremental_cursor_mode="coalesce",
             cursor_fallback_column="created_at")
    assert c.tasks[0].sql == (f"{SELECT_LIST}, COALESCE([updated_at], [created_at]) AS [{CURSOR_FIELD}] "
                              "FROM [dbo].[orders] ORDER BY COALESCE([updated_at], [created_at])")


def test_plan_chunked_integer_and_days(plan):
    p = plan(mode="chunked", chunk_size=100)
    assert [t.sql.split(" FROM ")[1] for t in p.tasks] == [
        "[dbo].[orders] WHERE ([id] BETWEEN 1 AND 100)", "[dbo].[orders] WHERE ([id] BETWEEN 101 AND 200)",
        "[dbo].[orders] WHERE ([id] BETWEEN 201 AND 250)"]
    d = plan(mode="chunked", chunk_column="day", chunk_by_days=2)
    assert [t.sql.split(" WHERE ")[1] for t in d.tasks] == [
        "([day] >= CONVERT(date, '20240101', 112)) AND ([day] < CONVERT(date, '20240103', 112))",
        "([day] >= CONVERT(date, '20240103', 112)) AND ([day] < CONVERT(date, '20240105', 112))"]


def test_plan_time_window(plan):
    p = plan(mode="time_window", time_column="created_at", days_window=7)
    assert p.tasks[0].sql == (f"{SELECT_LIST} FROM [dbo].[orders] "
                              "WHERE ([created_at] >= DATEADD(day, -7, SYSUTCDATETIME()))")
