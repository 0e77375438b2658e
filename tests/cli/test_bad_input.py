"""Bad input (issue 2): each gives a clear one-line error, the right exit code, and writes nothing to state."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers import rivet, write_config

SOURCE = """
[source]
type = "postgres"
url = "{url}"
"""


def export(name="orders", table="orders", extra=""):
    return f"""
[[exports]]
name = "{name}"
table = "{table}"
mode = "full"
destination = {{ type = "local", path = "out" }}
{extra}
"""


@pytest.fixture(scope="module")
def small(pg):
    pg.sql("DROP TABLE IF EXISTS orders")
    pg.sql("CREATE TABLE orders (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO orders SELECT g, 'v' || g FROM generate_series(1, 10) g")
    return pg


def assert_refused(tmp_path, text, code, exit_code=1, args=("run", "--no-tui")):
    cfg = write_config(tmp_path / "rivet.toml", text)
    proc = rivet(*args, "-c", cfg, "--json-errors")
    assert proc.returncode == exit_code, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("{")]
    assert err_lines, proc.stderr
    err = json.loads(err_lines[-1])
    assert err["code"] == code, err
    assert err["exit_class"] == exit_code and err["hint"]
    assert "Traceback" not in proc.stderr
    state = tmp_path / ".rivet/state.duckdb"
    if state.exists():  # nothing recorded for the export: no files, no cursor
        files = json.loads(rivet("state", "files", "-c", cfg, "--json", check=0).stdout)["files"]
        assert files == []
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    return err


def test_malformed_toml(tmp_path, small):
    err = assert_refused(tmp_path, SOURCE.format(url=small.url) + "[[exports]\nname = 'x'\n", "RIVET_CONFIG_PARSE")
    assert "line" in err["error"]


def test_unknown_key_with_position_and_did_you_mean(tmp_path, small):
    text = SOURCE.format(url=small.url) + export(extra='cursor_colum = "id"')
    err = assert_refused(tmp_path, text, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "cursor_colum" in err["error"] and "line 10" in err["error"]
    assert "cursor_column" in err["hint"] or "cursor_column" in err["error"]


def test_wrong_type(tmp_path, small):
    text = SOURCE.format(url=small.url) + export(extra='chunk_size = "ten"')
    err = assert_refused(tmp_path, text, "RIVET_CONFIG_INVALID")
    assert "chunk_size" in err["error"]


def test_two_exports_with_one_name(tmp_path, small):
    assert_refused(tmp_path, SOURCE.format(url=small.url) + export() + export(), "RIVET_CONFIG_DUPLICATE_EXPORT")


def test_missing_table(tmp_path, small):
    err = assert_refused(tmp_path, SOURCE.format(url=small.url) + export(table="no_such_table"),
                         "RIVET_SOURCE_NO_SUCH_TABLE")
    assert "no_such_table" in err["error"]


def test_table_name_with_quote_and_semicolon_is_quoted_not_injected(tmp_path, small):
    small.sql("DROP TABLE IF EXISTS canary")
    small.sql("CREATE TABLE canary (id int)")
    evil = 'orders\\"; DROP TABLE canary; --'
    assert_refused(tmp_path, SOURCE.format(url=small.url) + export(table=evil), "RIVET_SOURCE_NO_SUCH_TABLE")
    assert small.sql("SELECT count(*) FROM canary") == [(0,)]
    # and a real table whose name holds a quote and a semicolon exports fine
    small.sql('DROP TABLE IF EXISTS "we\'ird;name"')
    small.sql('CREATE TABLE "we\'ird;name" (id int)')
    small.sql('INSERT INTO "we\'ird;name" VALUES (1), (2)')
    cfg = write_config(tmp_path / "ok.toml", SOURCE.format(url=small.url) + export(table="we'ird;name"))
    out = json.loads(rivet("run", "-c", cfg, "--no-tui", "--json", check=0).stdout)
    assert out["exports"][0]["rows"] == 2


# PostgreSQL here trusts every TCP login, so a wrong password cannot fail against it: MariaDB covers auth.
def test_wrong_password_mariadb(tmp_path, mysql):
    mysql.sql("CREATE USER IF NOT EXISTS 'rivet_pw'@'%' IDENTIFIED BY 'right-secret'")
    mysql.sql("CREATE USER IF NOT EXISTS 'rivet_pw'@'localhost' IDENTIFIED BY 'right-secret'")
    url = f"mysql://rivet_pw:wrong-secret-123@127.0.0.1:3306/{mysql.name}"
    text = f'[source]\ntype = "mysql"\nurl = "{url}"\n' + export()
    err = assert_refused(tmp_path, text, "RIVET_SOURCE_AUTH")
    assert "wrong-secret-123" not in json.dumps(err)


def test_unreachable_host_is_transient(tmp_path):
    text = '[source]\ntype = "postgres"\nurl = "postgresql://postgres@127.0.0.1:1/x"\n[source.tuning]\nconnect_timeout_s = 3\n' + export()
    assert_refused(tmp_path, text, "RIVET_SOURCE_UNREACHABLE", exit_code=2)


def test_destination_not_writable(tmp_path, small):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    text = SOURCE.format(url=small.url) + export().replace('path = "out"', 'path = "blocker/out"')
    err = assert_refused(tmp_path, text, "RIVET_DEST_NOT_WRITABLE")
    assert "blocker" in err["error"]


def test_csv_with_compression(tmp_path, small):
    text = SOURCE.format(url=small.url) + export(extra='format = "csv"\ncompression = "zstd"')
    assert_refused(tmp_path, text, "RIVET_CONFIG_CSV_COMPRESSION")


def test_missing_config_file(tmp_path):
    proc = rivet("run", "--no-tui", "-c", tmp_path / "nope.toml")
    assert proc.returncode == 1 and "RIVET_CONFIG_NOT_FOUND" in proc.stderr


def test_unresolved_param_refuses(tmp_path, small):
    text = SOURCE.format(url=small.url) + export(table="${tbl}")
    assert_refused(tmp_path, text, "RIVET_CONFIG_UNRESOLVED_PARAM")
    cfg = tmp_path / "rivet.toml"
    out = json.loads(rivet("run", "-c", cfg, "--no-tui", "--json", "-p", "tbl=orders", check=0).stdout)
    assert out["exports"][0]["rows"] == 10
    os.environ.pop("tbl", None)
