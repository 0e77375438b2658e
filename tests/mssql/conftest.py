"""A throwaway SQL Server database for the live suite, on the server RIVET_TEST_MSSQL_URL names (server level,
e.g. mssql://sa:<password>@127.0.0.1:1433/master). Nothing here runs when the variable is unset: the test modules
skip themselves first. See docs/mssql.md for starting the official container."""
from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVER_URL = os.environ.get("RIVET_TEST_MSSQL_URL", "")
SKIP_REASON = ("RIVET_TEST_MSSQL_URL is not set: no SQL Server to test against "
               "(docs/mssql.md shows how to run the live suite against the official container)")
DB_URL_ENV = "RIVET_TEST_MSSQL_DB_URL"   # configs read the database URL from here (url_env): no password in files


class MsDB:
    """The test database: .url for sources, .sql() to run a batch (rows of its first result set, if any)."""

    def __init__(self, name: str):
        self.name = name
        p = urlsplit(SERVER_URL)
        self.url = urlunsplit(p._replace(path="/" + name))

    def connect(self, database: str | None = None):
        import pymssql
        from engine.sources.mssql import parse_url
        p, _ = parse_url(SERVER_URL)
        return pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                               database=database or self.name, autocommit=True, tds_version="7.4",
                               login_timeout=10)

    def sql(self, batch: str, database: str | None = None):
        con = self.connect(database)
        try:
            cur = con.cursor()
            cur.execute(batch)
            return cur.fetchall() if cur.description else None
        finally:
            con.close()

    @property
    def password(self) -> str:
        from engine.sources.mssql import parse_url
        return parse_url(SERVER_URL)[0]["password"]


@pytest.fixture(scope="session")
def ms():
    from engine.sources.mssql import parse_url
    name = f"rivet_test_{uuid.uuid4().hex[:8]}"
    admin = MsDB(name)
    server_db = parse_url(SERVER_URL)[0]["database"] or "master"
    admin.sql(f"CREATE DATABASE [{name}]", database=server_db)
    os.environ[DB_URL_ENV] = admin.url
    yield admin
    os.environ.pop(DB_URL_ENV, None)
    admin.sql(f"ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE [{name}]",
              database=server_db)
