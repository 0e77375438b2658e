"""`rivet doctor` probes every export's own destination (one `out/{export}` entry resolves per export), and
`--json` gives the checks as one object on stdout."""
from __future__ import annotations

import json

from tests.helpers import rivet, write_config


def two_exports(url: str) -> str:
    return f"""
        [source]
        type = "postgres"
        url = "{url}"

        [[exports]]
        name = "customers"
        table = "doctor_t"
        mode = "full"
        destination = {{ type = "local", path = "out/{{export}}" }}

        [[exports]]
        name = "orders"
        table = "doctor_t"
        mode = "full"
        destination = {{ type = "local", path = "out/{{export}}" }}
        """


def test_doctor_checks_the_second_exports_destination(tmp_path, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS doctor_t (id int)")
    cfg = write_config(tmp_path / "rivet.toml", two_exports(pg.url))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "orders").write_text("a file where the orders directory should be\n")

    proc = rivet("doctor", "-c", cfg)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("ok   destination customers") for line in lines), proc.stderr
    assert any(line.startswith("FAIL destination orders") for line in lines), proc.stderr

    proc = rivet("doctor", "-c", cfg, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"config", "state", "source", "destination customers", "destination orders"}
    assert all(set(c) >= {"name", "ok", "detail"} for c in report["checks"])
    assert checks["destination customers"]["ok"] is True and "out/customers" in checks["destination customers"]["detail"]
    assert checks["destination orders"]["ok"] is False and checks["destination orders"]["detail"]
    assert checks["source"]["ok"] is True


def test_doctor_json_all_ok(tmp_path, pg):
    pg.sql("CREATE TABLE IF NOT EXISTS doctor_t (id int)")
    cfg = write_config(tmp_path / "rivet.toml", two_exports(pg.url))
    proc = rivet("doctor", "-c", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and [c["name"] for c in report["checks"]] == [
        "config", "state", "source", "destination customers", "destination orders"]
    assert not list((tmp_path / "out" / "orders").glob(".rivet-probe-*"))
