"""Helpers shared by CLI-level tests: run the real `rivet` command in a subprocess, write configs, read outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

RIVET = [sys.executable, "-m", "rivet_tui.cli"]
ROOT = Path(__file__).resolve().parent.parent


def rivet(*args, cwd=None, env=None, timeout=300, check=None) -> subprocess.CompletedProcess:
    """Run `rivet ARGS` headless; returns the completed process (stdout/stderr as text)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([*RIVET, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def export_config(url: str, *, source_type: str = "postgres", name: str, table: str, mode: str,
                  extra: str = "") -> str:
    """rivet.toml text for one export to a local `out` directory (written with write_config, which dedents).
    `extra` lines go after the destination, so they may open sub-tables like [exports.tuning]."""
    return f"""
        [source]
        type = "{source_type}"
        url = "{url}"

        [[exports]]
        name = "{name}"
        table = "{table}"
        mode = "{mode}"
        destination = {{ type = "local", path = "out" }}
        {extra}
        """


def run_json(cfg: Path, *extra, check=0) -> dict:
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", *extra, check=check)
    return json.loads(proc.stdout)


def read_table(path: Path) -> pa.Table:
    """Read every committed part under a local destination directory (Parquet or CSV) into one table."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix in (".parquet", ".csv")
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    tables = [pq.read_table(f) if f.suffix == ".parquet" else pacsv.read_csv(f) for f in files]
    return pa.concat_tables(tables) if tables else pa.table({})


def manifest(path: Path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())
