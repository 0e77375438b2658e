"""Shared fixtures: real PostgreSQL and MariaDB databases, created per test session and dropped after.

URLs come from RIVET_TEST_PG_URL / RIVET_TEST_MYSQL_URL (server level, no database), default to the local
servers on 127.0.0.1. Emulators (moto, Azurite) live in tests/fixtures/emulators.py.
"""
from __future__ import annotations

import engine  # noqa: F401  (first: lets mysql-connector's C extension load before pyarrow/duckdb)
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

pytest_plugins = ["tests.fixtures.emulators"]

# A warm server the developer left running (`rivet warm start`) would serve the suite's `rivet` processes: every
# test's command runs in a process of its own, except tests/cli/test_warm.py's, which start servers of their own.
os.environ["RIVET_WARM"] = "0"

PG_SERVER = os.environ.get("RIVET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MY_SERVER = os.environ.get("RIVET_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")


def _with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit(p._replace(path="/" + db))


class PgDB:
    """A throwaway PostgreSQL database: .url for configs, .sql() to run statements."""

    def __init__(self, name: str):
        self.name = name
        self.url = _with_db(PG_SERVER, name)

    def sql(self, statement: str, params=None):
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as con:
            cur = con.execute(statement, params)
            return cur.fetchall() if cur.description else None


class MyDB:
    def __init__(self, name: str):
        self.name = name
        self.url = _with_db(MY_SERVER, name)

    def connect(self, **kw):
        import mysql.connector
        p = urlsplit(MY_SERVER)
        return mysql.connector.connect(host=p.hostname, port=p.port or 3306, user=p.username or "root",
                                       password=p.password or "", database=self.name, autocommit=True, **kw)

    def sql(self, statement: str, params=None):
        con = self.connect()
        try:
            cur = con.cursor()
            cur.execute(statement, params)
            rows = cur.fetchall() if cur.with_rows else None
            cur.close()
            return rows
        finally:
            con.close()


@pytest.fixture(scope="session")
def pg():
    import psycopg
    name = f"rivet_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    yield PgDB(name)
    with psycopg.connect(PG_SERVER, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mysql():
    import mysql.connector
    p = urlsplit(MY_SERVER)
    name = f"rivet_test_{uuid.uuid4().hex[:8]}"
    kw = dict(host=p.hostname, port=p.port or 3306, user=p.username or "root", password=p.password or "")
    con = mysql.connector.connect(**kw)
    con.cursor().execute(f"CREATE DATABASE `{name}`")
    con.close()
    yield MyDB(name)
    con = mysql.connector.connect(**kw)
    con.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    con.close()
