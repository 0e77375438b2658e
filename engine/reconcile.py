"""`rivet reconcile`: count the source again with the extraction's own predicates and compare with what was
recorded. A report with zero mismatches and zero unknowns is the only thing that writes the verified boundary
(seed PG5); it is derived from a specific chunk run, so verified never passes committed (PG6)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from engine.config import Config, ExportConfig
from engine.destinations import open_destination
from engine.errors import ExitClass, RivetError
from engine.manifest import MANIFEST
from engine.planner import parse_bound, relation_of, run_started_at, window_predicate
from engine.secrets import redact
from engine.sources import open_source
from engine.types import map_columns


@dataclass
class ChunkCheck:
    index: int | None
    lo: str | None
    hi: str | None
    source_rows: int | None
    recorded_rows: int | None
    status: str                  # match | mismatch | unknown
    note: str = ""


@dataclass
class ReconcileReport:
    export: str
    strategy: str
    run_id: str | None
    checks: list[ChunkCheck] = field(default_factory=list)
    verified_written: bool = False

    @property
    def summary(self) -> dict:
        out = {"match": 0, "mismatch": 0, "unknown": 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    @property
    def ok(self) -> bool:
        s = self.summary
        return s["mismatch"] == 0 and s["unknown"] == 0

    def to_dict(self) -> dict:
        return {"export": self.export, "strategy": self.strategy, "run_id": self.run_id, "summary": self.summary,
                "ok": self.ok, "verified_written": self.verified_written,
                "checks": [asdict(c) for c in self.checks]}


def _count(src, sql: str) -> tuple[int | None, str]:
    try:
        return int(src.scalar(sql)), ""
    except RivetError as e:
        return None, redact(e.message)


def reconcile_export(config: Config, exp: ExportConfig, store) -> ReconcileReport:
    report = (_reconcile_chunked if exp.mode == "chunked" else _reconcile_whole)(config, exp, store)
    try:   # the journal keeps every reconcile's outcome, not only the verified boundary it may write
        store.journal(exp.name, report.run_id, "Reconciled",
                      {"summary": report.summary, "ok": report.ok, "verified_written": report.verified_written})
    except RivetError:
        pass
    return report


def _recorded_by_chunk(store, exp: ExportConfig, run_id: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for f in store.files(exp.name, run_id=run_id):
        if f.get("status", "committed") == "committed" and f.get("chunk_index") is not None:
            out[f["chunk_index"]] = out.get(f["chunk_index"], 0) + f["rows"]
    return out


def _manifest_rows_by_chunk(exp: ExportConfig, run_id: str) -> dict[int, int] | None:
    """Rows per chunk in the committed parts of the run's newest manifest in the destination (what a reader of the
    manifest reads), or None when no manifest of that run can be read."""
    dest = open_destination(exp.destination, exp.name, run_id, run_started_at(run_id))
    candidates = [MANIFEST] + sorted((name for name, _ in dest.list() if name.startswith("manifest-")), reverse=True)
    newest = None
    for name in candidates:
        try:
            m = json.loads(dest.get_bytes(name))
        except (RivetError, ValueError):
            continue
        if isinstance(m, dict) and m.get("run_id") == run_id and (
                newest is None or str(m.get("finished_at")) > str(newest.get("finished_at"))):
            newest = m
        if name == MANIFEST and newest is not None:
            break   # manifest.json is the newest manifest of the prefix
    if newest is None:
        return None
    out: dict[int, int] = {}
    for p in newest.get("parts", []):
        if p.get("status", "committed") == "committed" and p.get("chunk_index") is not None:
            out[p["chunk_index"]] = out.get(p["chunk_index"], 0) + p["rows"]
    return out


def _reconcile_chunked(config: Config, exp: ExportConfig, store) -> ReconcileReport:
    run = store.latest_chunk_run(exp.name)
    if not exp.chunk_checkpoint or run is None:
        raise RivetError("RIVET_RECONCILE_NO_CHUNK_RUN", f"export {exp.name!r} has no checkpointed chunk run to reconcile",
                         "set chunk_checkpoint = true and run the export first", ExitClass.USAGE)
    report = ReconcileReport(exp.name, "chunked", run["run_id"])
    recorded = _recorded_by_chunk(store, exp, run["run_id"])
    # State and the destination must tell the same story: an interrupted repair can leave them apart, and then a
    # clean count against state alone would certify parts a reader of the manifest never sees.
    in_manifest = None if exp.destination.type == "stdout" else _manifest_rows_by_chunk(exp, run["run_id"])
    rel = relation_of(exp)
    with open_source(config.source, exp.tuning) as src:
        d = src.dialect
        column = run.get("chunk_column") or exp.chunk_column
        cols = {c.name: c for c in src.describe(rel)}
        if column not in cols:
            raise RivetError("RIVET_RECONCILE_NO_SUCH_COLUMN", f"chunk column {column!r} is no longer in the relation",
                             "the source changed since the run; run the export again")
        arrow_type = map_columns(src.engine, [cols[column]], {}, d)[0].arrow_type
        qcol = d.quote_ident(column)
        for t in store.chunk_tasks(run["run_id"]):
            lo, hi = parse_bound(t["lo"], arrow_type), parse_bound(t["hi"], arrow_type)
            n, note = _count(src, d.count(rel, window_predicate(exp, d, qcol, lo, hi)))
            rec = recorded.get(t["chunk_index"], 0) if t["status"] == "completed" else None
            if rec is None:
                status, note = "unknown", note or f"chunk is {t['status']}"
            elif in_manifest is None and exp.destination.type != "stdout":
                status, note = "unknown", "no manifest of this run can be read in the destination"
            elif n is None:
                status = "unknown"
            elif in_manifest is not None and in_manifest.get(t["chunk_index"], 0) != rec:
                # what a reader of the manifest gets is what counts; state telling another story is a mismatch too
                listed = in_manifest.get(t["chunk_index"], 0)
                status, note = "mismatch", (f"state records {rec} rows, the destination's manifest lists {listed} "
                                            "(an interrupted repair?); `rivet repair` exports the window again")
                rec = listed
            else:
                status = "match" if n == rec else "mismatch"
            report.checks.append(ChunkCheck(t["chunk_index"], t["lo"], t["hi"], n, rec, status, note))
    if report.ok and run["status"] == "completed" and report.checks:
        last = max(c.index for c in report.checks if c.index is not None)   # every chunk check has an index
        store.record_verified_chunked(exp.name, last, run["run_id"])
        report.verified_written = True
    return report


def _reconcile_whole(config: Config, exp: ExportConfig, store) -> ReconcileReport:
    """Incremental / full / time-window: one whole-export count (no partitions → no verified boundary)."""
    files = [f for f in store.files(exp.name) if f.get("status", "committed") == "committed"]
    if not files and not store.metrics(exp.name):
        raise RivetError("RIVET_RECONCILE_NEVER_RAN", f"export {exp.name!r} never ran", f"run `rivet run -e {exp.name}` first")
    rel = relation_of(exp)
    report = ReconcileReport(exp.name, exp.mode, None)
    with open_source(config.source, exp.tuning) as src:
        d = src.dialect
        if exp.mode == "incremental":
            state = store.get_export_state(exp.name) or {}
            cursor = state.get("last_cursor_value")
            recorded = sum(f["rows"] for f in files)
            where = []
            if cursor is not None:
                cols = {c.name: c for c in src.describe(rel)}
                expr = d.quote_ident(exp.cursor_column)
                if exp.incremental_cursor_mode == "coalesce":
                    expr = f"COALESCE({expr}, {d.quote_ident(exp.cursor_fallback_column)})"
                from engine.planner import cursor_value
                t = map_columns(src.engine, [cols[exp.cursor_column]], {}, d)[0].arrow_type
                where = [f"({expr} <= {d.literal(cursor_value(cursor, t))} OR {expr} IS NULL)"]
            report.run_id = state.get("last_run_id")
        else:
            last = next((m for m in store.metrics(exp.name) if m["status"] == "succeeded"), None)
            recorded = last["rows"] if last else None
            report.run_id = last["run_id"] if last else None
            where = []
            if exp.mode == "time_window":
                bound = (d.unix_now_minus_days(exp.days_window) if exp.time_column_type == "unix"
                         else d.now_minus_days(exp.days_window))
                where = [f"{d.quote_ident(exp.time_column)} >= {bound}"]
        n, note = _count(src, d.count(rel, where))
    status = "unknown" if n is None or recorded is None else ("match" if n == recorded else "mismatch")
    if exp.mode != "incremental" and status == "mismatch":
        note = "the source changed since the last run, or rows were lost; rerun the export"
    report.checks.append(ChunkCheck(None, None, None, n, recorded, status, note))
    return report


def reconcile_many(config: Config, store, names: list[str] | None = None) -> list[ReconcileReport]:
    return [reconcile_export(config, exp, store) for exp in config.select(names)]


__all__ = ["reconcile_export", "reconcile_many", "ReconcileReport", "ChunkCheck"]
