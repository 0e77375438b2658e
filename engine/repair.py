"""`rivet repair`: re-export only the chunks a reconcile found mismatched, as new parts of the same chunk run.

It runs through the runner (engine/run/runner.py, `Repair`) and so through the one commit path
(engine/run/commit.py) under the export's lock. The parts it replaces are marked `superseded` (in the new manifest,
then in the file log) and stay in place — nothing is deleted. The committed boundary is left alone; a clean
reconcile afterwards writes verified.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import events as ev
from engine.config import Config, ExportConfig
from engine.errors import ExitClass, RivetError
from engine.locks import export_lock
from engine.planner import new_run_id
from engine.reconcile import reconcile_export
from engine.run.runner import Repair, Runner, RunOptions
from engine.state import StateStore


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


def repair(config: Config, exp: ExportConfig, store: StateStore, *, report_file: str | None = None,
           execute: bool = False, emit: ev.Emit = ev.ignore, lock_wait_s: float = 60.0) -> RepairResult:
    if exp.mode != "chunked":
        raise RivetError("RIVET_REPAIR_NOT_CHUNKED", f"export {exp.name!r} is {exp.mode}; repair re-exports chunk windows",
                         "for other modes, run the export again")
    # the export's lock from the reconcile on: a run of the export cannot start a new chunk run under the repair
    with export_lock(config.state_path, exp.name, lock_wait_s):
        return _repair(config, exp, store, report_file, execute, emit, lock_wait_s)


def _repair(config: Config, exp: ExportConfig, store: StateStore, report_file: str | None, execute: bool,
            emit: ev.Emit, lock_wait_s: float) -> RepairResult:
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

    # The same path as a run, under the export's lock: new parts → file log → manifest (old parts superseded in
    # it) → _SUCCESS → state marks the old parts superseded. A crash before the end leaves state counting old and
    # new parts: reconcile then reports a mismatch, never a false "verified".
    assert run["chunk_column"] is not None   # the runner records the chunk column of every chunk run
    spec = Repair(run["run_id"], run["chunk_column"], tuple((c["index"], c["lo"], c["hi"]) for c in result.chunks),
                  new_run_id())
    with Runner(config, store, emit, RunOptions(lock_wait_s=lock_wait_s)) as runner:
        done = runner.run_export(exp, repair=spec, locked=True)
    if done.error is not None:
        raise done.error
    result.executed = True
    result.rows_written = done.rows
    result.new_parts = done.parts
    result.superseded = done.superseded
    store.journal(exp.name, run["run_id"], "ChunksRepaired",
                  {"chunks": [c["index"] for c in result.chunks], "rows": done.rows, "superseded": done.superseded,
                   "repair_id": spec.repair_id})
    return result
