"""MariaDB/MySQL type sweep (docs/types.md): every type family at its limits, exported by the real `rivet run` to
Parquet and CSV from a table and from a query, value by value against the server's own rendering: its text
(`CAST(col AS CHAR)`, `HEX()` for bytes, the unsigned value of a BIT) and, for FLOAT and DOUBLE, the binary protocol's
exact value. Each case ends exact, or refused naming the column and the `= "text"` override that then exports it."""
from __future__ import annotations

import datetime as dt
import struct

import pyarrow as pa
import pytest
from hypothesis import strategies as st

from engine.config import SourceConfig, Tuning
from engine.sources.base import Relation
from engine.sources.mysql import MySQLSource
from engine.types import map_columns, output_schema

from tests.engine.type_sweep import Case, Source, problems, random_sweep, run_sweep

UNREPRESENTABLE = "RIVET_SOURCE_UNREPRESENTABLE"
TYPE_REFUSED = "RIVET_TYPE_REFUSED"
BITS = "CAST(CAST({c} AS UNSIGNED) AS CHAR)"
HEX = "HEX({c})"
BINARY = "{c}"   # a FLOAT or DOUBLE as the binary protocol sends it: every bit of it (see query below)
AWKWARD_TEXT = (
    "''", "' '", "'NULL'", r"'\\N'", r"'nul\0byte'", "'quote '' dq \" comma , semicolon ;'", r"'line\nbreak'",
    r"'cr\rcr'", r"'crlf\r\nend'", r"'tab\there'", r"'back\\slash'", "'✓ ü 日本 🦀 שלום'", "'=1+2'",
    "CONCAT('zero', _utf8mb4 0xE2808B, 'width')", r"REPEAT('ab,\"\n\r', 20000)",
)

CASES = [
    # integers at their limits, signed and unsigned; TINYINT(1) is an integer, not a boolean
    Case("ti", "tinyint", ("-128", "127", "0"), "int"),
    Case("tiu", "tinyint unsigned", ("0", "255"), "int"),
    Case("t1", "tinyint(1)", ("2", "-1", "127", "-128", "0", "1"), "int"),
    Case("si", "smallint", ("-32768", "32767"), "int"),
    Case("siu", "smallint unsigned", ("65535",), "int"),
    Case("mi", "mediumint", ("-8388608", "8388607"), "int"),
    Case("miu", "mediumint unsigned", ("16777215",), "int"),
    Case("i", "int", ("-2147483648", "2147483647"), "int"),
    Case("iu", "int unsigned", ("4294967295", "0"), "int"),
    Case("bi", "bigint", ("-9223372036854775808", "9223372036854775807"), "int"),
    Case("bu", "bigint unsigned", ("18446744073709551615", "0"), "int"),
    Case("b1", "bit(1)", ("b'0'", "b'1'"), "bool", truth=BITS),
    Case("b5", "bit(5)", ("b'10101'", "b'0'"), "int", truth=BITS),
    Case("b64", "bit(64)", ("b'" + "1" * 64 + "'", "b'0'", "b'1'"), "int", truth=BITS),
    Case("yr", "year", ("1901", "2155", "0"), "int"),
    # decimals: decimal128 up to 38 digits, text beyond
    Case("d38", "decimal(38,10)", ("9999999999999999999999999999.9999999999", "-0.0000000001", "0"), "decimal"),
    Case("d5", "decimal(5,5)", ("0.99999", "-0.00001"), "decimal"),
    Case("d10", "decimal(10,0)", ("9999999999", "-9999999999"), "decimal"),
    Case("du", "decimal(10,2) unsigned", ("99999999.99", "0"), "decimal"),
    Case("d65", "decimal(65,30)", ("'99999999999999999999999999999999999.999999999999999999999999999999'",
                                   "'-0.000000000000000000000000000001'", "0"), "text", "text"),
    # floats: every digit of the float32 / float64 (MariaDB stores neither NaN nor infinity, and -0 as 0)
    Case("f", "float", ("3.1415927", "16777216", "16777217", "1.4e-45", "3.402823466e38", "-3.402823466e38",
                        "1.17549435e-38", "-0e0", "0.1"), "float4", truth=BINARY),
    Case("f104", "float(10,4)", ("1.2346", "-999999.9999"), "float4", truth=BINARY),
    Case("db", "double", ("1.7976931348623157e308", "-1.7976931348623157e308", "5e-324", "2.2250738585072014e-308",
                          "-0e0", "0.1", "0.30000000000000004"), "float8", truth=BINARY),
    # strings with every awkward character, NUL included, and their relatives
    Case("vc", "varchar(200)", AWKWARD_TEXT[:-1], "text"),
    Case("tx", "longtext", AWKWARD_TEXT, "text"),
    Case("ch", "char(5)", ("'ab  '", "''", "'  a'"), "text"),
    Case("js", "json", (r"""'{"k": [1, 2.5, null], "u": "\\u0000 ✓"}'""", "'null'"), "text"),
    Case("en", "enum('a','b,c','',' x')", ("'a'", "'b,c'", "''", "' x'"), "text"),
    Case("st", "set('x','y','z')", ("'x,y'", "''", "'z,x'"), "text"),
    Case("uu", "uuid", ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"), "text"),
    Case("ip4", "inet4", ("'255.255.255.255'", "'0.0.0.0'"), "text"),
    Case("ip6", "inet6", ("'::1'", "'2001:db8::ff00:42:8329'"), "text"),
    # bytes: zero bytes, padding, large
    Case("bn", "binary(4)", ("x'00'", "x'00ff00ff'", "''"), "bytes", truth=HEX),
    Case("vbn", "varbinary(10)", ("x''", "x'000000'"), "bytes", truth=HEX),
    Case("bl", "longblob", ("REPEAT(x'00ff', 50000)", "x''"), "bytes", truth=HEX),
    # temporals at their limits (TIMESTAMP: read in UTC)
    Case("dt", "date", ("'1000-01-01'", "'9999-12-31'", "'0001-01-01'", "'1970-01-01'"), "date"),
    Case("dtm", "datetime(6)", ("'1000-01-01 00:00:00.000000'", "'9999-12-31 23:59:59.999999'",
                                "'0001-01-01 00:00:00'"), "timestamp"),
    Case("dtm0", "datetime", ("'2024-02-29 12:00:00'",), "timestamp"),
    Case("ts", "timestamp(6) NULL", ("'1970-01-01 00:00:01.000000'", "'2038-01-19 03:14:07.999999'"), "timestamptz"),
    Case("tm", "time(6)", ("'-838:59:59.000000'", "'838:59:59.000000'", "'00:00:00'", "'-00:00:00.000001'"),
         "text", "text"),
    # zero dates: no Arrow date holds them; refused naming each column, exact with the text override
    Case("zd", "date", ("'2024-01-01'", "'0000-00-00'"), "date", refused=UNREPRESENTABLE),
    Case("zm", "date", ("'2024-00-10'",), "date", refused=UNREPRESENTABLE),
    Case("zdt", "datetime", ("'0000-00-00 00:00:00'",), "timestamp", refused=UNREPRESENTABLE),
    Case("zts", "timestamp NULL", ("'0000-00-00 00:00:00'",), "timestamptz", refused=UNREPRESENTABLE),
    # no exact Arrow form is known: refused when planned; its override exports the hex of its WKB
    Case("geo", "point", ("POINT(1, 2)",), "bytes", "refused", refused=TYPE_REFUSED, truth=HEX, override_truth=HEX),
]


def mysql_source(mysql) -> Source:
    def session(con):
        cur = con.cursor()
        # UTC for TIMESTAMP; strict, without NO_ZERO_DATE (MySQL 8's default) so that zero dates can be stored
        cur.execute("SET time_zone = '+00:00', sql_mode = 'STRICT_TRANS_TABLES'")
        cur.close()

    def execute(statements: list[str]) -> None:
        con = mysql.connect()
        try:
            session(con)
            cur = con.cursor()
            for s in statements:
                cur.execute(s)
        finally:
            con.close()

    def query(sql: str) -> list[tuple]:
        """Rows as the text protocol gives them, but floats as the binary protocol does (the text protocol prints a
        FLOAT with 6 digits; the prepared statement's strings stop at a NUL)."""
        con = mysql.connect()
        try:
            session(con)
            results = []
            for cur in (con.cursor(), con.cursor(prepared=True)):
                cur.execute(sql)
                results.append(cur.fetchall())
                cur.close()
        finally:
            con.close()
        text, binary = results
        return [tuple(b if isinstance(b, float) else t.decode() if isinstance(t, (bytes, bytearray)) else t
                      for t, b in zip(tr, br)) for tr, br in zip(text, binary)]

    def group(case: Case) -> str:
        return {None: "all", UNREPRESENTABLE: "zero_dates", TYPE_REFUSED: "refused_types"}[case.refused]

    micros = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})"
    return Source("mysql", mysql.url, execute, query, lambda n: f"`{n}`", "CAST({c} AS CHAR)",
                  {"date": "DATEDIFF({c}, '1970-01-01')", "timestamp": micros, "timestamptz": micros}, group,
                  refusal_paths=(("table", "parquet"), ("query", "csv")))


@pytest.fixture(scope="module")
def swept(mysql, tmp_path_factory):
    return run_sweep(mysql_source(mysql), CASES, tmp_path_factory.mktemp("mysql_sweep"), "sweep",
                     paths=(("table", "parquet"), ("table", "csv"), ("query", "parquet")))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(swept, case):
    found = problems(swept, case)
    assert not found, "\n".join(found)


def test_float_text_override_keeps_every_digit(mysql):
    """`f = "text"` printed the FLOAT's 6 digits too (3.14159); it now prints the DOUBLE holding the float32."""
    mysql.sql("DROP TABLE IF EXISTS float_text")
    mysql.sql("CREATE TABLE float_text (id int PRIMARY KEY, f float)")
    mysql.sql("INSERT INTO float_text VALUES (1, 3.1415927), (2, 16777217), (3, 1.4e-45), (4, NULL)")
    src = MySQLSource(SourceConfig("mysql", mysql.url), Tuning(statement_timeout_s=30, connect_timeout_s=5))
    try:
        rel = Relation(table="float_text")
        mappings = map_columns("mysql", src.describe(rel), {"f": "text"}, src.dialect)
        sql = src.dialect.select(rel, [m.select_expr for m in mappings], [], ["`id`"])
        texts = pa.Table.from_batches(list(src.read(sql, output_schema(mappings), 10))).column("f").to_pylist()
    finally:
        src.close()
    assert mappings[1].fidelity == "text"
    assert texts == ["3.1415927410125732", "16777216", "1.401298464324817e-45", None]
    binary = mysql_source(mysql).query("SELECT f FROM float_text ORDER BY id")
    assert [struct.pack("<f", float(t)) for t in texts[:3]] == [struct.pack("<f", f) for (f,) in binary[:3]]


# ---- random values per type (hypothesis) ---------------------------------------------------------------------------

def _hex(b: bytes) -> str:   # any bytes or text, without escaping rules to get wrong
    return f"X'{b.hex()}'"


def _clock(us: int) -> str:
    sign, us = ("-" if us < 0 else ""), abs(us)
    return f"{sign}{us // 3_600_000_000:02d}:{us // 60_000_000 % 60:02d}:{us // 1_000_000 % 60:02d}.{us % 1_000_000:06d}"


def _datetime(lo: dt.datetime, hi: dt.datetime) -> st.SearchStrategy[str]:
    return st.datetimes(lo, hi).map(lambda v: f"'{v.isoformat(sep=' ', timespec='microseconds')}'")


LAST_TIME_US = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999
RANDOM_COLUMNS = {
    "t1": ("tinyint(1)", "int", "exact", st.integers(-128, 127).map(str)),
    "iu": ("int unsigned", "int", "exact", st.integers(0, 2**32 - 1).map(str)),
    "bi": ("bigint", "int", "exact", st.integers(-2**63, 2**63 - 1).map(str)),
    "bu": ("bigint unsigned", "int", "exact", st.integers(0, 2**64 - 1).map(str)),
    "b64": ("bit(64)", "int", "exact", st.integers(0, 2**64 - 1).map(lambda n: f"b'{n:b}'"), BITS),
    "yr": ("year", "int", "exact", st.sampled_from(["0"]) | st.integers(1901, 2155).map(str)),
    "f": ("float", "float4", "exact", st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
          BINARY),
    "db": ("double", "float8", "exact", st.floats(allow_nan=False, allow_infinity=False).map(repr), BINARY),
    "d38": ("decimal(38,10)", "decimal", "exact",
            st.decimals(-(10**28) + 1, 10**28 - 1, places=10).map(lambda d: format(d, "f"))),
    "d65": ("decimal(65,30)", "text", "text",
            st.decimals(-(10**35) + 1, 10**35 - 1, places=30).map(lambda d: format(d, "f"))),
    "tx": ("longtext", "text", "exact",
           st.text(st.characters(exclude_categories=("Cs",)), max_size=40).map(lambda s: "_utf8mb4 " + _hex(s.encode()))),
    "bl": ("blob", "bytes", "exact", st.binary(max_size=40).map(_hex), HEX),
    "d": ("date", "date", "exact", st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31)).map(lambda v: f"'{v}'")),
    "dtm": ("datetime(6)", "timestamp", "exact", _datetime(dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59,
                                                                                              59, 999999))),
    "ts": ("timestamp(6) NULL", "timestamptz", "exact",
           _datetime(dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 7, 999999))),
    "tm": ("time(6)", "text", "text", st.integers(-LAST_TIME_US, LAST_TIME_US).map(lambda us: f"'{_clock(us)}'")),
}
RANDOM_PATHS = (("table", "parquet"), ("query", "csv"))


def test_random_values(mysql, tmp_path_factory):
    random_sweep(mysql_source(mysql), RANDOM_COLUMNS, tmp_path_factory, 2, RANDOM_PATHS)


@pytest.mark.slow
def test_random_values_many(mysql, tmp_path_factory):
    random_sweep(mysql_source(mysql), RANDOM_COLUMNS, tmp_path_factory, 40, RANDOM_PATHS)
