"""`rivet init` picks the source's environment from where it is: a database on this machine is "local" (fast
tuning), anything else "production" (safe tuning)."""
from __future__ import annotations

import tomllib

import pytest

from engine.init import environment_for
from tests.helpers import rivet


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_init_on_a_loopback_source_writes_local(tmp_path, pg, host):
    pg.sql("CREATE TABLE IF NOT EXISTS init_env (id int PRIMARY KEY)")
    cfg = tmp_path / "rivet.toml"
    proc = rivet("init", "--source", pg.url.replace("127.0.0.1", host), "--table", "public.init_env", "-o", cfg)
    assert proc.returncode == 0, proc.stderr
    text = cfg.read_text()
    assert tomllib.loads(text)["source"]["environment"] == "local"
    assert '# environment = "local": the source is on this machine' in text
    # the written config loads and runs with the local (fast) profile
    assert rivet("check", "-c", cfg).returncode == 0


@pytest.mark.parametrize("url, env", [
    ("postgresql://u@db.internal.example:5432/shop", "production"),
    ("mysql://root@10.1.2.3:3306/shop", "production"),
    ("mssql://sa@[2001:db8::1]:1433/shop", "production"),
    ("postgresql://u@[::1]:5432/shop", "local"),
    ("postgresql:///shop", "local"),                      # no host: the unix socket on this machine
])
def test_environment_for_other_hosts(url, env):
    assert environment_for(url) == env
