"""Sealed plan artifacts (`rivet plan` / `rivet apply`) and the diff of a plan against current state.

An artifact holds, per export, the exact SQL of every task, the output schema and the cursor snapshot, plus an
integrity hash over all of it. `apply` runs exactly that SQL. It refuses a modified artifact (never forceable),
one from another config, a stale one (> 24 h) and an incremental cursor that moved since planning (--force
bypasses those two).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from engine import layouts
from engine.config import Config
from engine.errors import ExitClass, RivetError
from engine.planner import ExportPlan, TaskSpec, new_run_id, plan_export, relation_of
from engine.sources import open_source
from engine.types import ColumnMapping

PLAN_VERSION = 1
PLAN_TTL = timedelta(hours=24)


@dataclass
class ExportDiff:
    """What running this plan would change, per export. Plain data: the CLI prints it, the TUI colours it."""
    export: str
    strategy: str
    first_run: bool
    cursor_from: str | None = None
    cursor_to: str | None = None           # observed MAX of the cursor now (incremental; at most the settle horizon)
    settle_horizon: str | None = None      # incremental with settle: rows with a later cursor are held back
    rows_estimate: int | None = None
    chunks_new: int = 0
    chunks_done: int = 0
    chunks_redo: int = 0
    chunk_ranges: list[dict] = field(default_factory=list)   # [{index, lo, hi, state: new|done|redo}]
    keyset: str | None = None              # chunk_by_key's column: the chunks are keyset pages (lo, hi]
    schema_changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layout: list[str] = field(default_factory=list)       # compression, row groups (engine/layouts.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _schema_from(b64: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(b64)))


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _export_config_dict(exp) -> dict:
    """The resolved export config as plain data: env var NAMES stay, resolved secrets never appear in it."""
    return exp.model_dump(mode="json")


def _source_identity(config: Config) -> dict:
    return {"type": config.source.type, "url": config.source.masked_url()}


def diff_for(plan: ExportPlan, store, src) -> ExportDiff:
    exp = plan.export
    runs = store.metrics(exp.name, 1)
    diff = ExportDiff(exp.name, exp.mode, first_run=not runs, rows_estimate=plan.rows_estimate,
                      schema_changes=list(plan.schema_changes), warnings=list(plan.warnings),
                      layout=layouts.describe(exp), keyset=exp.chunk_by_key)
    if exp.mode == "incremental":
        diff.cursor_from = plan.cursor_from
        from engine.planner import cursor_text
        rel = relation_of(exp)
        settled = ""
        if plan.settle_horizon is not None:
            from engine.planner import cursor_value
            assert plan.cursor_column is not None   # incremental plans name their cursor
            horizon = cursor_value(plan.settle_horizon, plan.read_schema.field(plan.cursor_column).type)
            settled = f" WHERE {plan.cursor_expr} <= {src.dialect.literal(horizon)}"
            diff.settle_horizon = plan.settle_horizon
        value = src.scalar(f"SELECT MAX({plan.cursor_expr}) FROM {src.dialect.relation_sql(rel)}{settled}")
        diff.cursor_to = cursor_text(value)
    if exp.mode == "chunked":
        attempted = {}
        if plan.resumed:
            attempted = {t["chunk_index"]: t for t in store.chunk_tasks(plan.run_id)}
        for t in plan.tasks:
            prior = attempted.get(t.index)
            state = "redo" if prior and (prior.get("attempts") or 0) > 0 else "new"
            diff.chunk_ranges.append({"index": t.index, "lo": t.lo, "hi": t.hi, "state": state})
        for t in attempted.values():
            if t["status"] == "completed":
                diff.chunk_ranges.append({"index": t["chunk_index"], "lo": t["lo"], "hi": t["hi"], "state": "done"})
        diff.chunk_ranges.sort(key=lambda c: c["index"])
        diff.chunks_new = sum(c["state"] == "new" for c in diff.chunk_ranges)
        diff.chunks_redo = sum(c["state"] == "redo" for c in diff.chunk_ranges)
        diff.chunks_done = sum(c["state"] == "done" for c in diff.chunk_ranges)
    return diff


def _plan_entry(plan: ExportPlan, diff: ExportDiff) -> dict:
    return {
        "name": plan.export.name,
        "config": _export_config_dict(plan.export),
        "strategy": plan.export.mode,
        "run_id": plan.run_id,
        "resumed": plan.resumed,
        "relation": dataclasses.asdict(plan.relation),
        "mappings": [{"name": m.name, "native_type": m.native_type, "arrow_type": str(m.arrow_type),
                      "fidelity": m.fidelity, "select_expr": m.select_expr, "note": m.note} for m in plan.mappings],
        "read_schema": _schema_b64(plan.read_schema),
        "write_schema": _schema_b64(plan.write_schema),
        "batch_rows": plan.batch_rows,
        "rows_estimate": plan.rows_estimate,
        "cursor": {"column": plan.cursor_column, "expr": plan.cursor_expr, "from": plan.cursor_from,
                   "identity": plan.cursor_identity, "settle_horizon": plan.settle_horizon},
        "chunk_column": plan.chunk_column,
        "chunks_total": plan.chunks_total,
        "chunks_done": plan.chunks_done,
        "plan_hash": plan.plan_hash,
        "tasks": [dataclasses.asdict(t) for t in plan.tasks],
        "diff": diff.to_dict(),
    }


def build_plan(config: Config, store, names: list[str] | None = None, now: datetime | None = None) -> dict:
    """Plan every selected export (reads no data rows, writes no state) and seal the result."""
    now = now or datetime.now(timezone.utc)
    entries = []
    for exp in config.select(names):
        with open_source(config.source, exp.tuning) as src:
            plan = plan_export(exp, src, store, run_id=new_run_id(now))
            entries.append(_plan_entry(plan, diff_for(plan, store, src)))
    body = {
        "plan_version": PLAN_VERSION,
        "plan_id": "plan-" + new_run_id(now),
        "created_at": now.isoformat(timespec="seconds"),
        "expires_at": (now + PLAN_TTL).isoformat(timespec="seconds"),
        "config_path": str(config.path),
        "source": _source_identity(config),
        "exports": entries,
    }
    return seal(body)


def seal(body: dict) -> dict:
    body = {k: v for k, v in body.items() if k != "integrity"}
    return {**body, "integrity": "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()}


def diff_plan(artifact: dict) -> list[ExportDiff]:
    return [ExportDiff(**e["diff"]) for e in artifact["exports"]]


def load_plan(path: str | Path) -> dict:
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise RivetError("RIVET_PLAN_NOT_FOUND", f"cannot read plan {path}: {e.strerror}", "write one with `rivet plan -o FILE`")
    try:
        artifact = json.loads(text)   # bytes: a byte flip into invalid UTF-8 is a ValueError like any other
        if not isinstance(artifact, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise RivetError("RIVET_PLAN_INVALID", f"{path} is not a plan artifact (not JSON: {e})",
                         "write a fresh one with `rivet plan -o FILE`")
    required = ("plan_version", "plan_id", "created_at", "expires_at", "source", "exports", "integrity")
    if any(k not in artifact for k in required):
        raise RivetError("RIVET_PLAN_TAMPERED", f"{path} is incomplete (truncated or edited)",
                         "a plan cannot be repaired; write a fresh one with `rivet plan -o FILE`")
    if seal(artifact)["integrity"] != artifact["integrity"]:
        raise RivetError("RIVET_PLAN_TAMPERED", f"{path} was modified after it was sealed (integrity hash differs)",
                         "a modified plan is never applied, not even with --force; write a fresh one with `rivet plan`")
    try:
        _check_shape(artifact)
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException) as e:
        raise RivetError("RIVET_PLAN_INVALID", f"{path} is sealed but not a plan this rivet can apply "
                         f"({type(e).__name__}: {str(e)[:200]})", "write a fresh one with `rivet plan -o FILE`") from None
    return artifact


_ENTRY_TYPES = {"name": str, "config": dict, "strategy": str, "run_id": str, "resumed": bool, "mappings": list,
                "read_schema": str, "write_schema": str, "batch_rows": int, "cursor": dict, "chunks_total": int,
                "chunks_done": int, "plan_hash": str, "tasks": list, "diff": dict}


def _check_shape(artifact: dict) -> None:
    """Read everything apply reads, once: the integrity hash is no key, so a resealed artifact with a broken body
    (another tool, another version) must fail here as one clear error, not deep inside a run."""
    if artifact["plan_version"] != PLAN_VERSION:
        raise ValueError(f"plan_version {artifact['plan_version']!r}, this rivet writes {PLAN_VERSION}")
    datetime.fromisoformat(artifact["expires_at"])
    if not isinstance(artifact["source"], dict) or not isinstance(artifact["exports"], list):
        raise TypeError("source must be an object and exports a list")
    for entry in artifact["exports"]:
        for key, kind in _ENTRY_TYPES.items():
            if not isinstance(entry[key], kind):
                raise TypeError(f"exports[].{key} is not a {kind.__name__}")
        _schema_from(entry["read_schema"])
        schema = _schema_from(entry["write_schema"])
        for m in entry["mappings"]:
            schema.field(m["name"])
            if not all(isinstance(m[k], str) for k in ("native_type", "fidelity", "select_expr")):
                raise TypeError("exports[].mappings[] fields must be strings")
            m["note"]
        for t in entry["tasks"]:
            task = TaskSpec(**t)
            if not isinstance(task.sql, str) or not isinstance(task.index, (int, type(None))):
                raise TypeError("exports[].tasks[] need an integer index and SQL text")
        ExportDiff(**entry["diff"])
        if not isinstance(entry["diff"]["schema_changes"], list) or not isinstance(entry["diff"]["warnings"], list):
            raise TypeError("exports[].diff needs schema_changes and warnings lists")
        if not isinstance(entry["chunk_column"], (str, type(None))) or \
                not isinstance(entry["rows_estimate"], (int, type(None))):
            raise TypeError("exports[].chunk_column / rows_estimate have the wrong type")
        for key in ("column", "expr", "from", "identity"):
            if not isinstance(entry["cursor"][key], (str, type(None))):
                raise TypeError(f"exports[].cursor.{key} is not text")


def check_applicable(artifact: dict, config: Config, store, force: bool, now: datetime | None = None) -> None:
    now = now or datetime.now(timezone.utc)
    if artifact["source"] != _source_identity(config):
        raise RivetError("RIVET_PLAN_OTHER_CONFIG", "the plan was made for another source "
                         f"({artifact['source'].get('url')}), not {config.source.masked_url()}",
                         "apply it with the config it was planned from, or plan again")
    for entry in artifact["exports"]:
        exp = next((e for e in config.exports if e.name == entry["name"]), None)
        if exp is None:
            raise RivetError("RIVET_PLAN_EXPORT_MISSING", f"the plan runs export {entry['name']!r}, which is no longer "
                             "in the config", "plan again with the current config")
        if _export_config_dict(exp) != entry["config"]:
            raise RivetError("RIVET_PLAN_OTHER_CONFIG", f"export {entry['name']!r} changed in the config since the plan "
                             "was made", "plan again with the current config")
    if not force and now > datetime.fromisoformat(artifact["expires_at"]):
        raise RivetError("RIVET_PLAN_STALE", f"the plan expired at {artifact['expires_at']} (plans live 24 h)",
                         "plan again, or apply with --force", ExitClass.REFUSED)
    if not force:
        for entry in artifact["exports"]:
            if entry["strategy"] != "incremental":
                continue
            state = store.get_export_state(entry["name"]) or {}
            now_cursor = state.get("last_cursor_value")
            if now_cursor != entry["cursor"]["from"]:
                raise RivetError("RIVET_PLAN_CURSOR_MOVED", f"export {entry['name']!r}: the cursor moved since planning "
                                 f"({entry['cursor']['from']!r} → {now_cursor!r})",
                                 "plan again, or apply with --force (rows may be exported twice)", ExitClass.REFUSED)


def applied_runs(artifact: dict, store) -> list[str]:
    """Run ids of exports this plan already completed (the runner journals PlanApplied when one succeeds)."""
    done = []
    for entry in artifact["exports"]:
        for j in store.journal_for(entry["name"], entry["run_id"]):
            if j.get("event") == "PlanApplied":
                done.append(entry["run_id"])
                break
    return done


def plans_from_artifact(artifact: dict, config: Config) -> list[ExportPlan]:
    plans = []
    for entry in artifact["exports"]:
        exp = config.export(entry["name"])
        write_schema = _schema_from(entry["write_schema"])
        mappings = [ColumnMapping(m["name"], m["native_type"], write_schema.field(m["name"]).type, m["fidelity"],
                                  m["select_expr"], m["note"]) for m in entry["mappings"]]
        cur = entry["cursor"]
        plan = ExportPlan(exp, entry["run_id"], relation_of(exp), mappings, _schema_from(entry["read_schema"]),
                          write_schema, [TaskSpec(**t) for t in entry["tasks"]], entry["batch_rows"],
                          rows_estimate=entry["rows_estimate"], cursor_column=cur["column"], cursor_expr=cur["expr"],
                          cursor_from=cur["from"], cursor_identity=cur["identity"], chunk_column=entry["chunk_column"],
                          chunks_total=entry["chunks_total"], chunks_done=entry["chunks_done"],
                          resumed=entry["resumed"], plan_hash=entry["plan_hash"],
                          schema_changes=entry["diff"]["schema_changes"], warnings=entry["diff"]["warnings"],
                          plan_id=artifact["plan_id"], settle_horizon=cur.get("settle_horizon"))
        plans.append(plan)
    return plans
