"""Issue 13 ("Hundreds of tables, fast"): Rivet side by side with the original Rust rivet, in one run of bench.py.

The peer is rivet-cli (the original rivet, a Rust binary shipped as a wheel), pinned to PEER_VERSION and installed
into its own git-ignored venv, .bench/venv, on first use. Both configs come from one generator (`spec` →
`write_configs`): ours as TOML, the peer's as YAML; the two formats take the same keys for what is compared here.

Suites (bench.py --only many,startup):
- many: 200 PostgreSQL tables × 5,000 rows (database rivet_bench_many, made once, reused), one full export each to
  local Parquet (zstd). Ours `run --no-tui --parallel-exports 8`; the peer `run --parallel-exports` (a flag there:
  at most 16 exports at once, not settable). Process start to exit, runs interleaved ours/peer.
- startup: whole processes, median of 5 (interleaved): a one-table run (5,000 rows), `--version`, `state show`, and
  loading a config of 10,000 exports. Ours "cached" runs with PYTHONDONTWRITEBYTECODE unset after `make setup`
  precompiled everything; "no bytecode" sets PYTHONDONTWRITEBYTECODE=1 and points PYTHONPYCACHEPREFIX at an empty
  directory, so no .pyc is found or written: every process compiles every module it imports (what this machine did
  before `make setup` precompiled). `-X importtime` checks that --version and --help import nothing heavy.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomli_w

from bench import PSQL, RIVET, ROOT, WORK, log, measure, sh

try:
    import yaml
except ImportError:   # JSON is YAML too; PyYAML only makes the file readable
    yaml = None

PEER_VERSION = "0.32.2"
PEER_VENV = ROOT / ".bench" / "venv"
PEER = PEER_VENV / "bin" / "rivet"

MANY_DB = "rivet_bench_many"
MANY_URL = f"postgresql://postgres@127.0.0.1:5432/{MANY_DB}"
MANY_TABLES, MANY_ROWS, MANY_PARALLEL = 200, 5_000, 8
BIG_CONFIG_EXPORTS = 10_000
HEAVY = ("pyarrow", "duckdb", "psycopg", "textual", "pydantic", "mysql", "pymssql", "obstore", "rich", "sqlparse")

GOALS = {   # issue 13
    "many": ("ratio", 1.0),        # ours no slower than the original
    "one": ("ratio", 2.5),         # one small export, start to exit (a warm server up: docs/warm.md)
    "version": ("seconds", 0.15),
    "state show": ("seconds", 0.5),
    "load 10k": ("seconds", 2.0),
}


# ---------------------------------------------------------------- the peer, the data, the configs

def ensure_peer() -> Path:
    """The original rivet in .bench/venv, installed from the package registry the first time."""
    if PEER.exists() and PEER_VERSION in sh([str(PEER), "--version"]):
        return PEER
    log(f"installing rivet-cli=={PEER_VERSION} (the original rivet) into {PEER_VENV.relative_to(ROOT)}")
    if not (PEER_VENV / "bin" / "pip").exists():
        sh(["python3", "-m", "venv", str(PEER_VENV)])
    sh([str(PEER_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"rivet-cli=={PEER_VERSION}"])
    return PEER


def ensure_many() -> list[str]:
    """rivet_bench_many: t000 … t199, 5,000 rows each (scripts/pg_orders.sql's shape), made once."""
    tables = [f"t{i:03d}" for i in range(MANY_TABLES)]
    if sh([*PSQL, "-d", "postgres", "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{MANY_DB}'"]) != "1":
        sh([*PSQL, "-d", "postgres", "-c", f"CREATE DATABASE {MANY_DB}"])
    have = sh([*PSQL, "-d", MANY_DB, "-Atc", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
               f"AND tablename ~ '^t[0-9]{{3}}$' AND tablename < 't{MANY_TABLES:03d}'"])
    last = f"SELECT count(*) FROM {tables[-1]}" if have == str(MANY_TABLES) else None
    if last and sh([*PSQL, "-d", MANY_DB, "-Atc", last]) == str(MANY_ROWS):
        return tables
    log(f"loading PostgreSQL {MANY_DB}: {MANY_TABLES} tables × {MANY_ROWS:,} rows (about 10 s)")
    sh([*PSQL, "-d", MANY_DB, "-v", f"tbl={tables[0]}", "-v", f"n={MANY_ROWS}", "-f", str(ROOT / "scripts/pg_orders.sql")])
    copies = "".join(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (LIKE {tables[0]} INCLUDING ALL); "
                     f"INSERT INTO {t} SELECT * FROM {tables[0]};\n" for t in tables[1:])
    sh([*PSQL, "-d", MANY_DB, "-1"], stdin=copies)
    sh([*PSQL, "-d", MANY_DB, "-c", "VACUUM (FREEZE, ANALYZE)"])
    return tables


def spec(tables: list[str], n: int | None = None) -> dict:
    """One config for both tools: a full export per table into out/<name>. n > len(tables) repeats tables."""
    names = [f"e{i:05d}" for i in range(n)] if n else tables
    return {"source": {"type": "postgres", "url": MANY_URL, "environment": "local"},
            "exports": [{"name": name, "table": f"public.{tables[i % len(tables)]}", "mode": "full",
                         "format": "parquet", "compression": "zstd",
                         "destination": {"type": "local", "path": f"out/{name}"}}
                        for i, name in enumerate(names)]}


def write_configs(workdir: Path, config: dict) -> tuple[Path, Path]:
    """The same config as ours (rivet.toml) and the original's (rivet.yaml), in workdir/ours and workdir/peer."""
    ours, peer = workdir / "ours" / "rivet.toml", workdir / "peer" / "rivet.yaml"
    for p in (ours, peer):
        p.parent.mkdir(parents=True, exist_ok=True)
    ours.write_text(tomli_w.dumps(config))
    peer.write_text(yaml.safe_dump(config, sort_keys=False) if yaml else json.dumps(config, indent=1))
    return ours, peer


def clean(config: Path) -> None:
    """Everything beside the config goes: output, state (ours .rivet/, the original's .rivet_state.db*), summaries."""
    for p in config.parent.iterdir():
        if p != config:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


# ---------------------------------------------------------------- measured processes

def cached_env() -> dict:
    """A process as users run it: bytecode cached; no warm server (bench.main sets RIVET_WARM=0 for every case)
    unless warm_env() says so."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def uncached_env(empty: Path) -> dict:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}


def warm_env(folder: Path) -> dict:
    """cached_env() with a warm server of its own (`rivet warm start`, sockets in folder): stopped by the caller.
    A server that does not start leaves RIVET_WARM_DIR empty of it: that side then runs cold and says so."""
    env = {k: v for k, v in cached_env().items() if k != "RIVET_WARM"}
    env["RIVET_WARM_DIR"] = str(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    started = subprocess.run([RIVET, "warm", "start", "--idle-timeout", "600"], env=env, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
    if started.returncode != 0:
        log(f"  rivet warm start FAILED (the warm side runs cold): {started.stderr.strip()[-500:]}")
    return env


def ours_run(config: Path, env: dict, parallel: int = 1) -> Callable[[], dict]:
    def go() -> dict:
        clean(config)
        argv = [RIVET, "run", "-c", str(config), "--no-tui", "--json"]
        r = measure(argv + (["--parallel-exports", str(parallel)] if parallel > 1 else []),
                    stdout=config.parent / "summary.json", cwd=config.parent, env=env)
        try:
            exports = json.loads(r["stdout"])["exports"]
            rows = sum(e["rows"] for e in exports if e["status"] == "succeeded")
            ok = [e for e in exports if e["status"] == "succeeded"]
        except (ValueError, KeyError, TypeError):
            return {**r, "error": f"rivet exit {r['rc']}, no JSON summary"}
        return {**r, "exports_ok": len(ok), "rows": rows}
    return go


def peer_run(config: Path, parallel: bool) -> Callable[[], dict]:
    def go() -> dict:
        clean(config)
        argv = [str(PEER), "run", "-c", str(config), "--json"] + (["--parallel-exports"] if parallel else [])
        r = measure(argv, stdout=config.parent / "summary.json", cwd=config.parent)
        try:
            s = json.loads(r["stdout"])
            return {**r, "exports_ok": s["success_count"], "rows": s["total_rows"]}
        except (ValueError, KeyError, TypeError):
            return {**r, "error": f"original rivet exit {r['rc']}, no JSON summary"}
    return go


def command(argv: list[str], cwd: Path, env: dict | None = None) -> Callable[[], dict]:
    def go() -> dict:
        r = measure(argv, cwd=cwd, env=env)
        return r if r["rc"] == 0 else {**r, "error": f"exit {r['rc']}"}
    return go


def compare(name: str, sides: dict[str, Callable[[], dict]], warmups: int, runs: int,
            expect: tuple[int, int] | None = None) -> dict:
    """Run each side warmups + runs times, interleaved (noise on a shared machine hits both alike); medians."""
    log(f"{name}: {warmups} warm-up + {runs} run{'s' if runs > 1 else ''} of {', '.join(sides)}")
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    errors: dict[str, str] = {}
    for i in range(warmups + runs):
        for side, go in sides.items():
            if side in errors:
                continue
            r = go()
            if "error" not in r and expect and (r["exports_ok"], r["rows"]) != expect:
                r["error"] = f"{r['exports_ok']} exports / {r['rows']:,} rows, expected {expect[0]} / {expect[1]:,}"
            if "error" in r:
                tail = "\n".join(r["stderr"].strip().splitlines()[-15:])
                log(f"  {side} FAILED: {r['error']}\n{tail}")
                errors[side] = r["error"]
            elif i >= warmups:
                seconds[side].append(r["seconds"])
        if i >= warmups:
            log("  " + ", ".join(f"{s} {v[-1]:.3f} s" for s, v in seconds.items() if v))
    return {"name": name, "errors": errors, "runs": seconds,
            "median": {s: statistics.median(v) for s, v in seconds.items() if v and s not in errors}}


# ---------------------------------------------------------------- suites

def suite_many(quick: bool) -> list[dict]:
    ensure_peer()
    tables = ensure_many()
    ours, peer = write_configs(WORK / "many", spec(tables))
    r = compare(f"{MANY_TABLES} tables × {MANY_ROWS:,} rows", {
        "ours": ours_run(ours, cached_env(), MANY_PARALLEL), "original": peer_run(peer, parallel=True)},
        warmups=0 if quick else 1, runs=1 if quick else 3, expect=(MANY_TABLES, MANY_TABLES * MANY_ROWS))
    shutil.rmtree(WORK / "many", ignore_errors=True)
    return [row(f"many: {MANY_TABLES} tables × {MANY_ROWS:,} rows, full → parquet", r, "ours", "original", "many",
                note=f"ours --parallel-exports {MANY_PARALLEL}; original --parallel-exports (≤ 16)")]


def suite_startup(quick: bool) -> list[dict]:
    ensure_peer()
    tables = ensure_many()
    warmups, runs = (1, 3) if quick else (1, 5)
    work = WORK / "startup"
    empty = Path(tempfile.mkdtemp(prefix="rivet-no-pyc-"))
    cached, uncached = cached_env(), uncached_env(empty)
    ours, peer = write_configs(work / "one", spec(tables[:1]))
    warm = warm_env(work / "warm")
    rows = []
    try:
        r = compare(f"one table, {MANY_ROWS:,} rows", {
            "ours": ours_run(ours, cached), "ours, no bytecode": ours_run(ours, uncached),
            "ours, warm": ours_run(ours, warm), "original": peer_run(peer, parallel=False)},
            warmups, runs, expect=(1, MANY_ROWS))
        rows.append(row("run: 1 table × 5,000 rows (own process)", r, "ours", "original"))
        rows.append(row("run: 1 table, warm server (rivet warm)", r, "ours, warm", "original", "one"))
        rows.append(row("run: 1 table, bytecode vs none", r, "ours", "ours, no bytecode"))

        r = compare("--version", {
            "ours": command([RIVET, "--version"], work, cached),
            "ours, no bytecode": command([RIVET, "--version"], work, uncached),
            "original": command([str(PEER), "--version"], work)}, warmups, runs)
        rows.append(row("--version", r, "ours", "original", "version"))
        rows.append(row("--version, bytecode vs none", r, "ours", "ours, no bytecode"))

        r = compare("--help", {"ours": command([RIVET, "--help"], work, cached),
                               "original": command([str(PEER), "--help"], work)}, warmups, runs)
        rows.append(row("--help", r, "ours", "original"))

        # state show after the one-table runs above left each side's state behind
        r = compare("state show", {"ours": command([RIVET, "state", "show", "-c", str(ours)], ours.parent, cached),
                                   "original": command([str(PEER), "state", "show", "-c", str(peer)], peer.parent)},
                    warmups, runs)
        rows.append(row("state show", r, "ours", "original", "state show"))

        # 10,000 exports: ours loads it with engine.config.load_config (process start to exit, no state opened);
        # the original has no load-only command: its `state show` loads the config and opens its state.
        big_ours, big_peer = write_configs(work / "big", spec(tables, BIG_CONFIG_EXPORTS))
        load = ("import sys; from engine.config import load_config; "
                f"c = load_config(sys.argv[1]); assert len(c.exports) == {BIG_CONFIG_EXPORTS}")
        r = compare(f"load a config of {BIG_CONFIG_EXPORTS:,} exports", {
            "ours": command([sys.executable, "-c", load, str(big_ours)], big_ours.parent, cached),
            "original": command([str(PEER), "state", "show", "-c", str(big_peer)], big_peer.parent)},
            warmups, runs)
        rows.append(row(f"load {BIG_CONFIG_EXPORTS:,}-export config", r, "ours", "original", "load 10k",
                        note="original: `state show` (loads config + state)"))
    finally:
        subprocess.run([RIVET, "warm", "stop"], env=warm, capture_output=True, stdin=subprocess.DEVNULL)
        shutil.rmtree(empty, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    rows.extend(import_check())
    return rows


def import_check() -> list[dict]:
    """`python -X importtime`: which heavy packages `rivet --version` / `--help` import (goal: none)."""
    out = []
    for args in (["--version"], ["--help"]):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "rivet_tui", *args], cwd=ROOT, env=cached_env(),
                           capture_output=True, text=True)
        tops = {m.group(2): int(m.group(1)) for m in re.finditer(r"\|\s*(\d+) \|\s*(\S+)\s*$", p.stderr, re.M)}
        heavy = sorted({name.split(".")[0] for name in tops if name.split(".")[0] in HEAVY})
        total = sum(us for name, us in tops.items() if "." not in name) / 1e6   # roughly: top-level modules only
        out.append({"name": f"imports of rivet {args[0]}", "importtime": True, "heavy": heavy,
                    "import_seconds": total, "error": None if p.returncode == 0 else f"exit {p.returncode}"})
    return out


def row(label: str, r: dict, ours: str, ref: str, goal: str | None = None, note: str = "") -> dict:
    m = r["median"]
    out = {"name": label, "ours_side": ours, "ref_side": ref, "ours": m.get(ours), "ref": m.get(ref),
           "runs": {ours: r["runs"].get(ours), ref: r["runs"].get(ref)}, "goal": goal, "note": note,
           "error": "; ".join(f"{s}: {e}" for s, e in r["errors"].items() if s in (ours, ref)) or None}
    out["ratio"] = out["ours"] / out["ref"] if out["ours"] and out["ref"] else None
    return out


def verdict(r: dict) -> str:
    if not r.get("goal"):
        return ""
    kind, limit = GOALS[r["goal"]]
    value = r["ratio"] if kind == "ratio" else r["ours"]
    if value is None:
        return "?"
    return f"{'ok' if value <= limit else 'MISS'} (≤ {limit}{'x' if kind == 'ratio' else ' s'})"


def _s(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


def report(rows: list[dict]) -> None:
    head = f"{'case':<48} {'ours s':>7} {'vs':<18} {'its s':>7} {'ours/it':>8}  goal"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        if r.get("importtime"):
            heavy = ", ".join(r["heavy"]) or "none"
            print(f"{r['name']:<48} heavy imports: {heavy} (-X importtime total {r['import_seconds']:.3f} s)"
                  + (f"  FAILED: {r['error']}" if r["error"] else f"  {'ok' if not r['heavy'] else 'MISS'}"))
            continue
        if r["error"]:
            print(f"{r['name']:<48} FAILED: {r['error']}")
            continue
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{r['name']:<48} {_s(r['ours']):>7} {r['ref_side']:<18} {_s(r['ref']):>7} {ratio:>8}  {verdict(r)}")
    notes = [f"{r['name']}: {r['note']}" for r in rows if r.get("note")]
    print("\n".join(["", "ours/it < 1: ours is faster. Medians of whole processes, interleaved runs; "
                     "'ours, no bytecode' = PYTHONDONTWRITEBYTECODE=1 with an empty PYTHONPYCACHEPREFIX.", *notes]))
