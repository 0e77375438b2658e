"""An export's query must be one SELECT; `parallel` must fit the source's connection limit. Both are refused with
a reason that says so (exit 1) at check/plan/run time, not with a server's raw syntax error halfway."""
from __future__ import annotations

import json

import pytest

from tests.helpers import read_table, rivet, write_config


@pytest.fixture(scope="module")
def ql(pg):
    pg.sql("DROP TABLE IF EXISTS ql_items")
    pg.sql("CREATE TABLE ql_items (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO ql_items SELECT g, 'v;' || g FROM generate_series(1, 20) g")
    return pg


def config(tmp_path, url: str, body: str, source_type: str = "postgres"):
    return write_config(tmp_path / "rivet.toml", f"""
[source]
type = "{source_type}"
url = "{url}"

[[exports]]
name = "q"
{body}
destination = {{ type = "local", path = "out" }}
""")


@pytest.mark.parametrize("query, what", [
    ("DELETE FROM ql_items", "a DELETE statement"),
    ("UPDATE ql_items SET v = 'x'", "a UPDATE statement"),
    ("SELECT * FROM ql_items; DROP TABLE ql_items", "2 statements"),
    ("CREATE TABLE x AS SELECT 1", "a CREATE statement"),
])
def test_query_must_be_one_select(tmp_path, ql, query, what):
    cfg = config(tmp_path, ql.url, f'query = "{query}"')
    for args in (("run", "--no-tui"), ("plan",)):
        proc = rivet(*args, "-c", cfg, "--json-errors")
        assert proc.returncode == 1, proc.stderr
        err = json.loads(proc.stderr.strip().splitlines()[-1])
        assert err["code"] == "RIVET_CONFIG_QUERY_NOT_SELECT" and what in err["error"], err
        assert "one SELECT" in err["hint"]
    assert ql.sql("SELECT count(*) FROM ql_items")[0][0] == 20     # nothing was changed or dropped


@pytest.mark.parametrize("query", [
    "WITH x AS (SELECT * FROM ql_items) SELECT * FROM x;",
    "SELECT id, v FROM ql_items WHERE v <> ';' -- a ; in a comment",
    "SELECT id, v FROM ql_items /* ; */ WHERE v LIKE 'v;%'",
])
def test_selects_with_semicolons_in_strings_and_comments_run(tmp_path, ql, query):
    cfg = config(tmp_path, ql.url, f"query = {json.dumps(query)}")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(read_table(tmp_path / "out").column("id").to_pylist()) == list(range(1, 21))


@pytest.mark.parametrize("source", ["postgres", "mysql"])
def test_parallel_above_the_connection_limit_is_refused(tmp_path, ql, mysql, source):
    if source == "mysql":
        mysql.sql("DROP TABLE IF EXISTS ql_items")
        mysql.sql("CREATE TABLE ql_items (id int PRIMARY KEY, v text)")
        mysql.sql("INSERT INTO ql_items VALUES (1, 'a'), (2, 'b')")
        url, limit = mysql.url, int(mysql.sql("SELECT @@max_connections")[0][0])
    else:
        url = ql.url
        limit = int(ql.sql("SELECT current_setting('max_connections')::int - "
                           "current_setting('superuser_reserved_connections')::int")[0][0])
    cfg = config(tmp_path, url, f'table = "ql_items"\nmode = "chunked"\nchunk_size = 1\nparallel = {limit}',
                 source_type=source)
    proc = rivet("check", "-c", cfg, "--json")
    assert proc.returncode == 1, proc.stderr
    [report] = json.loads(proc.stdout)["exports"]
    assert report["error"]["code"] == "RIVET_PLAN_PARALLEL_TOO_HIGH", report
    assert f"allows {limit}" in report["error"]["error"] and f"at most {limit - 5}" in report["error"]["hint"]
    proc = rivet("run", "-c", cfg, "--no-tui", "--json-errors")
    assert proc.returncode == 1 and "RIVET_PLAN_PARALLEL_TOO_HIGH" in proc.stderr
    ok = config(tmp_path, url, f'table = "ql_items"\nmode = "chunked"\nchunk_size = 1\nparallel = {limit - 5}',
                source_type=source)
    assert rivet("check", "-c", ok).returncode == 0
