"""rivet.toml → Config: every rule of the README's configuration section as a user meets it (code, exit class, key and line in the message)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import secrets
from engine.config import Config, Tuning, load_config, parse_size
from engine.errors import ExitClass, RivetError

SOURCE = '[source]\ntype = "postgres"\nurl = "postgresql://rivet@127.0.0.1:5432/app"\n'
EXPORT = '[[exports]]\nname = "t"\ntable = "t"\ndestination = { type = "local", path = "out" }\n'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("RIVET_STATE", raising=False)


def write(tmp_path: Path, body: str, name: str = "rivet.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def load(tmp_path: Path, body: str, **kw) -> Config:
    return load_config(write(tmp_path, body), **kw)


def refused(tmp_path: Path, body: str, code: str, **kw) -> RivetError:
    with pytest.raises(RivetError) as info:
        load(tmp_path, body, **kw)
    err = info.value
    assert err.code == code, err.render()
    assert err.exit_class == ExitClass.USAGE
    assert "\n" not in err.message and "\n" not in err.hint
    return err


def export(**fields: str) -> str:
    """One [[exports]] with `fields` as raw TOML values (defaults: table export to a local path)."""
    values = {"name": '"t"', "table": '"t"', "destination": '{ type = "local", path = "out" }', **fields}
    return "[[exports]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v is not None)


def line_of(body: str, needle: str) -> int:
    return next(i for i, line in enumerate(body.splitlines(), 1) if needle in line)


# --- the README's example -----------------------------------------------------------------------------------------

SPEC_EXAMPLE = """
[source]
type = "postgres"                 # postgres | mysql | mssql
url_env = "DATABASE_URL"
environment = "production"

[source.tuning]
profile = "balanced"
batch_size_memory_mb = 32
statement_timeout_s = 300
max_retries = 3
retry_backoff_ms = 2000
throttle_ms = 0

[[exports]]
name = "orders"
table = "public.orders"
mode = "chunked"
chunk_column = "id"
chunk_size = 100000
parallel = 4
chunk_checkpoint = true
format = "parquet"
compression = "zstd"
max_file_size = "256MB"
skip_empty = false
on_schema_drift = "warn"
[exports.destination]
type = "s3"
bucket = "lake"
prefix = "raw/{export}/{date}/"
region = "eu-west-1"
endpoint = "http://127.0.0.1:5555"
access_key_env = "AWS_ACCESS_KEY_ID"

[[exports]]
name = "events"
query = "SELECT * FROM events WHERE tenant = '${tenant}'"
mode = "incremental"
cursor_column = "updated_at"
incremental_cursor_mode = "coalesce"
cursor_fallback_column = "created_at"
format = "csv"
destination = { type = "local", path = "out/events" }

[[exports]]
name = "recent_logins"
table = "logins"
mode = "time_window"
time_column = "at"
days_window = 7
format = "parquet"
destination = { type = "gcs", bucket = "lake", prefix = "logins/", credentials_file = "sa.json" }

[[exports]]
name = "invoices"
table = "billing.invoices"
[exports.columns]
amount = "text"
"odd col" = "skip"
[exports.tuning]
throttle_ms = 50
[exports.destination]
type = "azure"
bucket = "container"
prefix = "inv/{run_id}/"
account_name = "acct"
sas_token_env = "AZ_SAS"

[executor]
type = "local"

[tui.keys]
run = "r"
quit = ["q", "ctrl+c"]
"""


def test_spec_example_loads_into_the_dataclasses(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pa55-word@db.internal:5432/shop")
    cfg = load(tmp_path, SPEC_EXAMPLE, params={"tenant": "acme"})

    assert cfg.path == tmp_path / "rivet.toml" and cfg.base_dir == tmp_path
    assert cfg.state_path == tmp_path / ".rivet" / "state.duckdb"
    src = cfg.source
    assert (src.type, src.environment) == ("postgres", "production")
    assert src.url == "postgresql://app:pa55-word@db.internal:5432/shop"      # scheme normalised
    assert src.masked_url() == "postgresql://app:***@db.internal:5432/shop"
    assert "pa55-word" not in repr(src)
    assert src.tuning == Tuning(profile="balanced", batch_size_memory_mb=32, statement_timeout_s=300, max_retries=3,
                                retry_backoff_ms=2000, throttle_ms=0)

    orders, events, logins, invoices = cfg.exports
    assert [e.name for e in cfg.exports] == ["orders", "events", "recent_logins", "invoices"]
    assert (orders.table, orders.mode, orders.chunk_column, orders.chunk_size, orders.parallel) == \
        ("public.orders", "chunked", "id", 100000, 4)
    assert (orders.format, orders.compression, orders.max_file_size) == ("parquet", "zstd", 256 * 1024**2)
    assert orders.chunk_checkpoint is True and orders.skip_empty is False and orders.chunk_max_attempts == 3
    d = orders.destination
    assert (d.type, d.bucket, d.prefix, d.region, d.endpoint, d.access_key_env) == \
        ("s3", "lake", "raw/{export}/{date}/", "eu-west-1", "http://127.0.0.1:5555", "AWS_ACCESS_KEY_ID")

    assert events.query == "SELECT * FROM events WHERE tenant = 'acme'"
    assert (events.mode, events.cursor_column, events.incremental_cursor_mode, events.cursor_fallback_column) == \
        ("incremental", "updated_at", "coalesce", "created_at")
    assert (events.format, events.compression) == ("csv", "none")
    assert events.destination.path == str(tmp_path / "out" / "events")

    assert (logins.mode, logins.time_column, logins.days_window, logins.time_column_type) == \
        ("time_window", "at", 7, "timestamp")
    assert logins.destination.credentials_file == str(tmp_path / "sa.json")

    assert invoices.columns == {"amount": "text", "odd col": "skip"}
    assert invoices.tuning.throttle_ms == 50 and invoices.tuning.statement_timeout_s == 300
    assert (invoices.destination.type, invoices.destination.account_name, invoices.destination.prefix) == \
        ("azure", "acct", "inv/{run_id}/")

    assert cfg.executor.type == "local" and cfg.executor.address is None
    assert cfg.tui_keys == {"run": "r", "quit": "q,ctrl+c"}
    assert cfg.export("events") is events
    with pytest.raises(RivetError, match="no export named"):
        cfg.export("event")


def test_defaults_for_a_minimal_config(tmp_path):
    cfg = load(tmp_path, SOURCE + EXPORT)
    e = cfg.exports[0]
    assert (e.mode, e.format, e.compression, e.parallel, e.chunk_checkpoint, e.chunk_max_attempts) == \
        ("full", "parquet", "zstd", 1, True, 3)
    assert (e.on_schema_drift, e.max_file_size, e.skip_empty, e.columns) == ("warn", None, False, {})
    assert cfg.source.environment == "production" and cfg.source.tuning.profile == "safe"
    assert cfg.executor.type == "local" and cfg.tui_keys == {} and cfg.source.tls == {}


# --- reading the file ------------------------------------------------------------------------------------------

def test_missing_config_file_says_how_to_get_one(tmp_path):
    with pytest.raises(RivetError) as info:
        load_config(tmp_path / "nope.toml")
    err = info.value
    assert err.code == "RIVET_CONFIG_NOT_FOUND" and err.exit_class == ExitClass.USAGE
    assert "nope.toml" in err.message and "rivet init" in err.hint and "-c PATH" in err.hint


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(RivetError) as info:
        load_config(tmp_path)
    assert info.value.code == "RIVET_CONFIG_NOT_FOUND" and "directory" in info.value.message


def test_malformed_toml_gives_line_and_column(tmp_path):
    err = refused(tmp_path, SOURCE + '[[exports]]\nname = "t\n', "RIVET_CONFIG_PARSE")
    assert "rivet.toml line 5, column" in err.message and "invalid TOML" in err.message


def test_malformed_toml_at_end_of_file(tmp_path):
    err = refused(tmp_path, SOURCE + "[[exports]]\nname = ", "RIVET_CONFIG_PARSE")
    assert "end of file" in err.message


def test_non_utf8_file(tmp_path):
    path = tmp_path / "rivet.toml"
    path.write_bytes(SOURCE.encode() + b'# caf\xe9\n')
    with pytest.raises(RivetError) as info:
        load_config(path)
    assert info.value.code == "RIVET_CONFIG_PARSE" and "line 4" in info.value.message


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "rivet.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SOURCE.encode())
    assert load_config(path).source.type == "postgres"


# --- unknown keys ------------------------------------------------------------------------------------------------

def test_unknown_key_in_an_export_has_location_line_and_did_you_mean(tmp_path):
    body = SOURCE + export(mode='"incremental"', cursor_colum='"updated_at"')
    err = refused(tmp_path, body, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "exports[0].cursor_colum" in err.message
    assert f"line {line_of(body, 'cursor_colum')}" in err.message
    assert "did you mean 'cursor_column'?" in err.hint


def test_unknown_key_in_the_second_export_points_at_its_own_table(tmp_path):
    body = SOURCE + EXPORT + export(name='"u"', destination=None) + \
        '[exports.destination]\ntype = "s3"\nbucket = "b"\nregoin = "eu"\n'
    err = refused(tmp_path, body, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "exports[1].destination.regoin" in err.message
    assert f"line {line_of(body, 'regoin')}" in err.message and "did you mean 'region'?" in err.hint


def test_unknown_key_inside_an_inline_table(tmp_path):
    body = SOURCE + "\n\n" + export(destination='{ type = "local", pth = "out" }')
    err = refused(tmp_path, body, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "exports[0].destination.pth" in err.message
    assert f"line {line_of(body, 'pth =')}" in err.message and "'path'" in err.hint


def test_unknown_key_in_source_tuning_and_unknown_section(tmp_path):
    err = refused(tmp_path, SOURCE + "[source.tuning]\nbatch_sise = 10\n" + EXPORT, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "source.tuning.batch_sise" in err.message and "line 5" in err.message
    assert "did you mean 'batch_size'?" in err.hint
    err = refused(tmp_path, SOURCE + EXPORT + "[exectuor]\ntype = \"local\"\n", "RIVET_CONFIG_UNKNOWN_KEY")
    assert "exectuor" in err.message and "line 8" in err.message and "'executor'" in err.hint


def test_misplaced_key_says_where_it_belongs(tmp_path):
    err = refused(tmp_path, SOURCE + 'profile = "fast"\n' + EXPORT, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "source.profile" in err.message and "[source.tuning]" in err.hint


def test_first_error_in_the_file_is_reported_and_the_hint_lists_more(tmp_path):
    body = SOURCE + export(chunk_size='"ten"') + export(name='"u"', parralel="2")
    err = refused(tmp_path, body, "RIVET_CONFIG_INVALID")
    assert f"line {line_of(body, 'chunk_size')}" in err.message
    assert "parralel" in err.hint and f"line {line_of(body, 'parralel')}" in err.hint


# --- wrong types -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,expected", [
    ("chunk_size", '"ten"', "an integer"),
    ("chunk_size", "true", "an integer"),
    ("chunk_size", "10.0", "an integer"),
    ("skip_empty", '"false"', "a boolean"),
    ("cursor_column", "5", "a string"),
    ("columns", '"text"', "a table"),
])
def test_wrong_type_is_not_coerced(tmp_path, key, value, expected):
    body = SOURCE + export(**{key: value})
    err = refused(tmp_path, body, "RIVET_CONFIG_INVALID")
    assert f"exports[0].{key}" in err.message and expected in err.message
    assert f"line {line_of(body, key + ' =')}" in err.message


def test_wrong_enum_value_lists_the_choices(tmp_path):
    body = SOURCE + export(mode='"chunky"')
    err = refused(tmp_path, body, "RIVET_CONFIG_INVALID")
    assert "exports[0].mode" in err.message and "'chunky'" in err.message and "'time_window'" in err.message
    assert f"line {line_of(body, 'mode')}" in err.message


def test_exports_written_as_a_plain_table(tmp_path):
    err = refused(tmp_path, SOURCE + '[exports]\nname = "t"\n', "RIVET_CONFIG_INVALID")
    assert "array of tables" in err.message and "[[exports]]" in err.hint


def test_missing_required_key(tmp_path):
    err = refused(tmp_path, SOURCE + '[[exports]]\nname = "t"\ntable = "t"\n', "RIVET_CONFIG_MISSING_KEY")
    assert "'destination'" in err.message and "exports[0]" in err.message and "line 4" in err.message
    err = refused(tmp_path, EXPORT, "RIVET_CONFIG_MISSING_KEY")
    assert "[source] section is missing" in err.message


def test_tls_is_a_table_of_scalars(tmp_path):
    cfg = load(tmp_path, SOURCE + '[source.tls]\nsslmode = "require"\nencrypt = true\n' + EXPORT)
    assert cfg.source.tls == {"sslmode": "require", "encrypt": True}
    err = refused(tmp_path, SOURCE + '[source.tls]\nsslmode = ["a"]\n' + EXPORT, "RIVET_CONFIG_INVALID")
    assert "source.tls.sslmode" in err.message and "line 5" in err.message


def test_columns_override_values(tmp_path):
    body = SOURCE + EXPORT + '[exports.columns]\namount = "txt"\n'
    err = refused(tmp_path, body, "RIVET_CONFIG_INVALID")
    assert "exports[0].columns.amount" in err.message and f"line {line_of(body, 'amount')}" in err.message


def test_tui_keys_are_strings_only(tmp_path):
    err = refused(tmp_path, SOURCE + EXPORT + "[tui.keys]\nrun = 5\n", "RIVET_CONFIG_INVALID")
    assert "tui.keys.run" in err.message and "line 9" in err.message
    refused(tmp_path, SOURCE + EXPORT + "[tui.keys]\nrun = []\n", "RIVET_CONFIG_INVALID")


def test_executor(tmp_path):
    cfg = load(tmp_path, SOURCE + EXPORT + '[executor]\ntype = "dask"\naddress = "tcp://127.0.0.1:8786"\n')
    assert (cfg.executor.type, cfg.executor.address) == ("dask", "tcp://127.0.0.1:8786")
    refused(tmp_path, SOURCE + EXPORT + '[executor]\ntype = "ray"\n', "RIVET_CONFIG_INVALID")


def test_run_parallel_exports(tmp_path):
    assert load(tmp_path, SOURCE + EXPORT).run.parallel_exports == 4           # no [run]: the documented default
    assert load(tmp_path, SOURCE + EXPORT + "[run]\nparallel_exports = 3\n").run.parallel_exports == 3
    assert load(tmp_path, "[run]\nparallel_exports = 64\n" + SOURCE + EXPORT).run.parallel_exports == 64


@pytest.mark.parametrize("value,code,words", [
    ("0", "RIVET_CONFIG_OUT_OF_RANGE", ">= 1, got 0"),
    ("65", "RIVET_CONFIG_OUT_OF_RANGE", "<= 64, got 65"),
    ('"x"', "RIVET_CONFIG_INVALID", "must be an integer, got a string"),
    ("2.0", "RIVET_CONFIG_INVALID", "must be an integer, got a float"),
])
def test_run_parallel_exports_refuses_a_bad_value_with_its_line(tmp_path, value, code, words):
    body = SOURCE + EXPORT + f"\n[run]\nparallel_exports = {value}\n"
    err = refused(tmp_path, body, code)
    assert "run.parallel_exports" in err.message and words in err.message
    assert f"line {line_of(body, 'parallel_exports')}" in err.message


def test_run_section_unknown_key_and_misplaced_parallel_exports(tmp_path):
    err = refused(tmp_path, SOURCE + EXPORT + "[run]\nparallel_export = 2\n", "RIVET_CONFIG_UNKNOWN_KEY")
    assert "run.parallel_export" in err.message and "line 9" in err.message
    assert "did you mean 'parallel_exports'?" in err.hint
    err = refused(tmp_path, SOURCE + "parallel_exports = 2\n" + EXPORT, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "source.parallel_exports" in err.message and "[run]" in err.hint


# --- source ------------------------------------------------------------------------------------------------------

def test_url_env_missing_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("RIVET_TEST_NO_SUCH_URL", raising=False)
    body = '[source]\ntype = "mysql"\nurl_env = "RIVET_TEST_NO_SUCH_URL"\n' + EXPORT
    err = refused(tmp_path, body, "RIVET_CONFIG_MISSING_ENV")
    assert "RIVET_TEST_NO_SUCH_URL" in err.message and "source.url_env" in err.message and "line 3" in err.message


def test_url_env_resolves_and_normalises_mariadb(tmp_path, monkeypatch):
    monkeypatch.setenv("RIVET_TEST_MY_URL", "mariadb://root:my-s3cret@127.0.0.1:3306/shop")
    cfg = load(tmp_path, '[source]\ntype = "mysql"\nurl_env = "RIVET_TEST_MY_URL"\n' + EXPORT)
    assert cfg.source.url == "mysql://root:my-s3cret@127.0.0.1:3306/shop"
    assert "my-s3cret" not in secrets.redact("driver said: bad password my-s3cret")


def test_url_file_is_anchored_and_stripped(tmp_path, monkeypatch):
    (tmp_path / "conf" / "secrets").mkdir(parents=True)
    (tmp_path / "conf" / "secrets" / "db.url").write_text("  postgres://u:file-pw-1@h/db\n")
    path = write(tmp_path / "conf", '[source]\ntype = "postgres"\nurl_file = "secrets/db.url"\n' + EXPORT)
    monkeypatch.chdir(tmp_path)
    assert load_config(path).source.url == "postgresql://u:file-pw-1@h/db"
    (tmp_path / "conf" / "secrets" / "db.url").unlink()
    with pytest.raises(RivetError) as info:
        load_config(path)
    assert info.value.code == "RIVET_CONFIG_FILE_NOT_FOUND" and "source.url_file" in info.value.message
    assert str(tmp_path / "conf" / "secrets" / "db.url") in info.value.message


def test_structured_source_builds_an_encoded_url(tmp_path, monkeypatch):
    monkeypatch.setenv("RIVET_TEST_PW", "p@ss/w:rd%")
    body = ('[source]\ntype = "mssql"\nhost = "sql.internal"\nport = 1433\nuser = "svc"\n'
            'password_env = "RIVET_TEST_PW"\ndatabase = "sales db"\n' + EXPORT)
    cfg = load(tmp_path, body)
    assert cfg.source.url == "mssql://svc:p%40ss%2Fw%3Ard%25@sql.internal:1433/sales%20db"
    assert "p@ss/w:rd%" not in secrets.redact("login failed for p@ss/w:rd%")
    monkeypatch.delenv("RIVET_TEST_PW")
    err = refused(tmp_path, body, "RIVET_CONFIG_MISSING_ENV")
    assert "RIVET_TEST_PW" in err.message and "line 6" in err.message


@pytest.mark.parametrize("fields,found", [
    ('url = "postgresql://h/db"\nurl_env = "X"\n', "url, url_env"),
    ('url = "postgresql://h/db"\nhost = "h"\n', "url, host"),
    ("", "none"),
])
def test_source_needs_exactly_one_url_form(tmp_path, fields, found):
    err = refused(tmp_path, '[source]\ntype = "postgres"\n' + fields + EXPORT, "RIVET_CONFIG_SOURCE_URL")
    assert f"found {found}" in err.message and "line 1" in err.message


def test_url_scheme_must_match_the_source_type_and_is_never_printed(tmp_path):
    err = refused(tmp_path, '[source]\ntype = "postgres"\nurl = "mysql://u:hunter22@h/db"\n' + EXPORT,
                  "RIVET_CONFIG_INVALID")
    assert "mysql://" in err.message and "hunter22" not in err.message + err.hint and "line 3" in err.message
    refused(tmp_path, '[source]\ntype = "postgres"\nurl = "not a url"\n' + EXPORT, "RIVET_CONFIG_INVALID")


# --- tuning profiles ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("environment,profile,values", [
    ("local", "fast", (64, 0, 3, 1000, 0)),
    ("replica", "balanced", (32, 300, 3, 2000, 0)),
    ("production", "safe", (16, 900, 5, 5000, 20)),
])
def test_environment_picks_the_profile(tmp_path, environment, profile, values):
    cfg = load(tmp_path, SOURCE + f'environment = "{environment}"\n' + EXPORT)
    for tuning in (cfg.source.tuning, cfg.exports[0].tuning):
        assert tuning.profile == profile
        assert (tuning.batch_size_memory_mb, tuning.statement_timeout_s, tuning.max_retries,
                tuning.retry_backoff_ms, tuning.throttle_ms) == values


def test_explicit_fields_override_the_profile_and_exports_override_field_by_field(tmp_path):
    body = (SOURCE + 'environment = "local"\n[source.tuning]\nthrottle_ms = 7\nbatch_size = 5000\n'
            + EXPORT + "[exports.tuning]\nmax_retries = 9\n"
            + export(name='"u"') + '[exports.tuning]\nprofile = "safe"\n')
    cfg = load(tmp_path, body)
    assert cfg.source.tuning == Tuning(profile="fast", batch_size=5000, batch_size_memory_mb=64,
                                       statement_timeout_s=0, max_retries=3, retry_backoff_ms=1000, throttle_ms=7)
    assert cfg.exports[0].tuning == Tuning(profile="fast", batch_size=5000, batch_size_memory_mb=64,
                                           statement_timeout_s=0, max_retries=9, retry_backoff_ms=1000, throttle_ms=7)
    # the export's own profile re-bases the defaults; the source's explicit fields still apply
    assert cfg.exports[1].tuning == Tuning(profile="safe", batch_size=5000, batch_size_memory_mb=16,
                                           statement_timeout_s=900, max_retries=5, retry_backoff_ms=5000,
                                           throttle_ms=7)


def test_exports_sharing_a_config_get_their_own_tuning_and_paths(tmp_path):
    # the loader shares work between exports that write the same thing; nothing may leak from one to another
    body = SOURCE + "[source.tuning]\nthrottle_ms = 7\n" + export(name='"a"') + export(name='"b"') + \
        "[exports.tuning]\nbatch_size = 10\n" + export(name='"c"') + "[exports.tuning]\nprofile = \"fast\"\n" + \
        export(name='"d"', destination='{ type = "local", path = "/abs/{export}" }')
    a, b, c, d = load(tmp_path, body).exports
    assert a.tuning == Tuning(profile="safe", batch_size=None, batch_size_memory_mb=16, statement_timeout_s=900,
                              max_retries=5, retry_backoff_ms=5000, throttle_ms=7, connect_timeout_s=10)
    assert b.tuning.batch_size == 10 and a.tuning.batch_size is None and b.tuning.throttle_ms == 7
    assert c.tuning.profile == "fast" and c.tuning.throttle_ms == 7 and c.tuning.batch_size_memory_mb == 64
    assert a.destination.path == str(tmp_path / "out") == b.destination.path and d.destination.path == "/abs/{export}"


def test_negative_tuning_is_out_of_range(tmp_path):
    err = refused(tmp_path, SOURCE + "[source.tuning]\nmax_retries = -1\n" + EXPORT, "RIVET_CONFIG_OUT_OF_RANGE")
    assert "source.tuning.max_retries" in err.message and "line 5" in err.message


# --- exports -----------------------------------------------------------------------------------------------------

def test_duplicate_export_names(tmp_path):
    body = SOURCE + EXPORT + EXPORT
    err = refused(tmp_path, body, "RIVET_CONFIG_DUPLICATE_EXPORT")
    assert "'t'" in err.message and "exports[1]" in err.message and "line 9" in err.message


@pytest.mark.parametrize("name,code", [('""', "RIVET_CONFIG_INVALID"), ('"../x"', "RIVET_CONFIG_INVALID"),
                                       ('"a;b"', "RIVET_CONFIG_INVALID")])
def test_export_names_are_non_empty_and_safe(tmp_path, name, code):
    body = SOURCE + export(name=name)
    err = refused(tmp_path, body, code)
    assert "exports[0]" in err.message and f"line {line_of(body, 'name =')}" in err.message


@pytest.mark.parametrize("fields,found", [
    ({"table": None}, "none"),
    ({"query": '"SELECT 1"'}, "table, query"),
])
def test_exactly_one_of_table_query_query_file(tmp_path, fields, found):
    err = refused(tmp_path, SOURCE + export(**fields), "RIVET_CONFIG_EXPORT_SOURCE")
    assert f"found {found}" in err.message and "export 't'" in err.message


def test_query_file_is_anchored_to_the_config_dir_and_read(tmp_path, monkeypatch):
    (tmp_path / "proj" / "sql").mkdir(parents=True)
    (tmp_path / "proj" / "sql" / "orders.sql").write_text("SELECT * FROM orders WHERE tenant = '${tenant}'\n")
    path = write(tmp_path / "proj", SOURCE + export(table=None, query_file='"sql/orders.sql"'))
    monkeypatch.chdir(tmp_path)                       # not the config's directory
    e = load_config(path, params={"tenant": "acme"}).exports[0]
    assert e.query == "SELECT * FROM orders WHERE tenant = 'acme'\n"
    assert e.query_file == str(tmp_path / "proj" / "sql" / "orders.sql")


def test_missing_query_file_is_a_clear_error(tmp_path):
    body = SOURCE + export(table=None, query_file='"sql/nope.sql"')
    err = refused(tmp_path, body, "RIVET_CONFIG_FILE_NOT_FOUND")
    assert "exports[0].query_file" in err.message and str(tmp_path / "sql" / "nope.sql") in err.message
    assert f"line {line_of(body, 'query_file')}" in err.message and str(tmp_path) in err.hint


def test_incremental_needs_cursor_column(tmp_path):
    body = SOURCE + export(mode='"incremental"')
    err = refused(tmp_path, body, "RIVET_CONFIG_MISSING_CURSOR")
    assert "cursor_column" in err.message and "export 't'" in err.message
    assert f"line {line_of(body, 'mode')}" in err.message and err.hint


def test_coalesce_needs_a_fallback_column(tmp_path):
    body = SOURCE + export(mode='"incremental"', cursor_column='"u"', incremental_cursor_mode='"coalesce"')
    err = refused(tmp_path, body, "RIVET_CONFIG_MISSING_FALLBACK")
    assert "cursor_fallback_column" in err.message and f"line {line_of(body, 'coalesce')}" in err.message


def test_chunked_takes_at_most_one_way_to_split(tmp_path):
    body = SOURCE + export(mode='"chunked"', chunk_size="10", chunk_count="4")
    err = refused(tmp_path, body, "RIVET_CONFIG_CHUNK_CONFLICT")
    assert "chunk_size, chunk_count" in err.message and f"line {line_of(body, 'chunk_count')}" in err.message
    assert load(tmp_path, SOURCE + export(mode='"chunked"', chunk_by_days="1")).exports[0].chunk_by_days == 1


@pytest.mark.parametrize("key,value", [("chunk_size", "0"), ("chunk_count", "-3"), ("chunk_by_days", "0"),
                                       ("parallel", "0"), ("chunk_max_attempts", "0"), ("days_window", "0")])
def test_counts_must_be_positive(tmp_path, key, value):
    body = SOURCE + export(mode='"chunked"', **{key: value})
    err = refused(tmp_path, body, "RIVET_CONFIG_OUT_OF_RANGE")
    assert f"exports[0].{key}" in err.message and "> 0" in err.message
    assert f"line {line_of(body, key)}" in err.message


def test_chunked_query_needs_a_chunk_column(tmp_path):
    body = SOURCE + export(table=None, query='"SELECT * FROM t"', mode='"chunked"')
    err = refused(tmp_path, body, "RIVET_CONFIG_CHUNK_COLUMN_REQUIRED")
    assert "chunk_column" in err.message and "table" in err.hint
    cfg = load(tmp_path, SOURCE + export(table=None, query='"SELECT * FROM t"', mode='"chunked"',
                                         chunk_column='"id"'))
    assert cfg.exports[0].chunk_column == "id"
    assert load(tmp_path, SOURCE + export(mode='"chunked"')).exports[0].chunk_column is None


@pytest.mark.parametrize("fields,missing", [({"days_window": "7"}, "time_column"),
                                            ({"time_column": '"at"'}, "days_window")])
def test_time_window_needs_column_and_days(tmp_path, fields, missing):
    body = SOURCE + export(mode='"time_window"', **fields)
    err = refused(tmp_path, body, "RIVET_CONFIG_TIME_WINDOW")
    assert missing in err.message and f"line {line_of(body, 'mode')}" in err.message


def test_csv_cannot_be_compressed(tmp_path):
    body = SOURCE + export(format='"csv"', compression='"gzip"')
    err = refused(tmp_path, body, "RIVET_CONFIG_CSV_COMPRESSION")
    assert "gzip" in err.message and f"line {line_of(body, 'compression')}" in err.message
    assert load(tmp_path, SOURCE + export(format='"csv"', compression='"none"')).exports[0].compression == "none"
    assert load(tmp_path, SOURCE + export(compression='"snappy"')).exports[0].compression == "snappy"


@pytest.mark.parametrize("text,expected", [
    ("256MB", 256 * 1024**2), ("1GiB", 1024**3), ("500KB", 500 * 1024), ("1.5 gb", 3 * 1024**3 // 2),
    ("42", 42), ("10B", 10), (1048576, 1048576),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("value", ['"lots"', '"0MB"', "0", '"-5MB"', '"9999999999999999999TB"', "true", "[1]"])
def test_bad_max_file_size(tmp_path, value):
    body = SOURCE + export(max_file_size=value)
    err = refused(tmp_path, body, "RIVET_CONFIG_INVALID")
    assert "exports[0].max_file_size" in err.message and f"line {line_of(body, 'max_file_size')}" in err.message


def test_max_file_size_as_bytes(tmp_path):
    assert load(tmp_path, SOURCE + export(max_file_size="1000000")).exports[0].max_file_size == 1000000


# --- destinations ------------------------------------------------------------------------------------------------

def test_local_path_is_anchored_and_keeps_placeholders(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load(tmp_path, SOURCE + export(destination='{ type = "local", path = "../out/{export}/{date}/{run_id}" }'))
    assert cfg.exports[0].destination.path == str(tmp_path.parent / "out" / "{export}" / "{date}" / "{run_id}")
    cfg = load(tmp_path, SOURCE + export(destination='{ type = "stdout" }', format='"csv"'))
    assert cfg.exports[0].destination.type == "stdout"


@pytest.mark.parametrize("destination,needs", [
    ('{ type = "local" }', "path"),
    ('{ type = "s3", prefix = "x/" }', "bucket"),
    ('{ type = "gcs" }', "bucket"),
    ('{ type = "azure", bucket = "c" }', "account_name"),
])
def test_destination_required_fields(tmp_path, destination, needs):
    body = SOURCE + export(destination=destination)
    err = refused(tmp_path, body, "RIVET_CONFIG_DESTINATION")
    assert needs in err.message and "exports[0].destination" in err.message
    assert f"line {line_of(body, 'destination')}" in err.message


def test_azure_with_an_endpoint_needs_no_account_name(tmp_path):
    dest = '{ type = "azure", bucket = "c", endpoint = "http://127.0.0.1:10000/devstoreaccount1" }'
    assert load(tmp_path, SOURCE + export(destination=dest)).exports[0].destination.account_name is None


@pytest.mark.parametrize("destination,what", [
    ('{ type = "s3", bucket = "b", prefix = "raw/{foo}/" }', "{foo}"),
    ('{ type = "local", path = "out/{exprt}" }', "{exprt}"),
    ('{ type = "s3", bucket = "b", prefix = "raw/{export/" }', "unbalanced"),
])
def test_unknown_placeholders_are_refused(tmp_path, destination, what):
    err = refused(tmp_path, SOURCE + export(destination=destination), "RIVET_CONFIG_BAD_PLACEHOLDER")
    assert what in err.message and "{export} {date} {run_id}" in err.hint


@pytest.mark.parametrize("prefix", ["../x/", "raw/../../etc/", "a/..", "a\\\\..\\\\b"])
def test_prefix_cannot_climb_out(tmp_path, prefix):
    body = SOURCE + EXPORT.replace('destination = { type = "local", path = "out" }',
                                   f'[exports.destination]\ntype = "s3"\nbucket = "b"\nprefix = "{prefix}"')
    err = refused(tmp_path, body, "RIVET_CONFIG_PATH_TRAVERSAL")
    assert "exports[0].destination" in err.message and f"line {line_of(body, 'prefix')}" in err.message
    assert load(tmp_path, body.replace(prefix, "raw/..data/")).exports[0].destination.prefix == "raw/..data/"


@pytest.mark.parametrize("endpoint,ok", [
    ("http://127.0.0.1:9000", True), ("http://127.8.9.10", True), ("http://localhost:9000", True),
    ("http://[::1]:9000", True), ("https://s3.example.com", True),
    ("http://10.0.0.5:9000", False), ("http://minio.internal", False), ("http://127.0.0.1.nip.io", False),
])
def test_plain_http_endpoints_only_on_loopback(tmp_path, endpoint, ok):
    body = SOURCE + export(destination=f'{{ type = "s3", bucket = "b", endpoint = "{endpoint}" }}')
    if ok:
        assert load(tmp_path, body).exports[0].destination.endpoint == endpoint
    else:
        err = refused(tmp_path, body, "RIVET_CONFIG_INSECURE_ENDPOINT")
        assert "exports[0].destination.endpoint" in err.message and "https" in err.hint


def test_endpoint_must_be_a_url(tmp_path):
    body = SOURCE + export(destination='{ type = "s3", bucket = "b", endpoint = "ftp://x" }')
    refused(tmp_path, body, "RIVET_CONFIG_INVALID")


# --- ${VAR} --------------------------------------------------------------------------------------------------------

def test_params_win_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("tenant", "from-env")
    monkeypatch.setenv("TABLE", "env_table")
    body = SOURCE + export(table='"${TABLE}"', query=None, destination='{ type = "local", path = "out/${tenant}" }')
    cfg = load(tmp_path, body, params={"tenant": "from-param"})
    assert cfg.exports[0].destination.path == str(tmp_path / "out" / "from-param")
    assert cfg.exports[0].table == "env_table"


def test_unresolved_param_names_the_variable_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("RIVET_TEST_UNSET", raising=False)
    body = SOURCE + export(table=None, query='"SELECT 1 WHERE x = ${RIVET_TEST_UNSET}"')
    err = refused(tmp_path, body, "RIVET_CONFIG_UNRESOLVED_PARAM")
    assert "${RIVET_TEST_UNSET}" in err.message and "exports[0].query" in err.message
    assert f"line {line_of(body, 'query')}" in err.message and "-p RIVET_TEST_UNSET=" in err.hint


def test_escape_and_no_recursive_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("INNER", "boom")
    body = SOURCE + export(table=None, query='"SELECT \'$${literal}\', \'${outer}\'"')
    cfg = load(tmp_path, body, params={"outer": "${INNER}", "INNER": "x"})
    assert cfg.exports[0].query == "SELECT '${literal}', '${INNER}'"


def test_a_stray_dollar_brace_is_refused(tmp_path):
    body = SOURCE + export(table=None, query='"SELECT \'${ not a name}\'"')
    err = refused(tmp_path, body, "RIVET_CONFIG_UNRESOLVED_PARAM")
    assert "exports[0].query" in err.message and "$${" in err.hint


def test_params_fill_literal_fields_before_validation(tmp_path):
    cfg = load(tmp_path, SOURCE + export(format='"${fmt}"'), params={"fmt": "csv"})
    assert (cfg.exports[0].format, cfg.exports[0].compression) == ("csv", "none")


# --- state path ----------------------------------------------------------------------------------------------------

def test_state_path_argument_then_env_then_default(tmp_path, monkeypatch):
    path = write(tmp_path, SOURCE + EXPORT)
    assert load_config(path).state_path == tmp_path / ".rivet" / "state.duckdb"
    monkeypatch.setenv("RIVET_STATE", "env/state.duckdb")
    assert load_config(path).state_path == tmp_path / "env" / "state.duckdb"
    assert load_config(path, state_path="arg.duckdb").state_path == tmp_path / "arg.duckdb"
    assert load_config(path, state_path="/abs/s.duckdb").state_path == Path("/abs/s.duckdb")


# --- hostile input -------------------------------------------------------------------------------------------------

def test_deep_nesting_is_a_parse_error_not_a_crash(tmp_path):
    refused(tmp_path, SOURCE + "x = " + "[" * 50000 + "]" * 50000 + "\n", "RIVET_CONFIG_PARSE")


def test_integers_beyond_64_bits(tmp_path):
    err = refused(tmp_path, SOURCE + export(chunk_size="9" * 40), "RIVET_CONFIG_OUT_OF_RANGE")
    assert "exports[0].chunk_size" in err.message


def test_oversized_file(tmp_path):
    refused(tmp_path, SOURCE + "# " + "x" * (17 * 1024 * 1024) + "\n", "RIVET_CONFIG_PARSE")


def test_huge_unknown_key_gives_a_short_message(tmp_path):
    err = refused(tmp_path, SOURCE + "k" * 100000 + " = 1\n" + EXPORT, "RIVET_CONFIG_UNKNOWN_KEY")
    assert len(err.message) < 200 and "line 4" in err.message


def test_many_exports_load(tmp_path):
    body = SOURCE + "".join(export(name=f'"e{i}"') for i in range(2000))
    assert len(load(tmp_path, body).exports) == 2000


def test_many_errors_report_one(tmp_path):
    body = SOURCE + "".join(export(name=f'"e{i}"', bogus="1") for i in range(2000))
    err = refused(tmp_path, body, "RIVET_CONFIG_UNKNOWN_KEY")
    assert "exports[0].bogus" in err.message and "more)" in err.hint


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list('[]{}=",.\n #$\'abcxyz0123_-') + ["exports", "source", "type", "${"]),
                max_size=200).map("".join))
def test_any_text_gives_a_config_or_a_rivet_error(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        load_config(path, params={})
    except RivetError as err:
        assert err.exit_class == ExitClass.USAGE, err.render()
        assert "\n" not in err.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["chunk_size", "mode", "format", "compression", "max_file_size", "destination",
                            "columns", "tuning", "parallel", "name", "query_file", "days_window"]),
       value=st.sampled_from(['"x"', "0", "-1", "true", "1.5", "[]", "{}", '{ type = "s3" }', "1979-05-27",
                              '"${nope_unset_var}"', '"../../etc/passwd"', '"{foo}"', "[[1]]", '{ a = { b = 1 } }']))
def test_any_value_in_any_export_key_gives_a_config_or_a_rivet_error(tmp_path, key, value):
    path = tmp_path / "fuzz.toml"
    path.write_text(SOURCE + export(**{"mode": '"chunked"', key: value}))
    try:
        load_config(path)
    except RivetError as err:
        assert err.exit_class == ExitClass.USAGE, err.render()
        assert "line" in err.message, err.render()
