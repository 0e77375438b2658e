"""Connection faults (issue 8): the source connection is killed while rivet reads (PostgreSQL
`pg_terminate_backend`, MariaDB `KILL`); rivet reconnects, retries with backoff from the same window / cursor, and
finishes with exactly the source rows, the retry counted in the JSON summary and journaled. Errors that no retry can
fix (syntax, missing table, bad credentials, a failing expression) fail at once: no retry, no backoff wait.

The runs are slowed down (small batches + throttle_ms) so the kill lands mid-read; rivet's reading connection is
found by its query text (a COPY / SELECT over this test's table) in pg_stat_activity / the MariaDB processlist.
"""
from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.reliability.common import Prefix, local_dest, rivet, run_summary, start, store_of, wait_for, write_config

ROWS = 100_000
SLOW = "[exports.tuning]\nbatch_size = 1000\nthrottle_ms = 30\nretry_backoff_ms = 200\nmax_retries = 3"


@pytest.fixture(scope="module")
def pg_conn_items(pg):
    pg.sql("DROP TABLE IF EXISTS conn_items CASCADE")
    pg.sql("CREATE TABLE conn_items (id bigint PRIMARY KEY, seq bigint NOT NULL, pad text)")
    pg.sql(f"INSERT INTO conn_items SELECT g, g, repeat(md5(g::text), 3) FROM generate_series(1, {ROWS}) g")
    # The server sends a plain scan faster than rivet reads (DuckDB buffers it), so a kill could miss the stream.
    # Through this function every 1000th row costs 20 ms on the server: the read stays active for ~2 s.
    pg.sql("CREATE OR REPLACE FUNCTION rivet_slow(i bigint) RETURNS bigint LANGUAGE plpgsql AS "
           "$$ BEGIN IF i % 1000 = 0 THEN PERFORM pg_sleep(0.02); END IF; RETURN i; END $$")
    pg.sql("CREATE VIEW conn_slow AS SELECT rivet_slow(id) AS id, seq, pad FROM conn_items")
    return pg


@pytest.fixture(scope="module")
def my_conn_items(mysql):
    mysql.sql("DROP TABLE IF EXISTS conn_items")
    mysql.sql("CREATE TABLE conn_items (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, pad VARCHAR(200))")
    mysql.sql(f"INSERT INTO conn_items SELECT seq, seq, REPEAT(MD5(seq), 3) FROM seq_1_to_{ROWS}")
    # The whole result (~11 MB) fits in the loopback socket buffers: the server can end the statement before rivet
    # has read a tenth of it, and a KILL then lands after the end (rivet reads every row, nothing to retry). Every
    # 1000th row costs 20 ms on the server here, so the statement stays active for ~2 s, as conn_slow does on PG.
    mysql.sql("CREATE OR REPLACE VIEW conn_slow AS SELECT id, seq, pad FROM conn_items "
              "WHERE IF(id % 1000 = 0, SLEEP(0.02), 0) = 0")
    return mysql


def config(tmp_path, url, source_type, body, extra=SLOW):
    return write_config(tmp_path / "rivet.toml", f"""
[source]
type = "{source_type}"
url = "{url}"

[[exports]]
name = "conn"
{body}
destination = {{ type = "local", path = "out" }}
{extra}
""")


def kill_pg_reader(pg, table: str, delay: float = 0.3) -> int:
    """Terminate rivet's backends that stream `table` (once seen); returns how many were terminated."""
    found: list = []

    def reader():
        found[:] = pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                          "application_name = 'rivet' AND backend_type = 'client backend' AND state = 'active' "
                          "AND query ILIKE %s", (f"COPY (SELECT%{table}%",))
        return bool(found)
    assert wait_for(reader, timeout=60, step=0.02), "rivet's reading backend never showed up"
    time.sleep(delay)   # let some batches through first: the kill lands mid-stream
    return sum(1 for (pid,) in found if pg.sql("SELECT pg_terminate_backend(%s)", (pid,))[0][0])


def kill_mysql_reader(mysql, table: str) -> int:
    found: list = []

    def reader():
        found[:] = mysql.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND "
                             "ID <> CONNECTION_ID() AND INFO LIKE %s", (f"%SELECT%{table}%",))
        return bool(found)
    assert wait_for(reader, timeout=60, step=0.02), "rivet's reading connection never showed up"
    time.sleep(0.3)
    for (conn_id,) in found:
        mysql.sql(f"KILL {int(conn_id)}")
    return len(found)


def assert_retried_to_exact_rows(cfg, proc, ids: list[int]) -> dict:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = json.loads(out)["exports"][0]
    assert summary["status"] == "succeeded"
    assert summary["retries"] >= 1, summary
    retrying = [j for j in store_of(cfg).journal_for("conn") if j["event"] == "Retrying"]
    assert retrying, "no Retrying event in the run journal"
    assert any(w in retrying[0]["payload"]["error"].lower() for w in ("terminat", "lost connection", "closed")), \
        retrying[0]
    assert "Traceback" not in err
    prefix = Prefix.of(local_dest(cfg.parent / "out"), "conn")
    got = prefix.manifest_values("id", [prefix.latest])
    assert sorted(got) == ids, "rows lost or duplicated by the retry"
    assert len(prefix.part_names) == len(prefix.latest["parts"])   # the failed attempt left no part behind
    return summary


def test_pg_terminate_backend_mid_scan_retries(tmp_path, pg_conn_items):
    """A full export of a plain table: DuckDB's parallel ctid scan, one backend killed."""
    cfg = config(tmp_path, pg_conn_items.url, "postgres", 'table = "conn_items"\nmode = "full"')
    proc = start(cfg)
    assert kill_pg_reader(pg_conn_items, "conn_items") >= 1
    assert_retried_to_exact_rows(cfg, proc, list(range(1, ROWS + 1)))


def test_pg_terminate_backend_in_a_full_speed_scan_retries(tmp_path, pg_conn_items):
    """No throttle: the full speed of the parallel table scan; kill as soon as it reads."""
    cfg = config(tmp_path, pg_conn_items.url, "postgres", 'table = "conn_items"\nmode = "full"',
                 extra="[exports.tuning]\nbatch_size = 1000\nretry_backoff_ms = 200")
    proc = start(cfg)
    assert kill_pg_reader(pg_conn_items, "conn_items", delay=0) >= 1
    assert_retried_to_exact_rows(cfg, proc, list(range(1, ROWS + 1)))


def test_pg_terminate_backend_mid_incremental_resumes_from_the_same_cursor(tmp_path, pg_conn_items):
    pg = pg_conn_items
    pg.sql("DROP TABLE IF EXISTS conn_inc CASCADE")
    pg.sql("CREATE TABLE conn_inc (id bigint PRIMARY KEY, seq bigint NOT NULL, pad text)")
    pg.sql("INSERT INTO conn_inc SELECT g, g, md5(g::text) FROM generate_series(1, 1000) g")
    pg.sql("CREATE VIEW conn_inc_slow AS SELECT rivet_slow(id) AS id, seq, pad FROM conn_inc")
    cfg = config(tmp_path, pg.url, "postgres", 'table = "conn_inc_slow"\nmode = "incremental"\ncursor_column = "seq"')
    assert run_summary(rivet("run", "-c", cfg, "--no-tui", "--json", check=0))["rows"] == 1000
    pg.sql(f"INSERT INTO conn_inc SELECT g, g, repeat(md5(g::text), 3) FROM generate_series(1001, {ROWS}) g")
    proc = start(cfg)
    assert kill_pg_reader(pg, "conn_inc_slow") == 1
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    store = store_of(cfg)
    retrying = [j for j in store.journal_for("conn") if j["event"] == "Retrying"]
    assert len(retrying) == 1
    assert store.get_export_state("conn")["last_cursor_value"] == str(ROWS)
    prefix = Prefix.of(local_dest(tmp_path / "out"), "conn")
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1001, ROWS + 1))
    assert sorted(prefix.manifest_values("id")) == list(range(1, ROWS + 1))


def test_pg_terminate_backend_mid_chunk_retries_that_chunk(tmp_path, pg_conn_items):
    cfg = config(tmp_path, pg_conn_items.url, "postgres",
                 'table = "conn_slow"\nmode = "chunked"\nchunk_column = "id"\nchunk_count = 2')
    proc = start(cfg)
    assert kill_pg_reader(pg_conn_items, "conn_slow") == 1
    assert_retried_to_exact_rows(cfg, proc, list(range(1, ROWS + 1)))
    store = store_of(cfg)
    tasks = store.chunk_tasks(store.latest_chunk_run("conn")["run_id"])
    assert [t["status"] for t in tasks] == ["completed", "completed"]
    assert sorted(t["attempts"] for t in tasks) == [1, 2]      # only the killed chunk ran twice
    retrying = [j for j in store.journal_for("conn") if j["event"] == "Retrying"]
    assert retrying[0]["payload"]["chunk_index"] in (0, 1)


def test_mariadb_kill_mid_read_retries(tmp_path, my_conn_items):
    cfg = config(tmp_path, my_conn_items.url, "mysql", 'table = "conn_slow"\nmode = "full"')
    proc = start(cfg)
    assert kill_mysql_reader(my_conn_items, "conn_slow") == 1
    assert_retried_to_exact_rows(cfg, proc, list(range(1, ROWS + 1)))


# -- errors no retry can fix: fail at once ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def my_user(mysql):
    user = f"rel_{uuid.uuid4().hex[:8]}"
    mysql.sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'Right-Pass-123'")
    mysql.sql(f"GRANT SELECT ON `{mysql.name}`.* TO '{user}'@'%'")
    yield user
    mysql.sql(f"DROP USER IF EXISTS '{user}'@'%'")


NOT_TRANSIENT = {
    # a syntax error only the server finds (a misspelt keyword is refused before: RIVET_CONFIG_QUERY_NOT_SELECT)
    "pg_syntax": ("postgres", None, 'query = "SELECT id FROM conn_items WHERE"', "RIVET_SOURCE_QUERY"),
    "pg_missing_table": ("postgres", None, 'table = "no_such_table"', "RIVET_SOURCE_NO_SUCH_TABLE"),
    "pg_bad_role": ("postgres", "nosuchrole:pw", 'table = "conn_items"', "RIVET_SOURCE_AUTH"),
    # fails while rows stream (inside the retry loop), not while planning
    "pg_division_by_zero": ("postgres", None,
                            'query = "SELECT id, 1 / (id - 500) AS boom FROM conn_items"', "RIVET_SOURCE_QUERY"),
    "mysql_syntax": ("mysql", None, 'query = "SELECT id FROM conn_items WHERE"', "RIVET_SOURCE_QUERY"),
    "mysql_missing_table": ("mysql", None, 'table = "no_such_table"', "RIVET_SOURCE_NO_SUCH_TABLE"),
    "mysql_bad_password": ("mysql", "USER:Wrong-Pass-456", 'table = "conn_items"', "RIVET_SOURCE_AUTH"),
    # a query export describes itself through a temporary table: a wrong password must still say "auth"
    "mysql_bad_password_query": ("mysql", "USER:Wrong-Pass-456", 'query = "SELECT id FROM conn_items"',
                                 "RIVET_SOURCE_AUTH"),
}


@pytest.mark.parametrize("case", list(NOT_TRANSIENT))
def test_non_transient_errors_fail_at_once(tmp_path, request, case):
    source_type, userinfo, body, code = NOT_TRANSIENT[case]
    db = request.getfixturevalue("pg_conn_items" if source_type == "postgres" else "my_conn_items")
    url = db.url
    if userinfo:
        userinfo = userinfo.replace("USER", request.getfixturevalue("my_user")) if "USER" in userinfo else userinfo
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.hostname}:{parts.port}"))
    backoff = "[exports.tuning]\nretry_backoff_ms = 5000\nmax_retries = 3"
    cfg = config(tmp_path, url, source_type, body + '\nmode = "full"', extra=backoff)
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    summary = run_summary(proc)
    assert proc.returncode == 1, proc.stderr
    assert summary["error"]["code"] == code, summary["error"]
    assert summary["retries"] == 0
    assert summary["duration_ms"] < 5000, "it waited for a retry backoff"
    assert not [j for j in store_of(cfg).journal_for("conn") if j["event"] == "Retrying"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()
