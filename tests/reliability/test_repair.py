"""`rivet repair --execute` goes through the run's commit path, in its order, under the export's lock:
new parts → file log → manifest (old parts superseded in it) → _SUCCESS → state marks the old parts superseded.
Killed at any of those points, it leaves state that claims no more than the destination's manifest: `reconcile`
then reports the difference and never writes *verified*; running the repair again finishes the job."""
from __future__ import annotations

import json

import pytest

from tests.reliability.common import Prefix, local_dest, rivet, start, store_of, wait_for, write_config

ROWS = 1000


@pytest.fixture
def rp(pg):
    pg.sql("DROP TABLE IF EXISTS rp_items")
    pg.sql("CREATE TABLE rp_items (id bigint PRIMARY KEY, v text)")
    pg.sql(f"INSERT INTO rp_items SELECT g, 'v' || g FROM generate_series(1, {ROWS}) g")
    return pg


def config(tmp_path, pg, extra: str = ""):
    return write_config(tmp_path / "rivet.toml", f"""
[source]
type = "postgres"
url = "{pg.url}"

[[exports]]
name = "rp"
table = "rp_items"
mode = "chunked"
chunk_size = 250
destination = {{ type = "local", path = "out" }}
{extra}
""")


def reconcile(cfg) -> tuple[int, dict]:
    proc = rivet("reconcile", "-c", cfg, "-e", "rp", "--json")
    return proc.returncode, json.loads(proc.stdout)["reports"][0]


@pytest.mark.parametrize("point", ["after_part_upload", "after_file_log", "after_manifest", "after_success"])
def test_repair_killed_midway_never_lets_reconcile_certify(tmp_path, rp, point):
    cfg = config(tmp_path, rp)
    rivet("run", "-c", cfg, "--no-tui", "--json", check=0)
    rp.sql("DELETE FROM rp_items WHERE id BETWEEN 300 AND 309")
    code, report = reconcile(cfg)
    assert code == 3 and not report["verified_written"]
    store_of(cfg).reset_progression("rp")          # so a verified boundary can only come from what follows

    killed = rivet("repair", "-c", cfg, "-e", "rp", "--execute", env={"RIVET_FAULT_AT": point})
    assert killed.returncode == -9, killed.stderr  # SIGKILLed at the point
    code, report = reconcile(cfg)
    assert code != 0 and not report["verified_written"], report
    assert all(p["last_verified_run_id"] is None for p in store_of(cfg).progression("rp"))

    again = rivet("repair", "-c", cfg, "-e", "rp", "--execute", "--json")
    assert again.returncode == 0, again.stderr
    code, report = reconcile(cfg)
    assert code == 0 and report["verified_written"], report
    prefix = Prefix.of(local_dest(tmp_path / "out"), "rp")
    assert not prefix.success_problems()
    ids = prefix.manifest_values("id", [prefix.latest])
    assert sorted(ids) == [i for i in range(1, ROWS + 1) if not 300 <= i <= 309]
    assert rivet("validate", "-c", cfg, "-e", "rp").returncode == 0


def test_repair_waits_for_a_run_of_the_same_export(tmp_path, rp):
    cfg = config(tmp_path, rp, "[exports.tuning]\nbatch_size = 50\nthrottle_ms = 300")
    rivet("run", "-c", cfg, "--no-tui", "--json", check=0)
    first_parts = set((tmp_path / "out").glob("rp_chunk*"))
    rp.sql("DELETE FROM rp_items WHERE id = 5")
    run = start(cfg)                                # a slow second run holds the export's lock
    try:
        assert wait_for(lambda: set((tmp_path / "out").glob("rp_chunk*")) - first_parts, timeout=120)
        assert run.poll() is None
        proc = rivet("repair", "-c", cfg, "-e", "rp", "--execute", "--json-errors", "--lock-wait", "1")
        assert proc.returncode == 2, proc.stderr
        err = json.loads(proc.stderr.strip().splitlines()[-1])
        assert err["code"] == "RIVET_RUN_BUSY" and f"PID {run.pid}" in err["error"]
    finally:
        run.communicate(timeout=300)
