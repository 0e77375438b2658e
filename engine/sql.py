"""SQL text per dialect: quoting, literals, and the few query shapes the engine sends to a source.

Identifiers are always quoted (embedded quote characters doubled); values become escaped literals. Nothing a user
typed is pasted into SQL as is — except the text of a `query` export, which is the user's own SQL by definition and
is only ever wrapped as a derived table.
"""
from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from engine.errors import ExitClass, RivetError
from engine.sources.base import Relation

QUERY_ALIAS = "rivet_q"


class Dialect:
    name: str = ""
    quote_char: str = '"'
    max_name_parts: int = 2   # schema.table

    def byte_length(self, expr: str) -> str:
        return f"octet_length({expr})"

    # ---- identifiers -------------------------------------------------------------------------------------------
    def quote_ident(self, name: str) -> str:
        if not isinstance(name, str) or name == "":
            raise RivetError("RIVET_CONFIG_BAD_IDENTIFIER", f"empty or invalid identifier {name!r}",
                             "name the column or table exactly as the source spells it")
        if "\x00" in name:
            raise RivetError("RIVET_CONFIG_BAD_IDENTIFIER", f"identifier {name!r} contains a NUL byte",
                             "remove the NUL byte from the name")
        q = self.quote_char
        return q + name.replace(q, q + q) + q

    def split_table(self, name: str) -> list[str]:
        """'schema.table' → ['schema', 'table']. A part already written quoted ("a.b" / `a.b`) keeps its dots;
        anything else is taken literally, quotes and semicolons included, and later quoted as a whole."""
        parts: list[str] = []
        i, n, q = 0, len(name), self.quote_char
        while True:
            if i < n and name[i] == q:
                j, buf = i + 1, []
                while j < n:
                    if name[j] == q:
                        if j + 1 < n and name[j + 1] == q:
                            buf.append(q)
                            j += 2
                            continue
                        break
                    buf.append(name[j])
                    j += 1
                if j < n and (j + 1 == n or name[j + 1] == "."):   # a well-formed quoted part
                    parts.append("".join(buf))
                    i = j + 1
                else:                                              # not a quoted part after all: literal text
                    end = name.find(".", i)
                    end = n if end < 0 else end
                    parts.append(name[i:end])
                    i = end
            else:
                end = name.find(".", i)
                end = n if end < 0 else end
                parts.append(name[i:end])
                i = end
            if i >= n:
                break
            i += 1  # skip the dot
            if i >= n:
                parts.append("")
                break
        if len(parts) > self.max_name_parts or any(p == "" for p in parts):
            raise RivetError("RIVET_CONFIG_BAD_TABLE", f"table name {name!r} is not 'table' or 'schema.table'",
                             f"quote a part that contains a dot: {self.quote_char}my.table{self.quote_char}")
        return parts

    def quote_table(self, name: str) -> str:
        return ".".join(self.quote_ident(p) for p in self.split_table(name))

    # ---- literals ----------------------------------------------------------------------------------------------
    def literal(self, value) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, Decimal):
            if not value.is_finite():
                return self._special_number(value, "numeric")
            return format(value, "f")
        if isinstance(value, float):
            if not math.isfinite(value):
                return self._special_number(value, "float")
            return repr(value)
        if isinstance(value, str):
            if "\x00" in value:
                raise RivetError("RIVET_SQL_NUL_IN_VALUE", "a value contains a NUL byte, which SQL text cannot carry",
                                 "remove the NUL byte (check the stored cursor or parameter)")
            return self._string(value)
        if isinstance(value, dt.datetime):   # before date: datetime is a date
            return self._timestamp(value)
        if isinstance(value, dt.date):
            return f"DATE '{value.isoformat()}'"
        if isinstance(value, dt.time):
            return f"TIME '{value.isoformat()}'"
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(bytes(value))
        raise RivetError("RIVET_SQL_UNSUPPORTED_VALUE", f"cannot write a {type(value).__name__} value as SQL",
                         "this is a bug in rivet; report it", ExitClass.INTERNAL)

    def _string(self, s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    def _timestamp(self, v: dt.datetime) -> str:
        raise NotImplementedError

    def _bytes(self, b: bytes) -> str:
        raise NotImplementedError

    def _special_number(self, v, kind: str) -> str:
        raise RivetError("RIVET_SQL_UNSUPPORTED_VALUE", f"{self.name} has no literal for {v}",
                         "NaN and infinity cannot be compared on this source")

    # ---- relations and query shapes ----------------------------------------------------------------------------
    def relation_sql(self, rel: Relation) -> str:
        if (rel.table is None) == (rel.query is None):
            raise RivetError("RIVET_INTERNAL_RELATION", "a relation needs exactly one of table or query",
                             "this is a bug in rivet; report it", ExitClass.INTERNAL)
        if rel.table is not None:
            return self.quote_table(rel.table)
        assert rel.query is not None   # exactly one of table/query, checked above
        # the newline keeps a trailing "-- comment" in the query from swallowing the closing parenthesis
        return f"({strip_query(rel.query)}\n) AS {QUERY_ALIAS}"

    def _tail(self, where: list[str] | tuple = (), order_by: list[str] | tuple = ()) -> str:
        sql = ""
        if where:
            sql += " WHERE " + " AND ".join(f"({w})" for w in where)
        if order_by:
            sql += " ORDER BY " + ", ".join(order_by)
        return sql

    def select(self, relation: Relation, select_exprs: list[str], where: list[str] | tuple = (),
               order_by: list[str] | tuple = ()) -> str:
        """Always starts with 'SELECT ' followed by the select list (the readers rely on it)."""
        cols = ", ".join(select_exprs) if select_exprs else "*"
        return f"SELECT {cols} FROM {self.relation_sql(relation)}" + self._tail(where, order_by)

    def count(self, relation: Relation, where: list[str] | tuple = ()) -> str:
        return f"SELECT COUNT(*) FROM {self.relation_sql(relation)}" + self._tail(where)

    def min_max(self, relation: Relation, column_expr: str, where: list[str] | tuple = ()) -> str:
        return f"SELECT MIN({column_expr}), MAX({column_expr}) FROM {self.relation_sql(relation)}" + self._tail(where)

    def cast_text(self, expr: str) -> str:
        raise NotImplementedError

    @staticmethod
    def _days(days) -> int:
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise RivetError("RIVET_CONFIG_BAD_DAYS", f"days must be a whole number >= 0, got {days!r}",
                             "set days_window to a whole number of days")
        return days

    def now_minus_days(self, days: int) -> str:
        raise NotImplementedError

    def unix_now_minus_days(self, days: int) -> str:
        raise NotImplementedError


class PostgresDialect(Dialect):
    name = "postgres"
    quote_char = '"'

    def byte_length(self, expr: str) -> str:
        """The value's size in bytes, computed by the server (max_value_mb, engine/layouts.py)."""
        return f"CAST(octet_length({expr}) AS bigint)"

    def _string(self, s: str) -> str:
        # E'' strings always treat backslash as an escape, so the result is the same whatever
        # standard_conforming_strings says; plain '' strings are used when there is no backslash.
        if "\\" in s:
            return "E'" + s.replace("\\", "\\\\").replace("'", "''") + "'"
        return "'" + s.replace("'", "''") + "'"

    def _timestamp(self, v: dt.datetime) -> str:
        if v.tzinfo is not None and v.utcoffset() is not None:
            return f"TIMESTAMPTZ '{v.isoformat(sep=' ')}'"
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"

    def _bytes(self, b: bytes) -> str:
        return f"'\\x{b.hex()}'::bytea"

    def _special_number(self, v, kind: str) -> str:
        text = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        return f"'{text}'::" + ("numeric" if kind == "numeric" else "float8")

    def cast_text(self, expr: str) -> str:
        return f"({expr})::text"

    def now_minus_days(self, days: int) -> str:
        return f"(now() - make_interval(days => {self._days(days)}))"

    def unix_now_minus_days(self, days: int) -> str:
        return f"(EXTRACT(EPOCH FROM now())::bigint - {self._days(days) * 86400})"


class MySQLDialect(Dialect):
    """MySQL 8 and MariaDB. `backslash_escapes=False` when the server runs with sql_mode NO_BACKSLASH_ESCAPES
    (then a backslash is an ordinary character and must not be doubled)."""
    name = "mysql"
    quote_char = "`"

    def __init__(self, backslash_escapes: bool = True):
        self.backslash_escapes = backslash_escapes

    def byte_length(self, expr: str) -> str:
        return f"LENGTH({expr})"   # bytes, whatever the character set (CHAR_LENGTH counts characters)

    def _string(self, s: str) -> str:
        if self.backslash_escapes:
            s = s.replace("\\", "\\\\")
        return "'" + s.replace("'", "''") + "'"

    def _timestamp(self, v: dt.datetime) -> str:
        # MySQL datetime literals carry no zone (MariaDB rejects offsets): aware values are converted to UTC,
        # which is the session time zone rivet sets on every MySQL connection it opens.
        if v.tzinfo is not None and v.utcoffset() is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"

    def _bytes(self, b: bytes) -> str:
        return f"X'{b.hex()}'" if b else "''"

    def cast_text(self, expr: str) -> str:
        return f"CAST({expr} AS CHAR)"

    def now_minus_days(self, days: int) -> str:
        return f"(NOW(6) - INTERVAL {self._days(days)} DAY)"

    def unix_now_minus_days(self, days: int) -> str:
        return f"(UNIX_TIMESTAMP() - {self._days(days) * 86400})"


def strip_query(query: str) -> str:
    """A query's text as a derived table body: surrounding blanks and trailing semicolons removed."""
    q = query.strip()
    while q.endswith(";"):
        q = q[:-1].rstrip()
    if not q:
        raise RivetError("RIVET_CONFIG_EMPTY_QUERY", "the export's query is empty", "write a SELECT statement")
    return q


def check_select(query: str) -> None:
    """An export's query must be one statement that reads: SELECT (WITH ... SELECT, VALUES, a parenthesised
    SELECT). DML, DDL or several statements are refused here with that reason, not later with a server's raw
    "syntax error at or near ...". Strings, quoted names and comments are tokenised (sqlparse), so a ';' inside
    them is not a statement break."""
    import sqlparse
    statements = [s for s in sqlparse.parse(query) if str(s).strip(" \t\r\n;")]
    if len(statements) != 1:
        raise RivetError("RIVET_CONFIG_QUERY_NOT_SELECT", f"the export's query holds {len(statements)} statements",
                         "a query must be exactly one SELECT (or WITH ... SELECT); remove the others")
    stmt = statements[0]
    first = stmt.token_first(skip_cm=True)
    word = first.normalized.upper() if first is not None else ""
    if stmt.get_type() != "SELECT" and word not in ("VALUES", "TABLE") and not word.startswith("("):
        kind = stmt.get_type()
        what = (f"is a {kind} statement" if kind != "UNKNOWN" else
                f"starts with {word.split()[0]!r}" if word else "is empty")
        raise RivetError("RIVET_CONFIG_QUERY_NOT_SELECT", f"the export's query {what}, not a SELECT",
                         "a query must be exactly one SELECT (or WITH ... SELECT); rivet only reads")


def dialect_for(engine: str, **kw) -> Dialect:
    if engine == "postgres":
        return PostgresDialect()
    if engine == "mysql":
        return MySQLDialect(**kw)
    if engine == "mssql":
        return MssqlDialect()
    raise ValueError(engine)


class MssqlDialect(Dialect):
    """SQL Server (T-SQL): identifiers in [brackets] (a `]` inside is doubled), strings as N'…' (Unicode) literals.

    Date/time values are written so that the server converts them to the compared column's own type, exactly and
    independent of SET DATEFORMAT / LANGUAGE:
    - a naive datetime is an untyped ISO 8601 string ('2024-01-02T03:04:05.123'). A typed datetime2(7) literal
      would make a `datetime` column compare by its exact 1/300 s value (…05.1233333 > …05.123000) and re-select
      the last row of every incremental run; the string becomes a `datetime` there and a `datetime2` elsewhere.
      Three fractional digits when the value has no finer part (a `datetime` accepts at most three), else six.
    - an aware datetime is a datetimeoffset(7); a date CONVERT(date, 'yyyymmdd', 112); a time a time(7).
    """
    name = "mssql"
    quote_char = "["

    def quote_ident(self, name: str) -> str:
        super().quote_ident(name)   # the same refusals (empty, NUL)
        return "[" + name.replace("]", "]]") + "]"

    def byte_length(self, expr: str) -> str:
        return f"CAST(DATALENGTH({expr}) AS bigint)"

    def split_table(self, name: str) -> list[str]:
        """'schema.table' → ['schema', 'table']. A part written in brackets ([my.schema].[t]) keeps its dots and
        reads `]]` as `]`; anything else is taken literally, quotes and semicolons included, and quoted as a whole."""
        parts: list[str] = []
        i, n = 0, len(name)
        while True:
            end = -1
            if i < n and name[i] == "[":
                j, buf = i + 1, []
                while j < n:
                    if name[j] == "]":
                        if j + 1 < n and name[j + 1] == "]":
                            buf.append("]")
                            j += 2
                            continue
                        break
                    buf.append(name[j])
                    j += 1
                if j < n and (j + 1 == n or name[j + 1] == "."):   # a well-formed bracketed part
                    parts.append("".join(buf))
                    end = j + 1
            if end < 0:                                              # plain (or malformed bracketed) text
                end = name.find(".", i)
                end = n if end < 0 else end
                parts.append(name[i:end])
            i = end
            if i >= n:
                break
            i += 1  # skip the dot
            if i >= n:
                parts.append("")
                break
        if len(parts) > self.max_name_parts or any(p == "" for p in parts):
            raise RivetError("RIVET_CONFIG_BAD_TABLE", f"table name {name!r} is not 'table' or 'schema.table'",
                             "put a part that contains a dot in brackets: [my.table]")
        return parts

    def literal(self, value) -> str:
        if isinstance(value, bool):          # T-SQL has no TRUE / FALSE
            return "1" if value else "0"
        if isinstance(value, dt.datetime):
            return self._timestamp(value)
        if isinstance(value, dt.date):
            return f"CONVERT(date, '{value.year:04d}{value.month:02d}{value.day:02d}', 112)"
        if isinstance(value, dt.time):
            return f"CAST('{value.isoformat()}' AS time(7))"
        return super().literal(value)

    def _string(self, s: str) -> str:
        return "N'" + s.replace("'", "''") + "'"

    def _timestamp(self, v: dt.datetime) -> str:
        text = v.isoformat(timespec="milliseconds" if v.microsecond % 1000 == 0 else "microseconds")
        if v.tzinfo is not None and v.utcoffset() is not None:
            return f"CAST('{text}' AS datetimeoffset(7))"
        return f"'{text}'"

    def _bytes(self, b: bytes) -> str:
        return "0x" + b.hex()

    # Result columns get names: pymssql drops unnamed ones from some results. COUNT(*) is an int (overflows at 2^31).
    def count(self, relation: Relation, where: list[str] | tuple = ()) -> str:
        return f"SELECT COUNT_BIG(*) AS n FROM {self.relation_sql(relation)}" + self._tail(where)

    def min_max(self, relation: Relation, column_expr: str, where: list[str] | tuple = ()) -> str:
        return (f"SELECT MIN({column_expr}) AS lo, MAX({column_expr}) AS hi FROM {self.relation_sql(relation)}"
                + self._tail(where))

    def cast_text(self, expr: str) -> str:
        return f"CONVERT(nvarchar(max), {expr})"

    def now_minus_days(self, days: int) -> str:
        return f"DATEADD(day, -{self._days(days)}, SYSUTCDATETIME())"

    def unix_now_minus_days(self, days: int) -> str:
        return f"(DATEDIFF_BIG(second, '19700101', SYSUTCDATETIME()) - {self._days(days) * 86400})"
