"""Helpers shared by CLI-level tests: run the real `rivet` command (in this process or its own), write configs, read
outputs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

RIVET = [sys.executable, "-m", "rivet_tui.cli"]
ROOT = Path(__file__).resolve().parent.parent
# Environment that only a separate process can honour: a fault point SIGKILLs the process it fires in.
PROCESS_ONLY_ENV = ("RIVET_FAULT_AT", "RIVET_FAULT_AFTER")


def rivet(*args, cwd=None, env=None, timeout=300, check=None, subprocess_only=False) -> subprocess.CompletedProcess:
    """Run `rivet ARGS` headless and return a CompletedProcess (stdout/stderr as text, returncode).

    In this process through the CLI's own entry point (`rivet_tui.cli.main`) with stdio captured — a `rivet`
    process costs about a second of start-up here — unless the call needs a process of its own: a fault point
    (SIGKILL), `subprocess_only=True` (import order, signals, a TTY, a timeout that must kill), or a call from a
    thread other than the main one (stdio, environment and working directory are per process, not per thread)."""
    extra = {"NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    in_other_thread = threading.current_thread() is not threading.main_thread()
    if subprocess_only or in_other_thread or any(k in extra for k in PROCESS_ONLY_ENV):
        return run_process(args, cwd=cwd, env=extra, timeout=timeout, check=check)
    proc = run_in_process(args, cwd=cwd, env=extra)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def run_process(args, cwd=None, env=None, timeout=300, check=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([*RIVET, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def run_in_process(args, cwd=None, env=None) -> subprocess.CompletedProcess:
    from rivet_tui.cli import main
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    saved_cwd, saved_out, saved_err, saved_in = os.getcwd(), sys.stdout, sys.stderr, sys.stdin
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    code = 0
    try:
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        sys.stdout, sys.stderr, sys.stdin = out, err, open(os.devnull)
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.stdin.close()
        sys.stdout, sys.stderr, sys.stdin = saved_out, saved_err, saved_in
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        release_state_files()
    return subprocess.CompletedProcess([*RIVET, *map(str, args)], code, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8", errors="replace")


def release_state_files() -> None:
    """Let go of state files this process opened, as a finished `rivet` process would (another process may want
    them next)."""
    from engine import state
    close_all = getattr(state, "close_all", None)
    if close_all is not None:
        close_all()


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
