"""`rivet check`: preflight per export without reading data — strategy, row estimate, chunk count, and every
column's type mapping with its fidelity (the same decision every read uses)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine import guardrails, layouts
from engine.config import Config
from engine.errors import RivetError
from engine.planner import check_mappings, plan_export, relation_of
from engine.sources import open_source
from engine.types import map_columns


@dataclass
class CheckReport:
    export: str
    strategy: str
    rows_estimate: int | None = None
    chunks: int | None = None
    chunk_unit: str = "chunks"             # "pages" for keyset chunking (chunk_by_key)
    columns: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    guardrails: list[str] = field(default_factory=list)   # configured quality gates and meta columns
    layout: list[str] = field(default_factory=list)       # compression, row groups (engine/layouts.py)
    error: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_exports(config: Config, store, names: list[str] | None = None) -> list[CheckReport]:
    reports = []
    for exp in config.select(names):
        report = CheckReport(exp.name, exp.mode, guardrails=guardrails.describe(exp), layout=layouts.describe(exp),
                             chunk_unit="pages" if exp.chunk_by_key else "chunks")
        try:
            with open_source(config.source, exp.tuning) as src:
                rel = relation_of(exp)
                mappings = map_columns(src.engine, src.describe(rel), exp.columns, src.dialect)
                report.columns = [{"name": m.name, "native_type": m.native_type, "arrow_type": str(m.arrow_type),
                                   "fidelity": m.fidelity, "note": m.note} for m in mappings]
                report.rows_estimate = src.estimate_rows(rel)
                check_mappings(exp, mappings, strict=False)
                plan = plan_export(exp, src, store)
                guardrails.precheck(exp, plan.write_schema.names, exp.destination.type)
                report.chunks = plan.chunks_total if exp.mode == "chunked" else None
                report.warnings = plan.warnings + [f"schema change: {c}" for c in plan.schema_changes]
        except RivetError as e:
            report.error = e.to_dict()
        reports.append(report)
    return reports
