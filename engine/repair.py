"""`rivet repair`: re-export only the chunks a reconcile found mismatched, as new parts of the same chunk run.

The parts they replace are marked `superseded` (in the file log and the new manifest) and stay in place — nothing
is deleted. The committed boundary is left alone; a clean reconcile afterwards writes verified.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from engine.config import Config, ExportConfig
from engine.destinations import open_destination
from engine.errors import ExitClass, RivetError
from engine.manifest import MANIFEST, SUCCESS, build_manifest, manifest_bytes, run_manifest_name, schema_fingerprint, success_bytes
from engine.planner import TaskSpec, new_run_id, parse_bound, plan_export, run_started_at, window_predicate
from engine.reconcile import reconcile_export
from engine.runner import execute_task
from engine.sources import open_source


@dataclass
class RepairResult:
    export: str
    run_id: str
    chunks: list[dict] = field(default_factory=list)      # [{index, lo, hi, source_rows, recorded_rows}]
    executed: bool = False
    rows_written: int = 0
    superseded: list[str] = field(default_factory=list)
    new_parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _load_report(path: str, export: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        reports = data["reports"] if "reports" in data else [data]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RivetError("RIVET_REPAIR_BAD_REPORT", f"cannot read reconcile report {path}: {e}",
                         "save one with `rivet reconcile -e NAME -o FILE`")
    for r in reports:
        if r.get("export") == export:
            return r
    raise RivetError("RIVET_REPAIR_OTHER_EXPORT", f"{path} holds no reconcile report for export {export!r}",
                     f"reconcile it first: `rivet reconcile -e {export} -o FILE`")


def repair(config: Config, exp: ExportConfig, store, *, report_file: str | None = None,
           execute: bool = False) -> RepairResult:
    if exp.mode != "chunked":
        raise RivetError("RIVET_REPAIR_NOT_CHUNKED", f"export {exp.name!r} is {exp.mode}; repair re-exports chunk windows",
                         "for other modes, run the export again")
    report = _load_report(report_file, exp.name) if report_file else reconcile_export(config, exp, store).to_dict()
    run = store.latest_chunk_run(exp.name)
    if run is None or report.get("run_id") != run["run_id"]:
        raise RivetError("RIVET_REPAIR_STALE_REPORT", f"the reconcile report is for run {report.get('run_id')}, "
                         f"the latest chunk run is {run['run_id'] if run else 'none'}",
                         f"reconcile again: `rivet reconcile -e {exp.name}`", ExitClass.REFUSED)
    result = RepairResult(exp.name, run["run_id"])
    result.chunks = [{k: c[k] for k in ("index", "lo", "hi", "source_rows", "recorded_rows")}
                     for c in report["checks"] if c["status"] == "mismatch"]
    if not execute or not result.chunks:
        return result

    with open_source(config.source, exp.tuning) as src:
        plan = plan_export(exp, src, store)
    plan.run_id = run["run_id"]
    d = src.dialect
    col = next(m for m in plan.mappings if m.name == run["chunk_column"])
    qcol = d.quote_ident(col.name)
    exprs = [m.select_expr for m in plan.mappings]
    old_parts = {}
    for f in store.files(exp.name, run_id=run["run_id"]):
        if f.get("status", "committed") == "committed":
            old_parts.setdefault(f["chunk_index"], []).append(f["path"])
    dest = open_destination(exp.destination, exp.name, run["run_id"], run_started_at(run["run_id"]))
    repair_id = new_run_id()
    for c in result.chunks:
        lo, hi = parse_bound(c["lo"], col.arrow_type), parse_bound(c["hi"], col.arrow_type)
        task = TaskSpec(c["index"], d.select(plan.relation, exprs, window_predicate(exp, d, qcol, lo, hi), []),
                        c["lo"], c["hi"])
        tr = execute_task(task, plan, config.source, dest, lambda e: None)
        for part in tr.parts:   # new parts are durable before the old ones are marked superseded
            store.log_file(exp.name, run["run_id"], part.name, part.rows, part.size_bytes, part.content_hash,
                           c["index"], exp.format, exp.compression)
            result.new_parts.append(part.name)
        replaced = old_parts.get(c["index"], [])
        if replaced:
            store.supersede_files(exp.name, replaced)
            result.superseded += replaced
        result.rows_written += tr.rows
        store.journal(exp.name, run["run_id"], "ChunkRepaired",
                      {"chunk_index": c["index"], "rows": tr.rows, "superseded": replaced, "repair_id": repair_id})
    dest.close()

    files = store.files(exp.name, run_id=run["run_id"])
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    manifest = build_manifest(
        run_id=run["run_id"], export_name=exp.name, mode=exp.mode, started_at=run.get("created_at") or now,
        finished_at=now, status="succeeded", source_engine=config.source.type, source_table=exp.table,
        dest_kind=dest.kind, dest_uri=dest.uri, fmt=exp.format, compression=exp.compression,
        schema_fingerprint=schema_fingerprint(plan.write_schema),
        parts=[{"path": f["path"], "rows": f["rows"], "size_bytes": f["size_bytes"], "content_hash": f["content_hash"],
                "status": f.get("status", "committed"), "chunk_index": f.get("chunk_index")} for f in files],
        chunk_run={"chunk_column": run["chunk_column"], "repair_id": repair_id})
    data = manifest_bytes(manifest)
    dest.put_bytes(run_manifest_name(repair_id), data)
    dest.put_bytes(MANIFEST, data)
    dest.put_bytes(SUCCESS, success_bytes(data))
    result.executed = True
    return result
