"""How many exports run at once: `[run] parallel_exports` in rivet.toml (default 4), `--parallel-exports` wins.

Concurrency is observed, not assumed: every export's metrics row holds when it entered and left the runner, and
the most intervals that overlap at any instant is the number that really ran at once. Exports are slowed down by
throttling small batches, so several are in flight together; nothing here asserts a duration."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.helpers import rivet, write_config

EXPORTS = 6


@pytest.fixture(scope="module")
def slow(pg):
    pg.sql("DROP TABLE IF EXISTS slow")
    pg.sql("CREATE TABLE slow (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO slow SELECT g, 'v' || g FROM generate_series(1, 40) g")
    return pg


def config(url: str, run_section: str = "") -> str:
    text = f'[source]\ntype = "postgres"\nurl = "{url}"\n{run_section}\n'
    for i in range(EXPORTS):
        text += (f'[[exports]]\nname = "slow{i}"\ntable = "slow"\n'
                 f'destination = {{ type = "local", path = "out/{{export}}" }}\n'
                 "[exports.tuning]\nbatch_size = 5\nthrottle_ms = 100\n\n")
    return text


def peak_overlap(cfg) -> int:
    """The most exports whose [started_at, finished_at) intervals (from state) hold one instant."""
    runs = json.loads(rivet("metrics", "-c", cfg, "--json", check=0).stdout)["runs"]
    assert len(runs) == EXPORTS and all(r["status"] == "succeeded" for r in runs), runs
    spans = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in runs]
    peak = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    print("intervals:", sorted((r["started_at"], r["finished_at"], r["export_name"]) for r in runs), "peak:", peak)
    return peak


def run(tmp_path, text, *flags):
    cfg = write_config(tmp_path / "rivet.toml", text)
    proc = rivet("run", "-c", cfg, "--no-tui", *flags, check=0)
    print(proc.stderr)
    return cfg, proc


def test_run_section_bounds_exports_at_once(tmp_path, slow):
    cfg, proc = run(tmp_path, config(slow.url, "[run]\nparallel_exports = 3\n"))
    assert f"{EXPORTS} export(s), 3 at once" in proc.stderr
    assert 2 <= peak_overlap(cfg) <= 3


def test_without_run_section_four_at_once(tmp_path, slow):
    cfg, proc = run(tmp_path, config(slow.url))
    assert f"{EXPORTS} export(s), 4 at once" in proc.stderr
    assert 2 <= peak_overlap(cfg) <= 4


def test_flag_overrides_the_config(tmp_path, slow):
    cfg, proc = run(tmp_path, config(slow.url, "[run]\nparallel_exports = 5\n"), "--parallel-exports", "1")
    assert f"{EXPORTS} export(s), 1 at once" in proc.stderr
    assert peak_overlap(cfg) == 1


@pytest.mark.parametrize("value", ["0", '"x"'])
def test_bad_value_is_refused_naming_key_and_line(tmp_path, slow, value):
    text = config(slow.url, f"[run]\nparallel_exports = {value}\n")
    cfg = write_config(tmp_path / "rivet.toml", text)
    proc = rivet("run", "-c", cfg, "--no-tui", check=1)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("parallel_exports"))
    assert "run.parallel_exports" in proc.stderr and f"line {line}" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / ".rivet").exists()
