"""What `rivet run --no-tui` shows off a terminal: a start line at once and a heartbeat (a CI log is never silent
for minutes), errors only as JSON under --json-errors, one duration per export in the progress line and summary."""
from __future__ import annotations

import json
import re

import pytest

from tests.helpers import export_config, rivet, write_config


@pytest.fixture(scope="module")
def orders(pg):
    pg.sql("DROP TABLE IF EXISTS hb_orders")
    pg.sql("CREATE TABLE hb_orders (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO hb_orders SELECT g, 'v' || g FROM generate_series(1, 15) g")
    return pg


def test_start_line_and_heartbeat_off_a_terminal(tmp_path, orders):
    # 3 batches of 5 rows with a 1 s pause after each: the run lasts seconds, the heartbeat fires every 0.2 s
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        orders.url, name="orders", table="hb_orders", mode="full",
        extra="[exports.tuning]\nbatch_size = 5\nthrottle_ms = 1000"))
    proc = rivet("run", "-c", cfg, "--no-tui", env={"RIVET_HEARTBEAT_S": "0.2"}, subprocess_only=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "rivet run — 1 export(s), 1 at once; a status line every 0.2s", lines
    beats = [line for line in lines if line.startswith("… ")]
    assert beats, proc.stderr
    assert all(re.fullmatch(r"… \d+s: (running orders [\d,]+ rows|no export running yet); \d finished", b)
               for b in beats), beats
    # while it ran, a heartbeat named it with the rows written so far
    assert any(re.fullmatch(r"… \d+s: running orders (5|10|15) rows; 0 finished", b) for b in beats), beats
    summary = next(i for i, line in enumerate(lines) if line.startswith("rivet run — 1 export(s) in"))
    assert lines.index(beats[0]) < summary


def test_json_errors_prints_errors_only_as_json(tmp_path, orders):
    cfg = write_config(tmp_path / "rivet.toml", export_config(orders.url, name="orders", table="no_such_table",
                                                               mode="full"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json-errors")
    assert proc.returncode == 1, proc.stderr
    mentions = [line for line in proc.stderr.splitlines() if "RIVET_SOURCE_NO_SUCH_TABLE" in line
                or "no_such_table" in line]
    assert len(mentions) == 1, proc.stderr
    err = json.loads(mentions[0])
    assert err["code"] == "RIVET_SOURCE_NO_SUCH_TABLE" and err["exit_class"] == 1
    assert not any(line.lstrip().startswith(("error", "✗", "hint:")) for line in proc.stderr.splitlines()), proc.stderr


def test_progress_line_and_summary_show_the_same_duration(tmp_path, orders):
    cfg = write_config(tmp_path / "rivet.toml", export_config(orders.url, name="orders", table="hb_orders",
                                                               mode="full"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 0, proc.stderr
    duration_ms = json.loads(proc.stdout)["exports"][0]["duration_ms"]
    shown = f"{duration_ms / 1000:.1f}s"
    lines = proc.stderr.splitlines()
    progress = [line for line in lines if line.startswith("orders") and "rows" in line]
    summary = [line for line in lines if line.lstrip().startswith("orders") and "rows" not in line]
    assert len(progress) == 1 and len(summary) == 1, proc.stderr
    assert progress[0].split()[-1] == shown, proc.stderr
    assert shown in summary[0].split(), proc.stderr
