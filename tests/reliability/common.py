"""Shared by the reliability tests: start the real `rivet` in a subprocess, and look at what it left behind
(the destination through the engine's own Destination, the state file through StateStore) the way an operator would.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.config import DestinationConfig
from engine.destinations import Destination, open_destination
from engine.manifest import MANIFEST, SUCCESS, success_bytes
from engine.state import StateStore
from tests.helpers import RIVET, ROOT, rivet, write_config

__all__ = ["RIVET", "ROOT", "rivet", "write_config", "Prefix", "start", "store_of", "wait_for", "local_dest",
           "dest_toml", "run_summary", "env_with"]


# These tests start a few hundred `rivet` processes. With PYTHONDONTWRITEBYTECODE each one compiles every module
# again (~1 s of CPU); a bytecode cache outside the tree keeps the tree clean and the suite fast.
PYCACHE = Path(tempfile.gettempdir()) / f"rivet-test-pycache-{os.getuid()}"


def env_with(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(PYCACHE), "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200",
            **(extra or {})}




def start(cfg: Path, *args, env: dict | None = None) -> subprocess.Popen:
    """`rivet run -c CFG --no-tui --json ARGS` in the background (text pipes)."""
    return subprocess.Popen([*RIVET, "run", "-c", str(cfg), "--no-tui", "--json", *map(str, args)], env=env_with(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def run_summary(proc: subprocess.CompletedProcess) -> dict:
    """The first export of a `rivet run --json` summary."""
    try:
        return json.loads(proc.stdout)["exports"][0]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON summary (exit {proc.returncode})\nSTDOUT:\n{proc.stdout}\n"
                             f"STDERR:\n{proc.stderr}") from None


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def store_of(cfg: Path) -> StateStore:
    """The state file beside a config (the default location), opened the way a second rivet process would."""
    return StateStore(Path(cfg).parent / ".rivet" / "state.duckdb", lock_wait_s=30)


def local_dest(path: Path) -> DestinationConfig:
    return DestinationConfig(type="local", path=str(path))


def dest_toml(cfg: DestinationConfig) -> str:
    """A DestinationConfig as an inline TOML table (for writing configs)."""
    fields = {k: v for k, v in cfg.__dict__.items() if v not in (None, "")}
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }"


def _read(data: bytes, name: str):
    return pq.read_table(io.BytesIO(data)) if name.endswith(".parquet") else pacsv.read_csv(io.BytesIO(data))


@dataclass
class Prefix:
    """A snapshot of one destination prefix: objects, run manifests, manifest.json and _SUCCESS."""
    dest: Destination
    objects: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)     # manifest-<run_id>.json → content
    latest: dict | None = None                                   # manifest.json
    success: bytes | None = None
    latest_bytes: bytes | None = None

    @classmethod
    def of(cls, cfg: DestinationConfig, export: str) -> "Prefix":
        p = cls(open_destination(cfg, export, "inspect", datetime.now(timezone.utc)))
        p.objects = dict(p.dest.list())
        for name in p.objects:
            if name.startswith("manifest-") and name.endswith(".json"):
                p.manifests[name] = json.loads(p.dest.get_bytes(name))
        if MANIFEST in p.objects:
            p.latest_bytes = p.dest.get_bytes(MANIFEST)
            p.latest = json.loads(p.latest_bytes)
        if SUCCESS in p.objects:
            p.success = p.dest.get_bytes(SUCCESS)
        return p

    @property
    def part_names(self) -> list[str]:
        return sorted(n for n in self.objects if n.endswith((".parquet", ".csv")))

    def values(self, path: str, column: str) -> list:
        return _read(self.dest.get_bytes(path), path).column(column).to_pylist()

    def rows_of(self, path: str) -> int:
        return _read(self.dest.get_bytes(path), path).num_rows

    def manifest_values(self, column: str, manifests: list[dict] | None = None) -> list:
        """`column` of every committed part named by the given manifests (default: every run manifest)."""
        out: list = []
        seen: set[str] = set()
        for m in manifests if manifests is not None else self.manifests.values():
            for part in m["parts"]:
                if part.get("status", "committed") == "committed" and part["path"] not in seen:
                    seen.add(part["path"])
                    out += self.values(part["path"], column)
        return out

    def orphans(self) -> list[str]:
        """Part files that no manifest names (a crashed attempt's leftovers)."""
        named = {p["path"] for m in self.manifests.values() for p in m["parts"]}
        return [n for n in self.part_names if n not in named]

    def success_problems(self) -> list[str]:
        """Why a present _SUCCESS would lie (empty list: it is honest, or absent)."""
        if self.success is None:
            return []
        if self.latest is None:
            return ["_SUCCESS without manifest.json"]
        problems = []
        if self.success != success_bytes(self.latest_bytes):
            problems.append("_SUCCESS does not hold the hash of manifest.json")
        if self.latest.get("status") != "succeeded":
            problems.append(f"_SUCCESS over a {self.latest.get('status')} run")
        for part in self.latest["parts"]:
            if part.get("status", "committed") != "committed":
                continue
            if self.objects.get(part["path"]) != part["size_bytes"]:
                problems.append(f"{part['path']} missing or of the wrong size")
            elif self.rows_of(part["path"]) != part["rows"]:
                problems.append(f"{part['path']} holds other than {part['rows']} rows")
        return problems
