"""What a prefix tells a reader stays true, and rivet raises no false alarm:
- a healthy no-op run (skip_empty, nothing new) leaves the prefix exactly as it was, _SUCCESS included;
- a second full run into a prefix that already holds a completed run warns and names the fixes;
- `validate` does not call a failed run valid;
- manifest.json and _SUCCESS are fsynced (file and directory) before the cursor moves past them."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest

from engine.config import DestinationConfig
from engine.destinations import open_destination
from tests.helpers import export_config, rivet, run_json, write_config


@pytest.fixture()
def ev(pg):
    pg.sql("DROP TABLE IF EXISTS hp_events")
    pg.sql("CREATE TABLE hp_events (id bigint PRIMARY KEY, amount numeric(12,2))")
    pg.sql("INSERT INTO hp_events SELECT g, g * 1.5 FROM generate_series(1, 300) g")
    return pg


def snapshot(root) -> dict:
    """Every object under a local destination: name → bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_skip_empty_no_op_leaves_the_prefix_exactly_as_it_was(tmp_path, ev):
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        ev.url, name="hp", table="hp_events", mode="incremental", extra='cursor_column = "id"\n        skip_empty = true'))
    assert run_json(cfg)["exports"][0]["rows"] == 300
    before = snapshot(tmp_path / "out")
    assert "_SUCCESS" in before
    again = run_json(cfg)["exports"][0]
    assert again["status"] == "skipped"
    assert snapshot(tmp_path / "out") == before
    assert rivet("validate", "-c", cfg).returncode == 0


PREFIX_WARNING = "already holds a completed run"


def test_second_full_run_into_a_completed_prefix_warns(tmp_path, ev):
    cfg = write_config(tmp_path / "rivet.toml", export_config(ev.url, name="hp", table="hp_events", mode="full"))
    first = run_json(cfg)["exports"][0]
    assert not any(PREFIX_WARNING in w for w in first["warnings"])
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=0)
    [warning] = [w for w in json.loads(proc.stdout)["exports"][0]["warnings"] if PREFIX_WARNING in w]
    assert "{run_id}" in warning and "manifest.json" in warning
    headless = rivet("run", "-c", cfg, "--no-tui", check=0)
    assert PREFIX_WARNING in headless.stderr
    from engine.state import StateStore
    journal = StateStore(tmp_path / ".rivet" / "state.duckdb").journal_for("hp")
    assert any(j["event"] == "Warned" and PREFIX_WARNING in j["payload"]["message"] for j in journal)


@pytest.mark.parametrize("setup", ["run_id_in_path", "incremental"])
def test_no_prefix_warning_where_reruns_are_the_layout(tmp_path, ev, setup):
    if setup == "run_id_in_path":
        text = export_config(ev.url, name="hp", table="hp_events", mode="full").replace(
            'path = "out"', 'path = "out/{run_id}"')
    else:
        text = export_config(ev.url, name="hp", table="hp_events", mode="incremental", extra='cursor_column = "id"')
    cfg = write_config(tmp_path / "rivet.toml", text)
    run_json(cfg)
    ev.sql("INSERT INTO hp_events VALUES (1000, 1)")
    assert not any(PREFIX_WARNING in w for w in run_json(cfg)["exports"][0]["warnings"])


def test_validate_does_not_call_a_failed_run_valid(tmp_path, ev):
    ev.sql("UPDATE hp_events SET amount = 'NaN' WHERE id = 250")   # no decimal holds NaN: that chunk is refused
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        ev.url, name="hp", table="hp_events", mode="chunked", extra="chunk_size = 100\n        chunk_max_attempts = 1"))
    failed = json.loads(rivet("run", "-c", cfg, "--no-tui", "--json").stdout)["exports"][0]
    assert failed["status"] != "succeeded" and failed["error"]["code"] == "RIVET_SOURCE_UNREPRESENTABLE"
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["status"] == "failed" and not (tmp_path / "out" / "_SUCCESS").exists()
    proc = rivet("validate", "-c", cfg, "--json")
    assert proc.returncode == 3
    problems = [f["problem"] for r in json.loads(proc.stdout)["reports"] for f in r["failures"]]
    assert any("'failed'" in p for p in problems), problems


def test_manifest_and_success_are_durable_locally(tmp_path, monkeypatch):
    """A spy on os.fsync (the real fsync still runs): no power cut can be staged here, so this checks that the
    bytes and the directory entry of each small object are flushed before put_bytes returns."""
    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    dest = open_destination(DestinationConfig(type="local", path=str(tmp_path / "out")), "hp", "r1",
                            datetime.now(timezone.utc))
    dest.put_bytes("manifest.json", b"{}")
    root = str(tmp_path / "out")
    assert any(p.startswith(root + "/.rivet-staging/") for p in synced)   # the file's bytes, before its rename
    assert synced[-1] == root                                              # then the directory holding its name
    assert (tmp_path / "out" / "manifest.json").read_bytes() == b"{}"
    dest.close()
