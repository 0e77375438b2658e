"""Secrets (issue 8): a full run with distinctive credentials — a PostgreSQL password in the URL (the server trusts
local TCP, so any password is accepted), a MariaDB user with a real password, S3 keys — then every output is grepped
for them: stdout and stderr of every command (run, plan, apply, check, doctor, validate, state, metrics, init),
deliberate failures and their error messages, the state file (raw bytes and every value of every table, journal
included), the plan artifact, manifests, `_SUCCESS`, every object in the destinations, and the TUI screens.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import duckdb
import pytest

from engine.config import DestinationConfig
from tests.fixtures.emulators import _unsigned_put
from tests.reliability.common import dest_toml, rivet, write_config

PG_SECRET = "pg-S3cr3t!7f3a@9c:Zq"
MY_SECRET = "my-S3cr3t#Q9x&z/Wd"
AWS_KEY_ID = "AKIARIVETTESTQ7X9Z2K"
AWS_SECRET = "rivet/S3cr3t+Key=Zq8Lm4Pq"
SECRETS = [PG_SECRET, MY_SECRET, AWS_KEY_ID, AWS_SECRET]


def forms(secret: str) -> set[str]:
    """Every spelling a leak could take: raw, URL-encoded (both cases of the hex)."""
    enc = quote(secret, safe="")
    return {secret, enc, enc.lower()}


def leaks(blob: bytes | str) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    raw = blob if isinstance(blob, bytes) else blob.encode()
    return [f for s in SECRETS for f in forms(s) if f in text or f.encode() in raw]


def with_userinfo(url: str, user: str, password: str, db: str | None = None) -> str:
    p = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{p.hostname}:{p.port}"
    return urlunsplit(p._replace(netloc=netloc, path=f"/{db}" if db else p.path))


@pytest.fixture(scope="module")
def secret_env(pg, mysql, moto_server):
    pg.sql("DROP TABLE IF EXISTS secret_items")
    pg.sql("CREATE TABLE secret_items (id bigint PRIMARY KEY, v text)")
    pg.sql("INSERT INTO secret_items SELECT g, 'v' || g FROM generate_series(1, 500) g")
    mysql.sql("DROP TABLE IF EXISTS secret_items")
    mysql.sql("CREATE TABLE secret_items (id INT PRIMARY KEY, v VARCHAR(20))")
    mysql.sql("INSERT INTO secret_items SELECT seq, CONCAT('v', seq) FROM seq_1_to_500")
    user = f"sec_{uuid.uuid4().hex[:8]}"
    mysql.sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY %s", (MY_SECRET,))
    mysql.sql(f"GRANT SELECT, CREATE TEMPORARY TABLES ON `{mysql.name}`.* TO '{user}'@'%'")
    bucket = f"rivet-sec-{uuid.uuid4().hex[:8]}"
    _unsigned_put(f"{moto_server.endpoint}/{bucket}")
    yield {"PG_URL": with_userinfo(pg.url, "postgres", PG_SECRET), "MY_USER": user, "MY_PASSWORD": MY_SECRET,
           "SEC_AWS_KEY_ID": AWS_KEY_ID, "SEC_AWS_SECRET": AWS_SECRET, "bucket": bucket,
           "endpoint": moto_server.endpoint}
    mysql.sql(f"DROP USER IF EXISTS '{user}'@'%'")


def s3(env, prefix="{export}/", bucket=None) -> str:
    return dest_toml(DestinationConfig(type="s3", bucket=bucket or env["bucket"], prefix=prefix, region="us-east-1",
                                       endpoint=env["endpoint"], access_key_env="SEC_AWS_KEY_ID",
                                       secret_key_env="SEC_AWS_SECRET"))


def configs(tmp: Path, env, mysql, pg_url_var="PG_URL", bucket=None, my_port=None) -> tuple[Path, Path]:
    pg_cfg = write_config(tmp / "pg.toml", f"""
[source]
type = "postgres"
url_env = "{pg_url_var}"

[[exports]]
name = "pg_full"
table = "secret_items"
destination = {{ type = "local", path = "out/pg_full" }}

[[exports]]
name = "pg_chunked_s3"
table = "secret_items"
mode = "chunked"
chunk_size = 200
destination = {s3(env, bucket=bucket)}

[[exports]]
name = "pg_inc"
table = "secret_items"
mode = "incremental"
cursor_column = "id"
destination = {{ type = "local", path = "out/pg_inc" }}
""")
    p = urlsplit(mysql.url)
    my_cfg = write_config(tmp / "my.toml", f"""
[source]
type = "mysql"
host = "{p.hostname}"
port = {my_port or p.port or 3306}
user = "{env['MY_USER']}"
password_env = "MY_PASSWORD"
database = "{mysql.name}"

[[exports]]
name = "my_full_s3"
table = "secret_items"
destination = {s3(env, bucket=bucket)}

[[exports]]
name = "my_inc"
query = "SELECT id, v FROM secret_items"
mode = "incremental"
cursor_column = "id"
destination = {{ type = "local", path = "out/my_inc" }}
""")
    return pg_cfg, my_cfg


def test_no_secret_in_any_output(tmp_path, pg, mysql, secret_env):
    env = {k: v for k, v in secret_env.items() if k.isupper()}
    outputs: dict[str, str] = {}

    def cmd(label, *args, cwd=tmp_path, extra_env=None, expect=None):
        proc = rivet(*args, cwd=cwd, env={**env, **(extra_env or {})})
        outputs[f"{label}: stdout"], outputs[f"{label}: stderr"] = proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, f"{label}: exit {proc.returncode}\n{proc.stderr}"
        return proc

    good = tmp_path / "good"
    good.mkdir()
    pg_cfg, my_cfg = configs(good, secret_env, mysql)
    for label, cfg in (("pg", pg_cfg), ("my", my_cfg)):
        cmd(f"{label} doctor", "doctor", "-c", cfg, expect=0)
        cmd(f"{label} check", "check", "-c", cfg, "--json", expect=0)
        cmd(f"{label} plan", "plan", "-c", cfg, "-o", good / f"{label}-plan.json", "--json", expect=0)
        cmd(f"{label} run", "run", "-c", cfg, "--no-tui", "--json", "--validate", expect=0)
        cmd(f"{label} apply", "apply", good / f"{label}-plan.json", "-c", cfg, "--force", "--json")
        cmd(f"{label} validate", "validate", "-c", cfg, "--json", expect=0)
        for sub in ("show", "files", "progression"):
            cmd(f"{label} state {sub}", "state", sub, "-c", cfg, "--json", expect=0)
        cmd(f"{label} metrics", "metrics", "-c", cfg, "--json", expect=0)
    assert leaks(f"a {PG_SECRET} b") and leaks(quote(MY_SECRET, safe=""))   # the detector itself works
    cmd("pg state chunks", "state", "chunks", "-c", pg_cfg, "-e", "pg_chunked_s3", "--json", expect=0)
    cmd("init", "init", "--source", secret_env["PG_URL"], "--table", "secret_items", "-o", good / "init.toml",
        expect=0)

    # deliberate failures, each with the secrets in play
    bad = tmp_path / "bad"
    bad.mkdir()
    pg_url = urlsplit(secret_env["PG_URL"])
    failing = {
        "PG_NO_DB": urlunsplit(pg_url._replace(path="/no_such_db_" + uuid.uuid4().hex[:6])),
        "PG_NO_PORT": urlunsplit(pg_url._replace(netloc=pg_url.netloc.rsplit(":", 1)[0] + ":1")),
    }
    for var, url in failing.items():
        pg_bad, _ = configs(bad, secret_env, mysql, pg_url_var=var)
        cmd(f"pg failure {var}", "run", "-c", pg_bad, "--no-tui", "--json", "--json-errors", extra_env={var: url})
        cmd(f"pg failure {var} doctor", "doctor", "-c", pg_bad, extra_env={var: url})
    pg_bad, my_bad = configs(bad, secret_env, mysql, bucket="no-such-bucket-" + uuid.uuid4().hex[:6])
    cmd("s3 missing bucket", "run", "-c", pg_bad, "--no-tui", "--json", "-e", "pg_chunked_s3", expect=1)
    proc = cmd("my wrong password", "run", "-c", my_bad, "--no-tui", "--json", "--json-errors",
               extra_env={"MY_PASSWORD": MY_SECRET[::-1] + "x"}, expect=1)
    assert {e["error"]["code"] for e in json.loads(proc.stdout)["exports"]} == {"RIVET_SOURCE_AUTH"}
    (bad / "u").mkdir()
    _, my_unreachable = configs(bad / "u", secret_env, mysql, my_port=1)
    cmd("my unreachable", "run", "-c", my_unreachable, "--no-tui", "--json", expect=2)

    found = {label: leaks(text) for label, text in outputs.items() if leaks(text)}
    assert not found, f"secrets in command output: {found}"

    # every file rivet wrote: state (raw bytes), plans, manifests, _SUCCESS, parts, the generated config
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".toml" or path.name == "init.toml":
            assert not leaks(path.read_bytes()), f"a secret in {path}"
    for state in tmp_path.rglob("state.duckdb"):   # and every value of every table (storage may compress)
        con = duckdb.connect(str(state), read_only=True)
        try:
            for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
                dump = repr(con.execute(f'SELECT * FROM "{table}"').fetchall())
                assert not leaks(dump), f"a secret in state table {table} of {state}"
        finally:
            con.close()
    # every object in the bucket
    import boto3
    client = boto3.client("s3", endpoint_url=secret_env["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=secret_env["bucket"]).get("Contents", [])]
    assert any(k.endswith("_SUCCESS") for k in keys) and any("manifest" in k for k in keys)
    for key in keys:
        assert not leaks(client.get_object(Bucket=secret_env["bucket"], Key=key)["Body"].read()), key


def test_no_secret_on_the_tui_screens(tmp_path, pg, mysql, secret_env, monkeypatch):
    """The exports screen, a failed export's detail screen (its error and journal) and the plan screen."""
    from engine.config import load_config
    from engine.state import StateStore
    from rivet_tui.app import RivetApp
    from rivet_tui.screens.detail import DetailScreen
    from tests.tui.conftest import SIZE, cell, run, until

    for k, v in secret_env.items():
        if k.isupper():
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("PG_NO_DB", urlunsplit(urlsplit(secret_env["PG_URL"])._replace(path="/no_such_db_x")))
    screens: dict[str, str] = {}

    async def body(var, config, store):
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("R")
            await until(pilot, lambda: cell(app, "pg_full", "status") in ("✓ done", "✗ failed"), what="the run")
            await pilot.pause(0.5)
            screens[f"{var} exports"] = app.export_screenshot()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), timeout=5)
            await pilot.pause(0.5)
            screens[f"{var} detail"] = app.export_screenshot()
            await pilot.press("escape")
            await pilot.press("p")
            await pilot.pause(2)
            screens[f"{var} plan"] = app.export_screenshot()

    for var in ("PG_URL", "PG_NO_DB"):
        (tmp_path / var).mkdir()
        config = load_config(configs(tmp_path / var, secret_env, mysql, pg_url_var=var)[0])
        run(body, var, config, StateStore(config.state_path, lock_wait_s=30))
    assert "pg_full" in screens["PG_URL exports"]
    found = {label: leaks(svg) for label, svg in screens.items() if leaks(svg)}
    assert not found, f"secrets on screen: {found}"
