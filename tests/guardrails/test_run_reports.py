"""Run reports (issue 15, docs/guardrails.md): every `rivet run` writes .rivet/runs/<session>/summary.json and
summary.md beside the state file; --summary-output writes the JSON there too."""
from __future__ import annotations

import json

from tests.helpers import export_config, rivet, write_config


def test_every_run_writes_a_report_beside_the_state_file(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS reported")
    pg.sql("CREATE TABLE reported (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO reported SELECT g, 'v' || g FROM generate_series(1, 7) g")
    text = export_config(pg.url, name="good", table="reported", mode="full") + """
        [[exports]]
        name = "gated"
        table = "reported"
        destination = { type = "local", path = "gated" }
        [exports.quality]
        row_count_min = 100
        """
    cfg = write_config(tmp_path / "rivet.toml", text)
    target = tmp_path / "reports" / "last.json"
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--summary-output", target, check=3)
    out = json.loads(proc.stdout)
    runs = sorted((tmp_path / ".rivet" / "runs").iterdir())
    assert len(runs) == 1 and out["report"] == str(runs[0])
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert json.loads(target.read_text()) == summary
    assert summary["session_id"] == runs[0].name and summary["exit_code"] == 3 and summary["status"] == "failed"
    by_name = {e["name"]: e for e in summary["exports"]}
    good, gated = by_name["good"], by_name["gated"]
    assert good["status"] == "succeeded" and good["rows"] == 7 and good["files"] == 1 and good["bytes"] > 0
    assert good["error"] is None and good["run_id"] and good["retries"] == 0 and good["duration_ms"] >= 0
    assert gated["status"] == "failed" and gated["error"]["code"] == "RIVET_QUALITY_GATE_FAILED"
    assert gated["error"]["exit_class"] == 3 and "row_count 7 below minimum 100" in gated["error"]["message"]
    assert gated["error"]["hint"]
    assert summary["totals"]["rows"] == 14
    md = (runs[0] / "summary.md").read_text()
    assert f"# rivet run {summary['session_id']}" in md
    assert "| good | succeeded | 7 |" in md and "| gated | failed | 7 |" in md
    assert "error `RIVET_QUALITY_GATE_FAILED` (exit 3): " in md and "hint:" in md

    # a second run is a second session: reports are kept, one directory per run; warnings are reported
    rivet("run", "-c", cfg, "--no-tui", "-e", "good", check=0)
    now = set((tmp_path / ".rivet" / "runs").iterdir())
    assert len(now) == 2 and runs[0] in now        # two sessions in one second: the names do not sort by time
    (new_dir,) = now - {runs[0]}
    second = json.loads((new_dir / "summary.json").read_text())
    assert [e["name"] for e in second["exports"]] == ["good"] and second["exit_code"] == 0
    assert any("already holds a completed run" in w for w in second["exports"][0]["warnings"])
    assert "- warning: " in (new_dir / "summary.md").read_text()


def test_report_follows_the_state_file(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS reported2")
    pg.sql("CREATE TABLE reported2 (id int PRIMARY KEY)")
    cfg = write_config(tmp_path / "rivet.toml", export_config(pg.url, name="r", table="reported2", mode="full"))
    state = tmp_path / "elsewhere" / "state.duckdb"
    rivet("run", "-c", cfg, "--state", state, "--no-tui", check=0)
    (run,) = (tmp_path / "elsewhere" / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["exports"][0]["rows"] == 0
    assert not (tmp_path / ".rivet" / "runs").exists()
