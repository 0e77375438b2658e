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
        self._babelfish: bool | None = None

    def connect(self, database: str | None = None):
        import pymssql
        from engine.sources.mssql import parse_url
        p, _ = parse_url(SERVER_URL)
        con = pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                              database=database or self.name, autocommit=True, tds_version="7.4",
                              login_timeout=10)
        # FreeTDS's query timeout is process-wide: a source opened by an earlier test (statement_timeout_s = 1)
        # would otherwise cut this helper's slow set-up batches
        con._conn.query_timeout = 0
        return con

    def sql(self, batch: str, database: str | None = None):
        con = self.connect(database)
        try:
            cur = con.cursor()
            if self._babelfish:
                # Babelfish refuses the rowversion type unless this escape hatch is set (per session)
                cur.execute("EXEC sp_babelfish_configure 'escape_hatch_rowversion', 'ignore'")
            cur.execute(batch)
            return cur.fetchall() if cur.description else None
        finally:
            con.close()

    @property
    def babelfish(self) -> bool:
        """True when the server is Babelfish for PostgreSQL (its @@VERSION says so), not SQL Server itself.
        Tests use it only where Babelfish behaves differently from SQL Server, and name the difference."""
        if self._babelfish is None:
            self._babelfish = "babelfish" in str(self.sql("SELECT @@VERSION AS v")[0][0]).lower()
        return self._babelfish

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
    assert admin.babelfish in (True, False)    # asked once, before any test needs it
    os.environ[DB_URL_ENV] = admin.url
    yield admin
    os.environ.pop(DB_URL_ENV, None)
    # Babelfish has no ALTER DATABASE (nor SINGLE_USER); its DROP DATABASE does not wait for other sessions
    kick = "" if admin.babelfish else f"ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
    admin.sql(f"{kick}DROP DATABASE [{name}]", database=server_db)


# rows 1..n from a cross join of digits: portable T-SQL, and fast on servers whose sys.all_objects is a slow view
NUMBERS = ("WITH d AS (SELECT v FROM (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS t(v)), "
           "n AS (SELECT TOP ({n}) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i "
           "FROM d a CROSS JOIN d b CROSS JOIN d c CROSS JOIN d e CROSS JOIN d f)")


def babelfish_skip_reason(limit: str) -> str:
    return f"Babelfish for PostgreSQL differs from SQL Server here: {limit}"
