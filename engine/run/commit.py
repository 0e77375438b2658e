"""Certify a run: manifest → `_SUCCESS` → cursor, schema and chunk run → committed progression.

One path for `rivet run`, `rivet apply` and `rivet repair`, always called under the export's lock
(engine/locks.py) after every part of the run is durable in the destination and recorded in the file log. The
destination is written first and state after it, so a crash anywhere leaves state that claims no more than the
destination holds (docs/architecture.md, "Commit order"):

1. the part names are made durable (`Destination.sync`);
2. `manifest-<id>.json` then `manifest.json` (durable), naming every part of the run with its rows, size and hash;
   parts being replaced (repair) are already marked `superseded` in it;
3. a failed run stops here: its manifest says `"status": "failed"` and no `_SUCCESS` is written;
4. `_SUCCESS`, holding the hash of the manifest bytes (durable);
5. one state transaction: replaced parts marked superseded, the cursor (incremental), the schema, the chunk run
   completed;
6. the committed progression boundary, last and advisory (PG2, PG7 in docs/architecture.md): its failure is a warning.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import events as ev
from engine import layouts
from engine.destinations import Destination
from engine.errors import RivetError
from engine.faults import fault
from engine.manifest import (MANIFEST, SUCCESS, build_manifest, manifest_bytes, run_manifest_name, schema_fingerprint,
                             success_bytes)
from engine.planner import ExportPlan, cursor_text
from engine.secrets import redact
from engine.state import StateStore
from engine.state.rows import LoggedPart


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RunCommit:
    """What a finished run hands to the commit path."""
    plan: ExportPlan
    dest: Destination
    started: datetime
    finished: datetime
    failed: bool = False
    cursor_max: Any = None                  # incremental: the largest cursor value written
    superseded: list[str] = field(default_factory=list)   # parts this commit replaces (repair)
    manifest_id: str | None = None          # the immutable manifest's id (default: the run id; a repair has its own)
    chunk_run_note: dict = field(default_factory=dict)     # extra "chunk_run" fields for the manifest
    advance_cursor: bool = True             # False: certify the parts but keep the cursor (stdout without --force)
    files: Sequence[LoggedPart] | None = None   # the run's file log rows, when the caller has them at hand
    manifest_extra: dict = field(default_factory=dict)    # guardrails: "quality", "meta_columns" sections
    part_extra: dict = field(default_factory=dict)        # guardrails: part path → extra fields of its entry
    max_bytes: dict = field(default_factory=dict)         # layouts: text/binary column → largest value written

    @property
    def cursor_high(self) -> str | None:
        return cursor_text(self.cursor_max) if self.cursor_max is not None else self.plan.cursor_from


def certify(store: StateStore, source_engine: str, c: RunCommit, emit: ev.Emit) -> list[str]:
    """Steps 1-6 above. Raises on a destination or state failure (nothing after the failing step happens);
    returns warnings (a progression failure)."""
    plan, dest, exp = c.plan, c.dest, c.plan.export
    emit(ev.PhaseChanged(exp.name, plan.run_id, "manifest"))
    files = c.files if c.files is not None else store.files(exp.name, run_id=plan.run_id)
    replaced = set(c.superseded)
    parts = []
    for f in files:
        status = "superseded" if f["path"] in replaced else f.get("status", "committed")
        part = {"path": f["path"], "rows": f["rows"], "size_bytes": f["size_bytes"],
                "content_hash": f["content_hash"], "status": status}
        if f.get("chunk_index") is not None:
            part["chunk_index"] = f["chunk_index"]
        if "/" in f["path"] and exp.partition_by:   # a Hive partition's part (engine/layouts.py)
            part["partition"] = f["path"].rsplit("/", 1)[0]
        part.update(c.part_extra.get(f["path"], {}))   # guardrails hook: column checksums
        parts.append(part)
    chunk_run = None
    if exp.mode == "chunked":
        chunk_run = {"chunk_column": plan.chunk_column, "chunks": plan.chunks_total, **c.chunk_run_note}
    manifest = build_manifest(
        run_id=plan.run_id, export_name=exp.name, mode=exp.mode, started_at=iso(c.started),
        finished_at=iso(c.finished), status="failed" if c.failed else "succeeded", source_engine=source_engine,
        source_table=exp.table, dest_kind=dest.kind, dest_uri=dest.uri, fmt=exp.format, compression=exp.compression,
        schema_fingerprint=schema_fingerprint(plan.write_schema), parts=parts, cursor_low=plan.cursor_from,
        cursor_high=c.cursor_high, chunk_run=chunk_run)
    manifest.update(c.manifest_extra)   # guardrails hook (engine/guardrails.py)
    data = manifest_bytes(manifest)
    dest.sync()
    dest.put_bytes(run_manifest_name(c.manifest_id or plan.run_id), data)
    dest.put_bytes(MANIFEST, data)
    fault("after_manifest")
    if c.failed:
        if exp.mode == "chunked" and exp.chunk_checkpoint:
            store.finish_chunk_run(plan.run_id, "failed")
        return []
    dest.put_bytes(SUCCESS, success_bytes(data))
    fault("after_success")

    emit(ev.PhaseChanged(exp.name, plan.run_id, "committing"))
    moves_cursor = exp.mode == "incremental" and c.cursor_max is not None and c.advance_cursor
    stored = plan.stored_schema if plan.stored_schema is not None else dict(store.get_schema(exp.name) or {})
    columns = layouts.schema_columns(plan.mappings, stored or None, c.max_bytes)
    fingerprint = schema_fingerprint(plan.write_schema)
    with store.batch():   # state moves only now that the data it covers is durable (docs/architecture.md, "Commit order")
        if replaced:
            store.supersede_files(exp.name, sorted(replaced))
        if moves_cursor:
            cursor = cursor_text(c.cursor_max)
            assert cursor is not None   # moves_cursor: cursor_max is not None
            store.set_cursor(exp.name, cursor, exp.cursor_column, plan.cursor_identity, plan.run_id,
                             new=plan.has_state_row is False)
        if columns != stored.get("columns") or fingerprint != stored.get("fingerprint"):   # unchanged on most reruns
            store.set_schema(exp.name, columns, fingerprint, new=not stored)
        if exp.mode == "chunked" and exp.chunk_checkpoint:
            store.finish_chunk_run(plan.run_id, "completed")
    if moves_cursor:
        plan.has_state_row = True
        fault("after_cursor")
    warnings = _record_committed(store, plan, c.cursor_max if moves_cursor else None)
    fault("after_progression")
    return warnings


def _record_committed(store: StateStore, plan: ExportPlan, cursor_max: Any) -> list[str]:
    """Committed progression, written last (PG2): a failure here is a warning, never a failed run (PG7)."""
    exp = plan.export
    try:
        if exp.mode == "incremental" and cursor_max is not None:
            cursor = cursor_text(cursor_max)
            assert cursor is not None   # cursor_text maps only None to None
            store.record_committed_incremental(exp.name, cursor, plan.run_id)
        elif exp.mode == "chunked" and exp.chunk_checkpoint:
            done = [t["chunk_index"] for t in store.chunk_tasks(plan.run_id, status="completed")]
            if done:
                store.record_committed_chunked(exp.name, max(done), plan.run_id)
    except (RivetError, OSError) as e:
        return [f"could not record the committed boundary: {redact(str(e))}"]
    return []
