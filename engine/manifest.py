"""manifest.json, manifest-<run_id>.json and _SUCCESS (docs/architecture.md, "Commit order")."""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"


def run_manifest_name(run_id: str) -> str:
    return f"manifest-{run_id}.json"


def schema_fingerprint(schema: pa.Schema) -> str:
    cols = [[f.name, str(f.type), (f.metadata or {}).get(b"rivet.native_type", b"").decode()] for f in schema]
    return "sha256:" + hashlib.sha256(json.dumps(cols).encode()).hexdigest()


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n").encode()


def success_bytes(manifest_data: bytes) -> bytes:
    """_SUCCESS holds the hash of the exact manifest.json bytes it certifies."""
    return f"sha256:{hashlib.sha256(manifest_data).hexdigest()}\n".encode()


def build_manifest(*, run_id: str, export_name: str, mode: str, started_at: str, finished_at: str, status: str,
                   source_engine: str, source_table: str | None, dest_kind: str, dest_uri: str, fmt: str,
                   compression: str, schema_fingerprint: str, parts: list[dict], cursor_low: str | None = None,
                   cursor_high: str | None = None, chunk_run: dict | None = None) -> dict:
    live = [p for p in parts if p.get("status", "committed") == "committed"]
    m = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run_id,
        "export_name": export_name,
        "mode": mode,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "source": {"engine": source_engine, "table": source_table},
        "destination": {"kind": dest_kind, "uri": dest_uri},
        "format": fmt,
        "compression": compression,
        "schema_fingerprint": schema_fingerprint,
        "row_count": sum(p["rows"] for p in live),
        "part_count": len(live),
        "parts": parts,
    }
    if mode == "incremental":
        m["cursor_low"], m["cursor_high"] = cursor_low, cursor_high
    if chunk_run:
        m["chunk_run"] = chunk_run
    return m
