"""Source type → Arrow type + fidelity (exact / text / refused). One decision, used by `check` and by every read.

exact   the Arrow type round-trips every value the column can hold (select_expr may still be a value-preserving
        server-side expression, e.g. a guard that fails the read on a value Arrow cannot hold).
text    the value is delivered as its text form, computed on the server, exact in value (unbounded numeric, intervals,
        arrays, DECIMAL(>38), MySQL TIME, ...).
refused no faithful representation is known; the note names the `[exports.columns] <col> = "text"` override.

Traps of the drivers and DuckDB's scanners that the mappings below avoid (the full table: docs/types.md):
- PostgreSQL numeric without typmod or with precision > 38 becomes DOUBLE and NaN becomes 0 → text (`::text`).
- PostgreSQL numeric(p,s) NaN is read as 0 as well: the select_expr guards it — a NaN makes the server fail the read
  with a message naming the column (RIVET_SOURCE_UNREPRESENTABLE), never a silent 0.
- PostgreSQL interval: ISO 8601 text computed on the server ('P1Y2M3DT4H5M6.5S', 'P-1Y-2M3DT-4H', 'PT0S'), the same
  form as IntervalStyle = iso_8601 but independent of any session setting. Months, days and time stay separate,
  as PostgreSQL keeps them (no 30-day months, no justification).
- PostgreSQL arrays: text in PostgreSQL's array literal form ('{1,NULL,3}'). A list column is not chosen because CSV
  cannot carry lists and DuckDB fails on multi-dimensional arrays; the literal is exact for every array.
- PostgreSQL timestamptz → timestamp[us, tz=UTC] (same instant, the offset is not data). `±infinity` dates and
  timestamps have no Arrow value: the reader refuses them (RIVET_SOURCE_UNREPRESENTABLE) rather than write sentinels.
  So are timestamps after 294247-01-10 04:00:54.775806 (the scanner wraps them to negative years) and time
  24:00:00 (an Arrow time of day ends before it). Years before 1 and after 9999 are exact (CSV: '+100000-01-01').
- PostgreSQL char(n) comes without its pad blanks, as `char::text` gives it (PostgreSQL ignores them everywhere).
- MySQL TINYINT(1) → int8: the reader parses the server's text, so 2 and -1 stay (its DuckDB fallback turns off
  mysql_tinyint1_as_boolean, which makes them `true`).
- MySQL zero dates ('0000-00-00', '2024-00-10'): datetime/date/timestamp columns stay native, and a read that meets
  one fails naming the columns — the reader finds them in the server's text when it does not parse as a date (its
  DuckDB fallback, whose scanner reads them as NULL, asks the server for a check column instead); `= "text"` then
  exports the exact text ('0000-00-00 00:00:00').
- MySQL TIMESTAMP → timestamp[us, tz=UTC]: every connection rivet opens uses time_zone '+00:00'.
- MySQL FLOAT is read as CAST(… AS DOUBLE): the text protocol prints a FLOAT with 6 significant digits.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from engine.errors import RivetError
from engine.sources.base import SourceColumn

NATIVE_TYPE_KEY = b"rivet.native_type"
OVERRIDES = ("text", "skip")
# prefix of the message a guard expression makes the server raise; the readers turn it into a RivetError
GUARD_MARKER = "rivet-unrepresentable: "


@dataclass(frozen=True)
class ColumnMapping:
    name: str
    native_type: str          # as declared by the source
    arrow_type: pa.DataType   # type written to the output
    fidelity: str             # "exact" | "text" | "refused"
    select_expr: str          # dialect SQL for this column in the server-side SELECT list (quoted column or a cast)
    note: str = ""            # why text / refused, naming the [exports.columns] override
    # the guard in select_expr can instead be checked after a plain (fast, parallel) table scan: the reader looks
    # for the value the scanner would turn the unrepresentable one into and asks the server (PostgreSQL NaN → 0)
    scan_checkable: bool = False

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, metadata={NATIVE_TYPE_KEY: self.native_type.encode()})


def output_schema(mappings: list[ColumnMapping]) -> pa.Schema:
    return pa.schema([m.field for m in mappings if m.fidelity != "refused"])


def override_hint(*names: str) -> str:
    overrides = ", ".join(f'{n} = "text"' for n in names)
    return f'set [exports.columns] {overrides} to export {"its" if len(names) == 1 else "their"} text form (or "skip")'


def map_columns(engine: str, columns: list[SourceColumn], overrides: Mapping[str, str], dialect) -> list[ColumnMapping]:
    """One mapping per column, in order; columns overridden with "skip" are left out."""
    overrides = dict(overrides or {})
    names = [c.name for c in columns]
    for col, how in overrides.items():
        if how not in OVERRIDES:
            raise RivetError("RIVET_CONFIG_BAD_OVERRIDE", f"[exports.columns] {col} = {how!r} is not one of "
                             f"{', '.join(OVERRIDES)}", f'write {col} = "text" or {col} = "skip"')
        if col not in names:
            close = difflib.get_close_matches(col, names, n=1)
            raise RivetError("RIVET_CONFIG_UNKNOWN_COLUMN", f"[exports.columns] names {col!r}, which is not a column "
                             "of the relation",
                             f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(names))
    decide = {"postgres": _postgres, "mysql": _mysql, "mssql": _mssql}.get(engine)
    if decide is None:
        raise ValueError(f"no type mapping for engine {engine!r}")
    out = []
    for c in columns:
        override = overrides.get(c.name)
        if override == "skip":
            continue
        if override == "text":
            out.append(_text_override(engine, c, dialect))
            continue
        out.append(decide(c, dialect))
    return out


# ---- helpers ------------------------------------------------------------------------------------------------------

def _base(native: str) -> tuple[str, list[int]]:
    """'numeric(12,2)' → ('numeric', [12, 2]); 'timestamp(3) with time zone' → ('timestamp with time zone', [3])."""
    t = " ".join(native.strip().lower().split())
    args: list[int] = []
    m = re.search(r"\(([^()]*)\)", t)
    if m and re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*)?", m.group(1)):
        args = [int(x) for x in m.group(1).split(",")]
        t = (t[:m.start()] + t[m.end():]).strip()
        t = " ".join(t.split())
    return t, args


def _exact(c: SourceColumn, arrow: pa.DataType, expr: str, note: str = "") -> ColumnMapping:
    return ColumnMapping(c.name, c.native_type, arrow, "exact", expr, note)


def _as(dialect, expr: str, name: str) -> str:
    return f"{expr} AS {dialect.quote_ident(name)}"


def _text(c: SourceColumn, dialect, why: str, expr: str | None = None) -> ColumnMapping:
    q = dialect.quote_ident(c.name)
    return ColumnMapping(c.name, c.native_type, pa.string(), "text", _as(dialect, expr or dialect.cast_text(q), c.name),
                         f"{why}; delivered as text")


def _refused(c: SourceColumn, why: str) -> ColumnMapping:
    return ColumnMapping(c.name, c.native_type, pa.null(), "refused", "",
                         f"column {c.name}: {why}; {override_hint(c.name)}")


def _text_override(engine: str, c: SourceColumn, dialect) -> ColumnMapping:
    q = dialect.quote_ident(c.name)
    base, _ = _base(c.native_type)
    if engine == "mysql" and re.search(r"(blob|binary|geometry|point|linestring|polygon)", base):
        expr, why = f"HEX({q})", "text by [exports.columns] override (hex digits)"
    elif engine == "mysql" and base.split()[0] == "float":
        expr, why = dialect.cast_text(mysql_float_double(q)), "text by [exports.columns] override (as DOUBLE)"
    elif engine == "mssql":
        expr, why = mssql_text_expr(c.native_type, q)
    else:
        expr, why = dialect.cast_text(q), "text by [exports.columns] override"
    return ColumnMapping(c.name, c.native_type, pa.string(), "text", _as(dialect, expr, c.name), why)


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------

_PG_SIMPLE = {
    "smallint": pa.int16(), "int2": pa.int16(),
    "integer": pa.int32(), "int": pa.int32(), "int4": pa.int32(),
    "bigint": pa.int64(), "int8": pa.int64(),
    "real": pa.float32(), "float4": pa.float32(),
    "double precision": pa.float64(), "float8": pa.float64(),
    "boolean": pa.bool_(), "bool": pa.bool_(),
    "text": pa.string(), "character varying": pa.string(), "varchar": pa.string(),
    "character": pa.string(), "char": pa.string(), "bpchar": pa.string(), "name": pa.string(),
    "json": pa.string(), "jsonb": pa.string(), "uuid": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time without time zone": pa.time64("us"), "time": pa.time64("us"),
    "timestamp without time zone": pa.timestamp("us"), "timestamp": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"), "timestamptz": pa.timestamp("us", tz="UTC"),
    "oid": pa.uint32(),
}
# exact for every value but these, which no Arrow value of the type holds: the read fails naming the column
_PG_VALUE_REFUSED = {
    "date": "±infinity fails the read",
    "time without time zone": "24:00:00 fails the read", "time": "24:00:00 fails the read",
    **dict.fromkeys(("timestamp without time zone", "timestamp", "timestamp with time zone", "timestamptz"),
                    "±infinity or a value after 294247-01-10 04:00:54.775806 fails the read"),
}
_PG_TEXT_WHY = {
    "interval": "interval (months, days and time kept apart) has no exact Arrow type; ISO 8601 text",
    "time with time zone": "time with time zone would lose its offset", "timetz": "timetz would lose its offset",
    "money": "money is locale-formatted by the server",
}


def pg_interval_iso(expr: str) -> str:
    """ISO 8601 text of a PostgreSQL interval, the same as IntervalStyle iso_8601, built without session settings."""
    def part(field: str) -> str:
        return f"EXTRACT({field} FROM {expr})"

    def unit(field: str, letter: str) -> str:
        return f"CASE WHEN {part(field)} <> 0 THEN {part(field)}::bigint::text || '{letter}' ELSE '' END"

    secs = f"CASE WHEN {part('second')} <> 0 THEN trim_scale({part('second')}::numeric)::text || 'S' ELSE '' END"
    time = (f"CASE WHEN {part('hour')} <> 0 OR {part('minute')} <> 0 OR {part('second')} <> 0 "
            f"THEN 'T' || {unit('hour', 'H')} || {unit('minute', 'M')} || {secs} ELSE '' END")
    body = f"'P' || {unit('year', 'Y')} || {unit('month', 'M')} || {unit('day', 'D')} || {time}"
    return f"CASE WHEN {expr} IS NULL THEN NULL ELSE COALESCE(NULLIF({body}, 'P'), 'PT0S') END"


def _postgres(c: SourceColumn, d) -> ColumnMapping:
    q = d.quote_ident(c.name)
    native = c.native_type.strip()
    if native.endswith("[]"):
        return _text(c, d, "array in PostgreSQL's array literal form (lists do not survive CSV)")
    base, args = _base(native)
    if base in ("numeric", "decimal"):
        if not args:
            return _text(c, d, "numeric without precision may hold more than 38 digits or NaN")
        p, s = args[0], (args[1] if len(args) > 1 else 0)
        if p > 38 or s < 0 or s > p:
            return _text(c, d, f"numeric({p},{s}) does not fit decimal128")
        # NaN fits no decimal and DuckDB would read it as 0: make the server refuse it, naming the column. The
        # failing cast references the column so it is evaluated per row, not folded at plan time.
        msg = d.literal(f"{GUARD_MARKER}column {c.name} holds NaN; {override_hint(c.name)}")
        guard = (f"CASE WHEN {q} = 'NaN' THEN ({msg} || left({q}::text, 0))::numeric({p},{s}) ELSE {q} END")
        return ColumnMapping(c.name, c.native_type, pa.decimal128(p, s), "exact", _as(d, guard, c.name),
                             "a NaN value fails the read", scan_checkable=True)
    if base in _PG_SIMPLE:
        return _exact(c, _PG_SIMPLE[base], q, _PG_VALUE_REFUSED.get(base, ""))
    if base in ("interval",) or base.startswith("interval "):
        return _text(c, d, _PG_TEXT_WHY["interval"], pg_interval_iso(q))
    if base in _PG_TEXT_WHY:
        return _text(c, d, _PG_TEXT_WHY[base])
    # enums, domains, ranges, inet, xml, bit, geometric and extension types: PostgreSQL's text output is canonical
    # (it is what the type's input function reads back), so text is exact in value.
    return _text(c, d, f"{native} has no Arrow equivalent; PostgreSQL's text form")


# ---- MySQL / MariaDB ----------------------------------------------------------------------------------------------

_MY_INT = {"tinyint": (pa.int8(), pa.uint8()), "smallint": (pa.int16(), pa.uint16()),
           "mediumint": (pa.int32(), pa.uint32()), "int": (pa.int32(), pa.uint32()),
           "integer": (pa.int32(), pa.uint32()), "bigint": (pa.int64(), pa.uint64())}
_MY_STRING = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json", "enum", "set",
              "uuid", "inet4", "inet6")
_MY_BINARY = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")
MYSQL_TEMPORAL = ("date", "datetime", "timestamp")


def mysql_float_double(q: str) -> str:
    """A FLOAT as the DOUBLE holding the same value: the text protocol prints a DOUBLE with every digit it needs
    (3.1415927410125732) and a FLOAT with six (3.14159; 16777216 as 16777200)."""
    return f"CAST({q} AS DOUBLE)"


def _mysql(c: SourceColumn, d) -> ColumnMapping:
    q = d.quote_ident(c.name)
    native = c.native_type.strip().lower()
    # enum('a','b') / set(...) carry quoted lists that _base must not parse
    head = re.match(r"[a-z0-9_ ]+", native)
    head_word = head.group(0).split()[0] if head else native
    if head_word in ("enum", "set"):
        return _exact(c, pa.string(), q)
    base, args = _base(native)
    words = base.split()
    kind = words[0] if words else ""
    unsigned = "unsigned" in words
    if kind in _MY_INT:
        # tinyint(1) is an integer here: the reader keeps DuckDB from turning it into a boolean
        return _exact(c, _MY_INT[kind][1 if unsigned else 0], q)
    if kind in ("decimal", "numeric", "dec", "fixed"):
        p, s = (args + [10, 0])[:2] if args else (10, 0)
        if len(args) == 1:
            s = 0
        if p > 38:
            return _text(c, d, f"decimal({p},{s}) does not fit decimal128")
        return _exact(c, pa.decimal128(p, s), q)
    if kind == "float":   # the text protocol prints FLOAT with 6 digits: as DOUBLE it prints all of the float32
        return _exact(c, pa.float32(), _as(d, mysql_float_double(q), c.name))
    if kind in ("double", "real"):   # REAL is DOUBLE unless sql_mode REAL_AS_FLOAT, and then it reads as "float"
        return _exact(c, pa.float64(), q)
    if kind == "bit":
        n = args[0] if args else 1
        if n == 1:
            return _exact(c, pa.bool_(), q)
        return _exact(c, pa.uint64(), _as(d, f"CAST({q} AS UNSIGNED)", c.name))
    if kind == "year":
        return _exact(c, pa.int16(), q)
    if kind == "date":
        return _exact(c, pa.date32(), q, "a zero date fails the read")
    if kind == "datetime":
        return _exact(c, pa.timestamp("us"), q, "a zero date fails the read")
    if kind == "timestamp":
        return _exact(c, pa.timestamp("us", tz="UTC"), q, "a zero date fails the read")
    if kind == "time":
        return _text(c, d, "TIME is a signed duration up to 838:59:59; MySQL's text form")
    if kind in _MY_STRING:
        return _exact(c, pa.string(), q)
    if kind in _MY_BINARY:
        return _exact(c, pa.binary(), q)
    return _refused(c, f"type {c.native_type} has no known exact representation")


# ---- SQL Server ---------------------------------------------------------------------------------------------------
# pymssql (FreeTDS, TDS 7.4) hands the reader Python values, from which it builds the Arrow arrays. Where a Python
# value would lose something, the select_expr makes the server send an exact form instead:
# - money / smallmoney: CAST to decimal(19,4) / decimal(10,4), the same values through the driver's exact decimal path.
# - datetime2(7): Python datetimes stop at microseconds and would cut the 7th digit (100 ns): ISO 8601 text computed
#   by the server ('2024-01-02T03:04:05.1234567'; fixed width, so it sorts like the instants). datetime2(0..6) exact.
# - time(7): nanoseconds since midnight (DATEDIFF_BIG) → time64[ns], exact; time(0..6) → time64[us].
# - datetimeoffset: ISO 8601 text with the value's own offset ('2024-01-02T03:04:05.1234567+02:00'); a UTC timestamp
#   would drop the offset.
# - uniqueidentifier: its canonical text, uppercase as SQL Server prints it.
# - datetime → timestamp[us] holding SQL Server's own rounded milliseconds (.000 / .003 / .007).
# - sql_variant is refused (each row may hold another type); xml is SQL Server's text of the document.

_MS_SIMPLE = {"bit": pa.bool_(), "tinyint": pa.uint8(), "smallint": pa.int16(), "int": pa.int32(),
              "bigint": pa.int64(), "real": pa.float32(), "date": pa.date32(), "datetime": pa.timestamp("us"),
              "smalldatetime": pa.timestamp("us")}
_MS_STRING = ("char", "varchar", "nchar", "nvarchar", "text", "ntext", "sysname")
_MS_BINARY = ("binary", "varbinary", "image", "timestamp", "rowversion")   # timestamp = rowversion in T-SQL
_MS_MONEY = {"money": (19, 4), "smallmoney": (10, 4)}
_MS_TEMPORAL = ("date", "time", "datetime", "datetime2", "smalldatetime", "datetimeoffset")


def _mssql_kind(native: str) -> tuple[str, list[int]]:
    """'nvarchar(max)' → ('nvarchar', []); 'decimal(38,10)' → ('decimal', [38, 10]); 'datetime2' → ('datetime2', [])."""
    t = " ".join(native.strip().lower().split())
    return t.split("(")[0].strip(), _base(t)[1]


def _mssql(c: SourceColumn, d) -> ColumnMapping:
    q = d.quote_ident(c.name)
    kind, args = _mssql_kind(c.native_type)
    if kind in ("decimal", "numeric"):   # SQL Server's precision is at most 38: always a decimal128
        p, s = (args[0], args[1] if len(args) > 1 else 0) if args else (18, 0)
        return _exact(c, pa.decimal128(p, s), q)
    if kind in _MS_MONEY:
        p, s = _MS_MONEY[kind]
        return _exact(c, pa.decimal128(p, s), _as(d, f"CAST({q} AS decimal({p},{s}))", c.name))
    if kind == "float":   # float(n) with n <= 24 is a real
        return _exact(c, pa.float32() if args and args[0] <= 24 else pa.float64(), q)
    if kind in _MS_SIMPLE:
        return _exact(c, _MS_SIMPLE[kind], q)
    if kind == "datetime2":
        if (args[0] if args else 7) <= 6:
            return _exact(c, pa.timestamp("us"), q)
        return _text(c, d, "datetime2(7) keeps 100 ns, one digit more than the driver's microseconds; ISO 8601 "
                     "text ('2024-01-02T03:04:05.1234567')", f"STUFF(CONVERT(varchar(27), {q}, 121), 11, 1, 'T')")
    if kind == "time":
        if (args[0] if args else 7) <= 6:
            return _exact(c, pa.time64("us"), q)
        return _exact(c, pa.time64("ns"), _as(d, f"DATEDIFF_BIG(nanosecond, CAST('00:00:00' AS time(7)), {q})",
                                              c.name), "read as nanoseconds since midnight (100 ns kept)")
    if kind == "datetimeoffset":
        return _text(c, d, "datetimeoffset keeps its own UTC offset, which a UTC timestamp would drop; ISO 8601 "
                     "text ('2024-01-02T03:04:05.1234567+02:00')",
                     f"REPLACE(STUFF(CONVERT(varchar(34), {q}, 121), 11, 1, 'T'), ' ', '')")
    if kind in _MS_STRING:
        return _exact(c, pa.string(), q)
    if kind == "uniqueidentifier":
        return _exact(c, pa.string(), _as(d, f"CONVERT(char(36), {q})", c.name), "canonical text (uppercase)")
    if kind in _MS_BINARY:
        return _exact(c, pa.binary(), q)
    if kind == "xml":
        return _text(c, d, "xml has no Arrow type; SQL Server's text of the document")
    if kind == "hierarchyid":
        return _text(c, d, "hierarchyid has no Arrow type; its canonical path ('/1/3/')", f"{q}.ToString()")
    if kind == "sql_variant":
        return _refused(c, "sql_variant holds a value of another type in each row (no single Arrow type)")
    if kind in ("geometry", "geography"):
        return _refused(c, f"{kind} has no Arrow type (\"text\" exports its WKT, without the SRID)")
    return _refused(c, f"type {c.native_type} has no known exact representation")


def mssql_text_expr(native: str, q: str) -> tuple[str, str]:
    """The text form of an [exports.columns] "text" override, with the exact CONVERT style where the default one
    would round (float prints 6 digits, money 2, datetime 'Jan  2 2024  3:04AM')."""
    kind, _ = _mssql_kind(native)
    why = "text by [exports.columns] override"
    if kind in _MS_TEMPORAL:
        return f"CONVERT(nvarchar(40), {q}, 121)", why
    if kind in ("float", "real"):
        return f"CONVERT(nvarchar(40), {q}, 3)", why      # 17 significant digits: every value round-trips
    if kind in _MS_MONEY:
        return f"CONVERT(nvarchar(40), {q}, 2)", why      # all four decimals
    if kind in _MS_BINARY:
        return f"CONVERT(varchar(max), {q}, 2)", why + " (hex digits)"
    if kind in ("hierarchyid", "geometry", "geography"):
        return f"{q}.ToString()", why
    return f"CONVERT(nvarchar(max), {q})", why
