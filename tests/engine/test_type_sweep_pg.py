"""PostgreSQL type sweep (docs/types.md): every type family at its limits, exported by the real `rivet run` through
the parallel table scan and the query path, to Parquet and CSV, value by value against PostgreSQL's own
`col::text` (and its day / microsecond count since 1970 for what Parquet stores). Each case ends exact, or refused
naming the column and the `= "text"` override that then exports it exactly. Hypothesis adds random values per type."""
from __future__ import annotations

import json
import math

import psycopg
import pytest
from hypothesis import strategies as st

from tests.engine.type_sweep import Case, Source, problems, random_sweep, run_sweep
from tests.helpers import rivet

UNREPRESENTABLE = "RIVET_SOURCE_UNREPRESENTABLE"

SETUP = [
    "CREATE TYPE sweep_mood AS ENUM ('a,b', 'with \"quote\"', 'ünï', ' ')",
    "CREATE DOMAIN sweep_positive AS int CHECK (VALUE > 0)",
    "CREATE DOMAIN sweep_code AS text CHECK (VALUE <> 'x')",
    "CREATE TYPE sweep_pair AS (a int, b text)",
]
AWKWARD_TEXT = (
    "''", "' '", "'NULL'", r"'\N'", "E'quote '' dq \" comma , semicolon ;'", r"E'line\nbreak'", r"E'cr\rcr'",
    r"E'crlf\r\nend'", r"E'tab\there'", r"E'back\\slash'", "'✓ ü 日本 🦀 שלום'", r"E'zero\u200bwidth e\u0301 \uFEFFbom'",
    r"E'\x01\x1f controls'", "'=1+2'", r"repeat(E'ab,\"\n\r', 20000)",
)

CASES = [
    # integers at their limits
    Case("i2", "smallint", ("-32768", "32767", "0", "NULL"), "int"),
    Case("i4", "integer", ("-2147483648", "2147483647", "0"), "int"),
    Case("i8", "bigint", ("-9223372036854775808", "9223372036854775807", "0"), "int"),
    Case("oid_", "oid", ("0", "4294967295"), "int"),
    # bounded numerics: decimal128 (no exponent notation in CSV, however small)
    Case("n38_10", "numeric(38,10)", ("9999999999999999999999999999.9999999999", "-9999999999999999999999999999.9999999999",
                                      "0", "0.0000000001", "-0.0000001", "1"), "decimal"),
    Case("n5_5", "numeric(5,5)", ("0.99999", "-0.99999", "0.00001", "0"), "decimal"),
    Case("n38_0", "numeric(38,0)", ("99999999999999999999999999999999999999",
                                    "-99999999999999999999999999999999999999", "0"), "decimal"),
    # floats: limits, denormals, signed zero, NaN, infinities
    Case("f4", "real", ("'3.4028235e38'", "'-3.4028235e38'", "'1.1754944e-38'", "'1e-45'", "'-0'", "'NaN'",
                        "'Infinity'", "'-Infinity'", "'3.1415927'", "'16777217'"), "float4"),
    Case("f8", "double precision", ("'1.7976931348623157e308'", "'-1.7976931348623157e308'",
                                    "'2.2250738585072014e-308'", "'5e-324'", "'-0'", "'NaN'", "'Infinity'",
                                    "'-Infinity'", "'0.1'", "'0.30000000000000004'"), "float8"),
    Case("b", "boolean", ("true", "false", "NULL"), "bool"),
    # text with every awkward character PostgreSQL allows (no NUL), and its relatives
    Case("t", "text", AWKWARD_TEXT, "text"),
    Case("vc", "varchar(12)", ("''", "'twelve chars'", "'✓✓✓✓✓✓✓✓✓✓✓✓'"), "text"),
    Case("ch", "char(4)", ("'ab'", "'    '", "'a  b'"), "text"),
    Case("nm", "name", ("'pg_class'", "''"), "text"),
    Case("j", "json", ("'{\"b\": 1,  \"a\": [1, 2.50, \"x\\u0000y\"]}'", "'\"\\ud83e\\udd80\"'", "'null'"), "text"),
    Case("jb", "jsonb", ("'{\"b\": 1, \"a\": [1, 2.50]}'", "'null'", "'\"✓\"'"), "text"),
    Case("u", "uuid", ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'",
                       "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'"), "text"),
    Case("by", "bytea", (r"'\x'", r"'\x00'", r"'\x000000ff'", "decode(repeat('00ff', 50000), 'hex')"), "bytes"),
    # every temporal at its minimum and maximum, BC and beyond year 9999
    Case("d", "date", ("'4713-11-24 BC'", "'0001-01-01 BC'", "'0001-01-01'", "'1969-12-31'", "'9999-12-31'",
                       "'10000-01-01'", "'5874897-12-31'"), "date"),
    Case("ts", "timestamp", ("'4713-11-24 00:00:00 BC'", "'0044-03-15 12:00:00 BC'", "'0001-12-31 23:59:59.999999 BC'",
                             "'1969-12-31 23:59:59.999999'", "'1970-01-01 00:00:00'", "'9999-12-31 23:59:59.999999'",
                             "'100000-01-01 00:00:00'", "'294247-01-10 04:00:54.775806'"), "timestamp"),
    Case("ts3", "timestamp(3)", ("'2024-01-01 00:00:00.123'",), "timestamp"),
    Case("tstz", "timestamptz", ("'4713-11-24 00:00:00+00 BC'", "'2024-03-10 12:34:56.123456+05:30'",
                                 "'100000-01-01 00:00:00+00'", "'294247-01-10 04:00:54.775806+00'"), "timestamptz"),
    Case("tm", "time", ("'00:00:00'", "'23:59:59.999999'", "'12:00:00.5'"), "time"),
    # text forms: PostgreSQL's own text, exact in value
    Case("nfree", "numeric", ("'NaN'", "'Infinity'", "'-Infinity'", "'1e-1000'", "'-0.000'",
                              "'123456789012345678901234567890.123456789012345678901234567890'"), "text", "text"),
    Case("n50", "numeric(50,5)", ("'12345678901234567890123456789012345678901234.12345'", "'-0.00001'"), "text", "text"),
    Case("nneg", "numeric(3,-2)", ("12300", "-99900"), "text", "text"),
    Case("mo", "money", ("'-92233720368547758.08'", "'92233720368547758.07'", "'0'"), "text", "text"),
    Case("iv", "interval", ("'178000000 years'", "'-178000000 years'", "'1 mon -1 day 00:00:00.000001'",
                            "'-00:00:00.000001'", "'0'", "'2147483647 days 2562047788:00:54.775807'",
                            "'-2147483648 days -2562047788:00:54.775807'"), "text", "text"),
    Case("ttz", "timetz", ("'24:00:00+1559'", "'00:00:00-1559'", "'12:34:56.789+05:30'"), "text", "text"),
    Case("ia", "int[]", ("'{1,NULL,3}'", "'{}'", "'{{1,2},{3,4}}'", "'[0:1]={7,8}'"), "text", "text"),
    Case("ta", "text[]", (r"""E'{"a,b","c\\"d",NULL,"NULL","","✓ x"}'""",), "text", "text"),
    Case("en", "sweep_mood", ("'a,b'", "'with \"quote\"'", "'ünï'", "' '"), "text", "text"),
    # a query's result names a domain's base type, a table's column the domain: both exact
    Case("dom", "sweep_positive", ("1", "2147483647"), "int", "text", query_fidelity="exact"),
    Case("domt", "sweep_code", ("''", r"E'multi\nline'"), "text", "text", query_fidelity="exact"),
    Case("pair", "sweep_pair", ("ROW(1, 'a b')", "ROW(NULL, '')", "ROW(-1, E'q\"uote')"), "text", "text"),
    Case("ip", "inet", ("'192.168.0.1/24'", "'::1'", "'2001:db8::ff00:42:8329/64'"), "text", "text"),
    Case("net", "cidr", ("'10.0.0.0/8'", "'2001:db8::/32'"), "text", "text"),
    Case("mac", "macaddr", ("'08:00:2b:01:02:03'",), "text", "text"),
    Case("mac8", "macaddr8", ("'08:00:2b:01:02:03:04:05'",), "text", "text"),
    Case("pt", "point", ("'(1.5,-2)'", "'(1e300,-0)'"), "text", "text"),
    Case("ln", "line", ("'{1,-1,0}'",), "text", "text"),
    Case("sg", "lseg", ("'[(0,0),(1,1)]'",), "text", "text"),
    Case("bx", "box", ("'(1,1),(0,0)'",), "text", "text"),
    Case("pa", "path", ("'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"), "text", "text"),
    Case("pg", "polygon", ("'((0,0),(1,1),(1,0))'",), "text", "text"),
    Case("ci", "circle", ("'<(0,0),1.5>'",), "text", "text"),
    Case("r4", "int4range", ("'[1,5)'", "'empty'", "'(,)'"), "text", "text"),
    Case("rn", "numrange", ("'(1.5,2.25]'",), "text", "text"),
    Case("rts", "tsrange", ("'[\"2024-01-01 00:00\",infinity)'",), "text", "text"),
    Case("rtz", "tstzrange", ("'[\"2024-01-01 00:00+02\",\"2024-01-02 00:00+02\")'",), "text", "text"),
    Case("rd", "daterange", ("'[-infinity,2024-01-01)'",), "text", "text"),
    Case("mr", "int4multirange", ("'{[1,3), [5,8)}'", "'{}'"), "text", "text"),
    Case("bt", "bit(8)", ("B'10100101'",), "text", "text"),
    Case("vb", "varbit", ("B''", "B'1'"), "text", "text"),
    Case("x", "xml", ("'<a b=\"1\">x &amp; y</a>'",), "text", "text"),
    Case("tv", "tsvector", ("'a fat cat'",), "text", "text"),
    Case("lsn", "pg_lsn", ("'0/16B3748'", "'FFFFFFFF/FFFFFFFF'"), "text", "text"),
    Case("chr", '"char"', ("'a'", "''"), "text", "text"),
    # values no Arrow value of the column's type holds: refused on every read path, naming the column
    Case("d_inf", "date", ("'infinity'", "'-infinity'", "'2024-01-01'"), "date", refused=UNREPRESENTABLE),
    Case("ts_inf", "timestamp", ("'infinity'", "'-infinity'"), "timestamp", refused=UNREPRESENTABLE),
    Case("tstz_inf", "timestamptz", ("'-infinity'",), "timestamptz", refused=UNREPRESENTABLE),
    Case("ts_last", "timestamp", ("'294276-12-31 23:59:59.999999'",), "timestamp", refused=UNREPRESENTABLE),
    # the one microsecond DuckDB cannot tell from infinity
    Case("ts_past", "timestamp", ("NULL", "'294247-01-10 04:00:54.775807'"), "timestamp", refused=UNREPRESENTABLE),
    Case("tstz_last", "timestamptz", ("'294276-12-31 23:59:59.999999+00'",), "timestamptz", refused=UNREPRESENTABLE),
    Case("tm_24", "time", ("'12:00:00'", "'24:00:00'"), "time", refused=UNREPRESENTABLE),
    Case("n_nan", "numeric(12,2)", ("1.5", "'NaN'"), "decimal", refused=UNREPRESENTABLE),
]


def pg_source(pg) -> Source:
    def group(case: Case) -> str:
        if case.refused:
            return "nan" if case.kind == "decimal" else "unrepresentable"
        return case.fidelity

    def query(sql: str) -> list[tuple]:
        with psycopg.connect(pg.url, options="-c TimeZone=UTC -c IntervalStyle=iso_8601") as con:
            return con.execute(sql).fetchall()

    def execute(statements: list[str]) -> None:
        with psycopg.connect(pg.url, autocommit=True) as con:
            for s in statements:
                con.execute(s)

    micros = "(extract(epoch from {c}) * 1000000)::text"
    return Source("postgres", pg.url, execute, query, lambda n: f'"{n}"', "{c}::text",
                  {"date": "({c} - date '1970-01-01')::text", "timestamp": micros, "timestamptz": micros, "time": micros},
                  group, refusal_paths=(("table", "parquet"), ("table", "csv"), ("query", "csv")))


@pytest.fixture(scope="module")
def swept(pg, tmp_path_factory):
    src = pg_source(pg)
    src.execute(SETUP)
    return run_sweep(src, CASES, tmp_path_factory.mktemp("pg_sweep"), "sweep")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(swept, case):
    found = problems(swept, case)
    assert not found, "\n".join(found)


def test_strict_refuses_text_forms_before_reading(swept):
    export = "sweep_text__table_csv"
    before = sorted((swept.out / export).iterdir())
    proc = rivet("run", "-c", swept.config, "--no-tui", "--json", "--strict", "-e", export)
    [result] = json.loads(proc.stdout)["exports"]
    assert proc.returncode == 1 and result["error"]["code"] == "RIVET_TYPE_NOT_EXACT"
    assert sorted((swept.out / export).iterdir()) == before   # nothing written


# ---- random values per type (hypothesis) ---------------------------------------------------------------------------

FIRST_DAY, LAST_DAY = -2440588, 2145042905          # 4713-11-24 BC .. 5874897-12-31, days since 1970-01-01
LAST_TIMESTAMP_DAY = 106751990                      # 294247-01-09: the last whole day of an Arrow timestamp


def _text(s: str) -> str:   # any text, without escaping rules to get wrong
    return f"convert_from('\\x{s.encode().hex()}'::bytea, 'UTF8')"


def _float(x: float, sql_type: str) -> str:
    text = "NaN" if math.isnan(x) else "Infinity" if x == math.inf else "-Infinity" if x == -math.inf else repr(x)
    return f"'{text}'::{sql_type}"


def _time_of_day(us: int) -> str:
    return f"{us // 3_600_000_000:02d}:{us // 60_000_000 % 60:02d}:{us // 1_000_000 % 60:02d}.{us % 1_000_000:06d}"


def _timestamp(day: int, us: int) -> str:
    return f"((date '1970-01-01' + {day}) + time '{_time_of_day(us)}')"


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
DAY_US = st.integers(0, 86_399_999_999)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | TEXT, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=10)
RANDOM_COLUMNS = {
    "i2": ("smallint", "int", "exact", st.integers(-2**15, 2**15 - 1).map(str)),
    "i8": ("bigint", "int", "exact", st.integers(-2**63, 2**63 - 1).map(str)),
    "f4": ("real", "float4", "exact", st.floats(width=32).map(lambda x: _float(x, "real"))),
    "f8": ("double precision", "float8", "exact", st.floats().map(lambda x: _float(x, "float8"))),
    "n": ("numeric(38,10)", "decimal", "exact",
          st.decimals(-(10**28) + 1, 10**28 - 1, places=10).map(lambda d: f"'{d}'::numeric")),
    "b": ("boolean", "bool", "exact", st.booleans().map(str)),
    "t": ("text", "text", "exact", TEXT.map(_text)),
    "j": ("json", "text", "exact", JSON.map(lambda v: _text(json.dumps(v, ensure_ascii=False)) + "::json")),
    "by": ("bytea", "bytes", "exact", st.binary(max_size=40).map(lambda b: f"'\\x{b.hex()}'::bytea")),
    "d": ("date", "date", "exact", st.integers(FIRST_DAY, LAST_DAY).map(lambda d: f"date '1970-01-01' + {d}")),
    "ts": ("timestamp", "timestamp", "exact",
           st.builds(_timestamp, st.integers(FIRST_DAY, LAST_TIMESTAMP_DAY), DAY_US)),
    "tz": ("timestamptz", "timestamptz", "exact", st.builds(lambda d, us: f"{_timestamp(d, us)} AT TIME ZONE 'UTC'",
                                                            st.integers(FIRST_DAY, LAST_TIMESTAMP_DAY), DAY_US)),
    "tm": ("time", "time", "exact", DAY_US.map(lambda us: f"time '{_time_of_day(us)}'")),
    "nf": ("numeric", "text", "text", st.decimals(allow_nan=True)
           .map(lambda d: "'NaN'::numeric" if d.is_nan() else f"'{d}'::numeric")),   # no -NaN or sNaN there
    "iv": ("interval", "text", "text", st.builds(
        lambda m, d, sign, us: f"make_interval(months => {m}, days => {d}) {sign} (time '{_time_of_day(us)}' - "
                               "time '00:00:00')", st.integers(-10**6, 10**6), st.integers(-10**6, 10**6),
        st.sampled_from("+-"), DAY_US)),
    "ia": ("int[]", "text", "text", st.lists(st.integers(-2**31, 2**31 - 1) | st.none(), max_size=5).map(
        lambda xs: "'{" + ",".join("NULL" if x is None else str(x) for x in xs) + "}'::int[]")),
}
RANDOM_PATHS = (("table", "parquet"), ("query", "csv"))   # the table scan to Parquet, the query path to CSV


def test_random_values(pg, tmp_path_factory):
    random_sweep(pg_source(pg), RANDOM_COLUMNS, tmp_path_factory, 2, RANDOM_PATHS)


@pytest.mark.slow
def test_random_values_many(pg, tmp_path_factory):
    random_sweep(pg_source(pg), RANDOM_COLUMNS, tmp_path_factory, 40, RANDOM_PATHS)
