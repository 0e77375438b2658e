"""Dialect SQL: golden strings per dialect, and injection attempts proven harmless on the real servers.

The golden strings pin the exact text; the live tests send identifiers and literals full of quotes, backslashes,
semicolons and comment markers to PostgreSQL and MariaDB and check that what comes back is the very value sent.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from engine.errors import RivetError
from engine.sources.base import Relation
from engine.sql import MySQLDialect, PostgresDialect

PG, MY = PostgresDialect(), MySQLDialect()
NASTY_STRINGS = ["it's", "back\\slash", "\\'; DROP TABLE x; --", "-- comment", "/* c */", "two '' quotes",
                 "tab\tnew\nline", "unicode ✓ é 中", "\\", "'", "\"dq\"", "`bt`", "%s %(x)s ?", "$1 $$ $q$", ""]


# ---- golden strings -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, name, want", [
    (PG, "orders", '"orders"'),
    (PG, 'we"ird', '"we""ird"'),
    (PG, "Mixed Case", '"Mixed Case"'),
    (MY, "orders", "`orders`"),
    (MY, "we`ird", "`we``ird`"),
    (MY, 'dq"x', '`dq"x`'),
])
def test_quote_ident(d, name, want):
    assert d.quote_ident(name) == want


@pytest.mark.parametrize("d, table, want", [
    (PG, "orders", '"orders"'),
    (PG, "public.orders", '"public"."orders"'),
    (PG, '"my.schema"."t.x"', '"my.schema"."t.x"'),
    (PG, 'orders"; DROP TABLE users; --', '"orders""; DROP TABLE users; --"'),
    (PG, 'a."b;c"', '"a"."b;c"'),
    (MY, "shop.orders", "`shop`.`orders`"),
    (MY, "orders`; DROP TABLE users; --", "`orders``; DROP TABLE users; --`"),
    (MY, "`db.x`.`t`", "`db.x`.`t`"),
])
def test_quote_table(d, table, want):
    assert d.quote_table(table) == want


@pytest.mark.parametrize("d", [PG, MY])
@pytest.mark.parametrize("bad", ["", "a.b.c", "a.", ".b", "x\x00y"])
def test_quote_table_refuses_malformed(d, bad):
    with pytest.raises(RivetError) as e:
        d.quote_table(bad)
    assert e.value.code.startswith("RIVET_CONFIG_")


@pytest.mark.parametrize("d, value, want", [
    (PG, None, "NULL"), (MY, None, "NULL"),
    (PG, True, "TRUE"), (MY, False, "FALSE"),
    (PG, -42, "-42"), (MY, 2**64 - 1, "18446744073709551615"),
    (PG, Decimal("1E+3"), "1000"), (MY, Decimal("-0.000001"), "-0.000001"),
    (PG, Decimal("NaN"), "'NaN'::numeric"), (PG, float("-inf"), "'-Infinity'::float8"),
    (PG, 1.5, "1.5"), (MY, 1e-05, "1e-05"),
    (PG, "it's", "'it''s'"),
    (PG, "a\\b'c", "E'a\\\\b''c'"),
    (MY, "it's", "'it''s'"),
    (MY, "a\\b'c", "'a\\\\b''c'"),
    (MY, "x'; DROP TABLE t; --", "'x''; DROP TABLE t; --'"),
    (PG, dt.date(2024, 2, 29), "DATE '2024-02-29'"),
    (MY, dt.date(2024, 2, 29), "DATE '2024-02-29'"),
    (PG, dt.datetime(2024, 1, 2, 3, 4, 5, 6), "TIMESTAMP '2024-01-02 03:04:05.000006'"),
    (PG, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
     "TIMESTAMPTZ '2024-01-02 03:04:05+05:30'"),
    (MY, dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
     "TIMESTAMP '2024-01-02 05:04:05.123456'"),
    (PG, b"\x00\xff'", "'\\x00ff27'::bytea"),
    (MY, b"\x00\xff'", "X'00ff27'"),
])
def test_literal(d, value, want):
    assert d.literal(value) == want


def test_mysql_no_backslash_escapes_mode_keeps_backslashes():
    assert MySQLDialect(backslash_escapes=False).literal("a\\b'c") == "'a\\b''c'"


@pytest.mark.parametrize("d", [PG, MY])
def test_literal_refuses_nul_and_unknown_types(d):
    with pytest.raises(RivetError) as e:
        d.literal("a\x00b")
    assert e.value.code == "RIVET_SQL_NUL_IN_VALUE"
    with pytest.raises(RivetError):
        d.literal(object())
    if d is MY:
        with pytest.raises(RivetError):
            d.literal(float("nan"))


def test_query_shapes_postgres():
    t = Relation(table="public.orders")
    q = Relation(query="SELECT * FROM orders -- trailing comment\n;  ")
    assert PG.relation_sql(t) == '"public"."orders"'
    assert PG.relation_sql(q) == "(SELECT * FROM orders -- trailing comment\n) AS rivet_q"
    assert PG.select(t, ['"id"', '"n"::text AS "n"'], ['"id" > 5', '"x" = \'a\''], ['"id"']) == (
        'SELECT "id", "n"::text AS "n" FROM "public"."orders" WHERE ("id" > 5) AND ("x" = \'a\') ORDER BY "id"')
    assert PG.select(t, []) == 'SELECT * FROM "public"."orders"'
    assert PG.count(t, ['"id" BETWEEN 1 AND 10']) == (
        'SELECT COUNT(*) FROM "public"."orders" WHERE ("id" BETWEEN 1 AND 10)')
    assert PG.min_max(t, '"id"') == 'SELECT MIN("id"), MAX("id") FROM "public"."orders"'
    assert PG.now_minus_days(7) == "(now() - make_interval(days => 7))"
    assert PG.unix_now_minus_days(2) == "(EXTRACT(EPOCH FROM now())::bigint - 172800)"


def test_query_shapes_mysql():
    t = Relation(table="orders")
    assert MY.select(t, ["`id`"], ["`id` > 5"], ["`id`"]) == "SELECT `id` FROM `orders` WHERE (`id` > 5) ORDER BY `id`"
    assert MY.count(Relation(query="select 1 x")) == "SELECT COUNT(*) FROM (select 1 x\n) AS rivet_q"
    assert MY.min_max(t, "`created_at`") == "SELECT MIN(`created_at`), MAX(`created_at`) FROM `orders`"
    assert MY.now_minus_days(30) == "(NOW(6) - INTERVAL 30 DAY)"
    assert MY.unix_now_minus_days(1) == "(UNIX_TIMESTAMP() - 86400)"


@pytest.mark.parametrize("d", [PG, MY])
@pytest.mark.parametrize("days", [-1, 1.5, "7", True])
def test_days_must_be_whole(d, days):
    with pytest.raises(RivetError):
        d.now_minus_days(days)


@pytest.mark.parametrize("d", [PG, MY])
def test_relation_needs_exactly_one(d):
    with pytest.raises(RivetError):
        d.relation_sql(Relation())
    with pytest.raises(RivetError):
        d.relation_sql(Relation(table="t", query="select 1"))


# ---- the same SQL against the real servers ------------------------------------------------------------------------

def test_postgres_literals_round_trip(pg):
    for s in NASTY_STRINGS:
        assert pg.sql(f"SELECT {PG.literal(s)}")[0][0] == s, s
    # the same with the legacy setting that makes backslashes escapes in plain strings
    import psycopg
    with psycopg.connect(pg.url, autocommit=True) as con:
        con.execute("SET standard_conforming_strings = off")
        con.execute("SET escape_string_warning = off")
        for s in NASTY_STRINGS:
            assert con.execute(f"SELECT {PG.literal(s)}").fetchone()[0] == s, s
    values = [Decimal("12345678901234567890.123456789"), Decimal("NaN"), -1.25, 2**63 - 1, True, None,
              dt.date(1999, 12, 31), dt.datetime(2024, 1, 2, 3, 4, 5, 6), b"\x00\x01'\\"]
    for v in values:
        got = pg.sql(f"SELECT {PG.literal(v)}")[0][0]
        assert (got == v) or (isinstance(v, Decimal) and v.is_nan() and got.is_nan()), v
    aware = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    assert pg.sql(f"SELECT {PG.literal(aware)}")[0][0] == aware


def test_mysql_literals_round_trip(mysql):
    for s in NASTY_STRINGS:
        assert mysql.sql(f"SELECT {MY.literal(s)}")[0][0] == s, s
    for v in [Decimal("-99999999999999999999999999999999999.123456789"), 2**64 - 1, -(2**63), -1.5, None,
              dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 6)]:
        got = mysql.sql(f"SELECT {MY.literal(v)}")[0][0]
        assert got == v, (v, got)
    raw = b"\x00\x01'\\"
    assert bytes(mysql.sql(f"SELECT {MY.literal(raw)}")[0][0]) == raw


def test_mysql_literals_under_no_backslash_escapes(mysql):
    con = mysql.connect()
    try:
        cur = con.cursor()
        cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        d = MySQLDialect(backslash_escapes=False)
        for s in NASTY_STRINGS:
            cur.execute(f"SELECT {d.literal(s)}")
            assert cur.fetchall()[0][0] == s, s
    finally:
        con.close()


@pytest.mark.parametrize("name", ['we"ird; DROP TABLE x; --', "back`tick", "semi;colon", "sp ace", "dot.ted"])
def test_hostile_identifiers_name_exactly_one_table(pg, mysql, name):
    # created with the dialect's own quoting; the quoted name must select that table and nothing else
    pg.sql(f"CREATE TABLE {PG.quote_ident(name)} (v int)")
    pg.sql(f"INSERT INTO {PG.quote_ident(name)} VALUES (7)")
    assert pg.sql(PG.select(Relation(table=PG.quote_ident(name)), [PG.quote_ident("v")]))[0][0] == 7
    if "." not in name:   # as written in rivet.toml: the whole text is one name
        assert pg.sql(PG.select(Relation(table=name), [PG.quote_ident("v")]))[0][0] == 7
    pg.sql(f"DROP TABLE {PG.quote_ident(name)}")
    mysql.sql(f"CREATE TABLE {MY.quote_ident(name)} (v int)")
    mysql.sql(f"INSERT INTO {MY.quote_ident(name)} VALUES (8)")
    assert mysql.sql(MY.select(Relation(table=MY.quote_ident(name)), [MY.quote_ident("v")]))[0][0] == 8
    if "." not in name:
        assert mysql.sql(MY.select(Relation(table=name), [MY.quote_ident("v")]))[0][0] == 8
    mysql.sql(f"DROP TABLE {MY.quote_ident(name)}")


def test_time_helpers_run(pg, mysql):
    assert pg.sql(f"SELECT now() - {PG.now_minus_days(3)} = interval '3 days'")[0][0] is True
    assert pg.sql(f"SELECT abs(extract(epoch from now()) - 86400 - {PG.unix_now_minus_days(1)}) < 5")[0][0] is True
    assert mysql.sql(f"SELECT TIMESTAMPDIFF(DAY, {MY.now_minus_days(3)}, NOW(6))")[0][0] == 3
    assert abs(mysql.sql(f"SELECT UNIX_TIMESTAMP() - 86400 - {MY.unix_now_minus_days(1)}")[0][0]) < 5
