"""Turn one export's config + the source + state into an ExportPlan: the exact SQL each task will run.

Planning reads no data rows and writes no state: it describes the relation, maps types, checks schema drift and
cursor identity, and for chunked exports reads MIN/MAX (plus one GROUP BY over the key when it is sparse). The
runner persists what a plan implies (a new chunk run, or the reset of an interrupted one) when it starts it.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa

from engine import guardrails, layouts
from engine.config import ExportConfig
from engine.errors import ExitClass, RivetError
from engine.sources.base import Relation, Source
from engine.sql import check_select
from engine.types import ColumnMapping, map_columns, output_schema

CURSOR_FIELD = "__rivet_cursor"     # synthetic coalesce column: read, tracked, never written
MAX_BATCH_ROWS = 122_880           # DuckDB's row-group size
DEFAULT_CHUNK_SIZE = 100_000      # key span per chunk when the config names no chunking
SPARSE_MIN_WINDOWS = 1000           # below this many windows, empty ones cost nothing worth avoiding


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task needs: a pure description (source window → part files), no state access."""
    index: int | None               # chunk index; None for single-task modes
    sql: str
    lo: str | None = None
    hi: str | None = None
    scan_table: str | None = None
    split: tuple[str, ...] = ()     # the same window as consecutive sub-windows (empty: read `sql`)...
    readers: int = 1                # ...read by this many threads side by side, each taking the next when done


@dataclass
class ExportPlan:
    export: ExportConfig
    run_id: str
    relation: Relation
    mappings: list[ColumnMapping]
    read_schema: pa.Schema          # what the source returns (may include the synthetic cursor column)
    write_schema: pa.Schema         # what is written
    tasks: list[TaskSpec]
    batch_rows: int
    rows_estimate: int | None = None
    cursor_column: str | None = None        # column name in the batches whose max becomes the new cursor
    cursor_expr: str | None = None          # SQL expression of the cursor (identity)
    cursor_from: str | None = None          # stored cursor this plan reads after
    cursor_identity: str | None = None
    chunk_column: str | None = None
    chunks_total: int = 0                   # chunked: all windows of the chunk run
    chunks_done: int = 0                    # chunked: windows completed by an earlier attempt (resume)
    resumed: bool = False
    plan_hash: str = ""
    schema_changes: list[str] = field(default_factory=list)
    # the export's schema row in state when planned (certify writes it only when it changed); None: not read
    stored_schema: dict | None = None
    # whether the export had a state row when planned (False: its first run writes it with one statement, not two)
    has_state_row: bool | None = None
    warnings: list[str] = field(default_factory=list)
    plan_id: str | None = None              # set when the plan came from a sealed artifact (`rivet apply`)
    settle_horizon: str | None = None       # incremental with settle: rows with a later cursor are held back


def new_run_id(now: datetime | None = None) -> str:
    import secrets
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_started_at(run_id: str) -> datetime:
    """The instant a run id was minted: fills {date} so a resumed run writes to its original prefix."""
    try:
        return datetime.strptime(run_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)


def relation_of(exp: ExportConfig) -> Relation:
    """What the export reads. A query is checked to be one SELECT before anything is sent to the source."""
    if exp.table:
        return Relation(table=exp.table)
    check_select(exp.query or "")
    return Relation(query=exp.query)


def relation_identity(rel: Relation) -> str:
    """What the export reads, for the cursor-owner check: the table, or the relations a query reads."""
    if rel.table:
        return "table:" + rel.table.lower()
    names = re.findall(r"(?is)\b(?:from|join)\s+([\w.\"`\[\]]+)", rel.query or "")
    return "query:" + ",".join(sorted({n.strip('"`[]').lower() for n in names}))


def batch_rows_for(exp: ExportConfig, schema: pa.Schema) -> int:
    if exp.tuning.batch_size:
        return exp.tuning.batch_size
    width = 0
    for f in schema:
        width += f.type.byte_width if pa.types.is_primitive(f.type) and f.type.bit_width >= 8 else 32
    rows = exp.tuning.batch_size_memory_mb * 1024 * 1024 // max(width, 1)
    # Larger batches buy no throughput past ~one Parquet row group, only memory (read-ahead holds a few).
    return int(min(max(rows, 2048), MAX_BATCH_ROWS))


def cursor_text(value) -> str | None:
    """State keeps cursors as text that parses back to the identical value (no µs or zone loss)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, (date, Decimal, int)):
        return str(value) if not isinstance(value, date) else value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def cursor_value(text: str, arrow_type: pa.DataType):
    """Parse a stored cursor back into a typed value for the dialect's literal()."""
    if pa.types.is_integer(arrow_type):
        return int(text)
    if pa.types.is_decimal(arrow_type):
        return Decimal(text)
    if pa.types.is_floating(arrow_type):
        return float(text)
    if pa.types.is_timestamp(arrow_type):
        return datetime.fromisoformat(text)
    if pa.types.is_date(arrow_type):
        return date.fromisoformat(text)
    return text


def _mapping(mappings: list[ColumnMapping], name: str | None, export: str, what: str) -> ColumnMapping:
    if name is None:   # load_config refuses a mode without its column; an ExportConfig built in code may not
        raise RivetError("RIVET_CONFIG_MISSING_KEY", f"export {export!r}: {what} is not set",
                         f"set {what} in [[exports]]")
    for m in mappings:
        if m.name == name:
            return m
    for m in mappings:
        if m.name.lower() == name.lower():
            return m
    import difflib
    close = difflib.get_close_matches(name, [m.name for m in mappings], n=1)
    raise RivetError("RIVET_PLAN_NO_SUCH_COLUMN", f"export {export!r}: {what} {name!r} is not a column of the relation",
                     f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(m.name for m in mappings))


def check_mappings(exp: ExportConfig, mappings: list[ColumnMapping], strict: bool) -> None:
    refused = [m for m in mappings if m.fidelity == "refused"]
    if refused:
        m = refused[0]
        raise RivetError("RIVET_TYPE_REFUSED", f"export {exp.name!r}: column {m.name!r} ({m.native_type}) cannot be "
                         f"delivered exactly: {m.note}",
                         f'add [exports.columns] {m.name} = "text" (or "skip") to the export', ExitClass.USAGE)
    if strict:
        lossy = [m for m in mappings if m.fidelity != "exact"]
        if lossy:
            raise RivetError("RIVET_TYPE_NOT_EXACT", f"export {exp.name!r}: --strict and column {lossy[0].name!r} "
                             f"({lossy[0].native_type}) is delivered as {lossy[0].fidelity}",
                             "run `rivet check` to see every mapping; drop --strict to accept text forms")


def schema_changes(stored: list[dict] | None, mappings: list[ColumnMapping]) -> list[str]:
    if not stored:
        return []
    old = {c["name"]: c["type"] for c in stored}
    new = {m.name: m.native_type for m in mappings if m.fidelity != "refused"}
    changes = [f"+ {n} {t}" for n, t in new.items() if n not in old]
    changes += [f"- {n} {t}" for n, t in old.items() if n not in new]
    changes += [f"~ {n} {old[n]} -> {t}" for n, t in new.items() if n in old and old[n] != t]
    return changes


def _plan_hash(exp: ExportConfig, read_schema: pa.Schema, base_sql: str) -> str:
    keyset = [f"key:{exp.chunk_by_key}"] if exp.chunk_by_key else []   # absent: hashes of other plans unchanged
    key = json.dumps([exp.chunk_column, exp.chunk_size, exp.chunk_count, exp.chunk_by_days, base_sql,
                      [str(f.type) for f in read_schema]] + keyset, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def plan_export(exp: ExportConfig, src: Source, store, *, strict: bool = False, resume: bool = False,
                force: bool = False, run_id: str | None = None, stored_rows: Future | None = None) -> ExportPlan:
    """`stored_rows`: store.read_export_rows(exp.name) started by the caller (else read here)."""
    d = src.dialect
    rel = relation_of(exp)
    _check_keyset_config(exp)
    columns = src.describe(rel)
    mappings = map_columns(src.engine, columns, exp.columns, d)
    check_mappings(exp, mappings, strict)
    mappings = [m for m in mappings if m.fidelity != "refused"]
    write_schema = output_schema(mappings)
    select_exprs = [m.select_expr for m in mappings]
    read_fields = list(write_schema)
    plan = ExportPlan(exp, run_id or new_run_id(), rel, mappings, write_schema, write_schema, [], 0)
    plan.rows_estimate = src.estimate_rows(rel)
    stored, state = stored_rows.result() if stored_rows is not None else store.export_rows(exp.name)
    plan.schema_changes = schema_changes(stored["columns"] if stored else None, mappings)
    plan.stored_schema = dict(stored) if stored else {}
    plan.has_state_row = state is not None
    where: list[str] = []
    order_by: list[str] = []

    if exp.mode == "incremental":
        cur = _mapping(mappings, exp.cursor_column, exp.name, "cursor_column")
        expr = d.quote_ident(cur.name)
        if exp.incremental_cursor_mode == "coalesce":
            fb = _mapping(mappings, exp.cursor_fallback_column, exp.name, "cursor_fallback_column")
            expr = f"COALESCE({expr}, {d.quote_ident(fb.name)})"
            select_exprs.append(f"{expr} AS {d.quote_ident(CURSOR_FIELD)}")
            read_fields.append(pa.field(CURSOR_FIELD, cur.arrow_type))
            plan.cursor_column = CURSOR_FIELD
        else:
            plan.cursor_column = cur.name
        plan.cursor_expr = expr
        plan.cursor_identity = cursor_identity_for(exp)
        if state and state.get("last_cursor_value") is not None:
            if state.get("cursor_identity") and state["cursor_identity"] != plan.cursor_identity:
                raise RivetError(
                    "RIVET_CURSOR_OWNER_MISMATCH",
                    f"export {exp.name!r}: the stored cursor belongs to {state['cursor_identity']!r}, the config now "
                    f"reads {plan.cursor_identity!r}; comparing a new column against the old cursor selects the wrong rows",
                    f"`rivet state accept -e {exp.name}` keeps the cursor for the new column, "
                    f"`rivet state reset -e {exp.name}` forgets it", ExitClass.REFUSED)
            plan.cursor_from = state["last_cursor_value"]
            where.append(f"{expr} > {d.literal(cursor_value(plan.cursor_from, cur.arrow_type))}")
        if exp.settle:   # guardrails: rows younger than the settle horizon wait; the cursor never passes it
            horizon = guardrails.settle_horizon(exp.name, src.engine, exp.settle, cur.name, cur.arrow_type,
                                                src.scalar)
            plan.settle_horizon = cursor_text(horizon)
            where.append(f"{expr} <= {d.literal(horizon)}")
        order_by.append(expr)
    elif exp.mode == "time_window":
        tcol = _mapping(mappings, exp.time_column, exp.name, "time_column")
        bound = d.unix_now_minus_days(exp.days_window) if exp.time_column_type == "unix" else d.now_minus_days(exp.days_window)
        where.append(f"{d.quote_ident(tcol.name)} >= {bound}")

    guarded = _value_guards(exp, d, mappings, select_exprs, read_fields)
    plan.read_schema = pa.schema(read_fields)
    plan.batch_rows = batch_rows_for(exp, plan.read_schema)
    base_sql = d.select(rel, select_exprs, where, order_by)

    if exp.mode != "chunked":
        if resume and not force:
            raise RivetError("RIVET_RUN_NOTHING_TO_RESUME", f"export {exp.name!r} is {exp.mode}: only chunked runs "
                             "with chunk_checkpoint can be resumed", "run without --resume")
        plain_scan = (rel.table and not where and not order_by and not guarded
                      and all(m.select_expr == d.quote_ident(m.name) or m.scan_checkable for m in mappings)
                      and len(mappings) == len(columns))
        plan.tasks = [TaskSpec(None, base_sql, scan_table=rel.table if plain_scan else None)]
        plan.plan_hash = _plan_hash(exp, plan.read_schema, base_sql)
        return plan

    _plan_chunks(plan, src, store, select_exprs, resume, force)
    return plan


def _value_guards(exp: ExportConfig, d, mappings: list[ColumnMapping], select_exprs: list[str],
                  read_fields: list) -> bool:
    """max_value_mb (docs/layouts.md): each text/binary value above the ceiling is sent as NULL, and a guard
    column beside it carries its size, so the huge value never crosses the wire and the task refuses the export
    naming the column. Returns whether any column is guarded (then the plain table scan, which selects columns by
    name, cannot be used)."""
    if not exp.max_value_mb:
        return False
    limit = exp.max_value_mb * 1024 * 1024
    guarded = False
    for i, m in enumerate(mappings):
        if not layouts.is_large_value(m.arrow_type):
            continue
        alias = f" AS {d.quote_ident(m.name)}"
        value = m.select_expr[:-len(alias)] if m.select_expr.endswith(alias) else m.select_expr
        size = d.byte_length(value)
        select_exprs[i] = f"CASE WHEN {size} > {limit} THEN NULL ELSE {value} END{alias}"
        field = layouts.guard_field(i, m.name)
        select_exprs.append(f"CASE WHEN {size} > {limit} THEN {size} END AS {d.quote_ident(field.name)}")
        read_fields.append(field)
        guarded = True
    return guarded


def _chunk_column(exp: ExportConfig, src: Source, mappings: list[ColumnMapping]) -> ColumnMapping:
    if exp.chunk_column:
        col = _mapping(mappings, exp.chunk_column, exp.name, "chunk_column")
    else:
        pk = src.primary_key(exp.table) if exp.table else []
        ints = [c for c in pk if _mapping(mappings, c.name, exp.name, "primary key").arrow_type and
                pa.types.is_integer(_mapping(mappings, c.name, exp.name, "primary key").arrow_type)]
        if len(pk) != 1 or len(ints) != 1:
            raise RivetError("RIVET_PLAN_NO_CHUNK_COLUMN",
                             f"export {exp.name!r}: no chunk_column and the table has no single-integer primary key",
                             "set chunk_column to an integer or date/timestamp column")
        col = _mapping(mappings, pk[0].name, exp.name, "primary key")
    t = col.arrow_type
    if exp.chunk_by_days:
        if not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
            raise RivetError("RIVET_CONFIG_CHUNK_COLUMN_TYPE", f"export {exp.name!r}: chunk_by_days needs a date or "
                             f"timestamp chunk_column; {col.name!r} is {col.native_type}",
                             "use chunk_size / chunk_count for integer keys")
    elif not pa.types.is_integer(t):
        raise RivetError("RIVET_CONFIG_CHUNK_COLUMN_TYPE", f"export {exp.name!r}: chunk_column {col.name!r} is "
                         f"{col.native_type}; chunk_size / chunk_count need an integer column",
                         "pick an integer column, or chunk_by_days for a date/timestamp column")
    return col


CONNECTION_MARGIN = 5     # connections kept free beside a chunked export's `parallel` (planning, guard, others)


def _check_parallel(exp: ExportConfig, src: Source) -> None:
    limit = src.connection_limit()
    if limit is not None and exp.parallel > limit - CONNECTION_MARGIN:
        raise RivetError("RIVET_PLAN_PARALLEL_TOO_HIGH",
                         f"export {exp.name!r}: parallel = {exp.parallel} needs that many connections at once, and "
                         f"the source allows {limit} in all", f"set parallel to at most {max(1, limit - CONNECTION_MARGIN)} "
                         "(each chunk in flight holds one connection; rivet keeps a few free)")


def _plan_chunks(plan: ExportPlan, src: Source, store, select_exprs: list[str], resume: bool, force: bool) -> None:
    exp, d, rel = plan.export, src.dialect, plan.relation
    if exp.parallel > 1:
        _check_parallel(exp, src)
    col = _keyset_column(exp, src, plan.mappings) if exp.chunk_by_key else _chunk_column(exp, src, plan.mappings)
    plan.chunk_column = col.name
    qcol = d.quote_ident(col.name)
    plan.plan_hash = _plan_hash(exp, plan.read_schema, d.select(rel, select_exprs, [], []))

    def task_sql(lo, hi) -> str:
        return d.select(rel, select_exprs, window_predicate(exp, d, qcol, lo, hi), [])

    def ways(windows: int) -> int:   # readers per window: one per core a chunk may use, if each has enough to read
        big = (plan.rows_estimate or 0) // max(1, windows) >= 2 * SPLIT_MIN_ROWS
        return max(1, src.concurrent_reads // exp.parallel) if big else 1

    def task(i: int, lo, hi, lo_text: str | None, hi_text: str | None, n: int) -> TaskSpec:
        # SPLIT_PIECES sub-windows per reader: readers that take the next piece as they finish end within one
        # piece of each other, instead of one reader finishing its half alone while a core idles
        pieces = split_window(exp, lo, hi, n * SPLIT_PIECES) if n > 1 else []
        return TaskSpec(i, task_sql(lo, hi), lo_text, hi_text,
                        split=tuple(task_sql(a, b) for a, b in pieces), readers=n)

    if exp.chunk_checkpoint:
        run = store.latest_chunk_run(exp.name)
        if run and run["status"] != "completed" and run.get("plan_hash") == plan.plan_hash:
            tasks = store.chunk_tasks(run["run_id"])
            plan.run_id, plan.resumed = run["run_id"], True
            plan.chunks_total = len(tasks)
            todo = [t for t in tasks if t["status"] != "completed"]   # running ones died with their process
            plan.chunks_done = plan.chunks_total - len(todo)
            n = ways(plan.chunks_total)
            plan.tasks = [task(t["chunk_index"], parse_bound(t["lo"], col.arrow_type),
                               parse_bound(t["hi"], col.arrow_type), t["lo"], t["hi"], n) for t in todo]
            return
        if resume and run and run["status"] == "completed" and not force:
            raise RivetError("RIVET_RUN_PREFIX_COMPLETE", f"export {exp.name!r}: the last chunk run {run['run_id']} "
                             "completed (its _SUCCESS is written); there is nothing to resume",
                             "run without --resume for a new run, or add --force", ExitClass.REFUSED)
        if resume and not force:
            raise RivetError("RIVET_RUN_NOTHING_TO_RESUME", f"export {exp.name!r}: there is no interrupted chunk run "
                             "to resume", "run without --resume to start a new run")

    if exp.chunk_by_key:
        pages = _keyset_pages(exp, src, rel, qcol)
        plan.tasks = [TaskSpec(i, task_sql(parse_bound(lo, col.arrow_type), parse_bound(hi, col.arrow_type)), lo, hi)
                      for i, (lo, hi) in enumerate(pages)]
        plan.chunks_total = len(plan.tasks)
        return
    windows = _windows(exp, src, rel, qcol, col, plan)
    n = ways(len(windows))
    plan.tasks = [task(i, lo, hi, cursor_text(lo), cursor_text(hi), n) for i, (lo, hi) in enumerate(windows)]
    plan.chunks_total = len(plan.tasks)


def plan_windows(exp: ExportConfig, src: Source, store, run_id: str, chunk_column: str,
                 windows: list[tuple[int, str, str]]) -> ExportPlan:
    """A plan that exports again the given windows (index, lo, hi as stored) of an existing chunk run, with the
    same select list and predicate as the run itself (`rivet repair`)."""
    plan = plan_export(exp, src, store, run_id=run_id)
    d = src.dialect
    col = _mapping(plan.mappings, chunk_column, exp.name, "chunk_column")
    qcol = d.quote_ident(col.name)
    exprs = [m.select_expr for m in plan.mappings]
    plan.run_id, plan.resumed, plan.warnings = run_id, False, []
    plan.chunk_column = col.name
    plan.tasks = [TaskSpec(i, d.select(plan.relation, exprs, window_predicate(exp, d, qcol,
                                                                         parse_bound(lo, col.arrow_type),
                                                                         parse_bound(hi, col.arrow_type)), []), lo, hi)
                  for i, lo, hi in windows]
    return plan


def window_predicate(exp: ExportConfig, d, qcol: str, lo, hi) -> list[str]:
    """The one definition of a chunk window, shared by extraction and reconcile (same rows, same predicate)."""
    if exp.chunk_by_days:
        return [f"{qcol} >= {d.literal(lo)}", f"{qcol} < {d.literal(hi)}"]
    if exp.chunk_by_key:
        # keyset page (lo, hi]: the first page has no lower bound. The bounds are literals compared by the database
        # itself (text: the column's collation; PostgreSQL coerces the untyped literal to the key's type, e.g. uuid)
        return ([] if lo is None else [f"{qcol} > {d.literal(lo)}"]) + [f"{qcol} <= {d.literal(hi)}"]
    return [f"{qcol} BETWEEN {d.literal(lo)} AND {d.literal(hi)}"]


SPLIT_MIN_ROWS = 250_000   # a window split for n readers holds at least 2 n × this many rows (estimated)
SPLIT_PIECES = 4           # sub-windows per reader of a split window


def split_window(exp: ExportConfig, lo, hi, ways: int) -> list[tuple]:
    """A range window (chunk_column: integer ids lo..hi, or chunk_by_days dates lo ≤ d < hi) cut into at most `ways`
    consecutive sub-windows that hold exactly its rows under window_predicate; [] when it does not cut (keyset
    pages, one way, a window too narrow). Chunks read their window as one stream, and one PostgreSQL backend
    streams at about one core's speed: read side by side, the sub-windows keep pace with a full export's parallel
    scan. Each sub-window is its own statement, so a window read this way is as consistent as two chunks are."""
    if ways < 2 or exp.chunk_by_key or lo is None or hi is None:
        return []
    if exp.chunk_by_days:
        days = (hi - lo).days
        if days < 2:
            return []
        ways = min(ways, days)
        cuts = [lo + timedelta(days=days * k // ways) for k in range(ways)] + [hi]
        return list(zip(cuts, cuts[1:]))
    span = hi - lo + 1
    if span < 2:
        return []
    width = math.ceil(span / min(ways, span))
    return [(a, min(hi, a + width - 1)) for a in range(lo, hi + 1, width)]


def parse_bound(text: str | None, t: pa.DataType):
    if text is None:            # the open lower end of a keyset's first page
        return None
    if pa.types.is_integer(t):
        return int(text)
    if pa.types.is_string(t) or pa.types.is_large_string(t):     # keyset text / uuid keys
        return text
    if "T" in text or " " in text:
        return datetime.fromisoformat(text)
    return date.fromisoformat(text)


def _windows(exp, src: Source, rel: Relation, qcol: str, col: ColumnMapping, plan: ExportPlan) -> list[tuple]:
    d = src.dialect
    lo_hi = src.scalar(d.min_max(rel, qcol))
    lo, hi = lo_hi if isinstance(lo_hi, (tuple, list)) else (None, None)
    if lo is None:
        return []
    if exp.chunk_by_days:
        start = lo if isinstance(lo, date) and not isinstance(lo, datetime) else lo.date()
        end = hi if isinstance(hi, date) and not isinstance(hi, datetime) else hi.date()
        step = timedelta(days=exp.chunk_by_days)
        out, cur = [], start
        while cur <= end:
            out.append((cur, cur + step))
            cur += step
        return out
    lo, hi = int(lo), int(hi)
    span = hi - lo + 1
    size = exp.chunk_size or (math.ceil(span / exp.chunk_count) if exp.chunk_count else DEFAULT_CHUNK_SIZE)
    n = math.ceil(span / size)
    expected = (plan.rows_estimate or 0) / size + 1
    if n > SPARSE_MIN_WINDOWS and n > 4 * expected:
        # Sparse key (e.g. ids 1..10 and 1e9..1e9+10): ask the source which windows hold rows, one GROUP BY over
        # the key instead of millions of empty window queries.
        sql = d.select(rel, [f"FLOOR(({qcol} - {lo}) / {size}) AS b"], [], []) 
        sql = f"SELECT DISTINCT b FROM ({sql}) AS rivet_b ORDER BY b"
        buckets = []
        for batch in src.read(sql, pa.schema([("b", pa.int64())]), 100_000):
            buckets.extend(batch.column(0).to_pylist())
        plan.warnings.append(f"sparse chunk key: {len(buckets)} of {n} windows hold rows; planned only those")
        return [(lo + b * size, min(hi, lo + (b + 1) * size - 1)) for b in buckets]
    return [(lo + k * size, min(hi, lo + (k + 1) * size - 1)) for k in range(n)]


def _check_keyset_config(exp: ExportConfig) -> None:
    """chunk_by_key's combinations with the other keys (kept here, beside the planning it changes)."""
    if not exp.chunk_by_key:
        return
    if exp.mode != "chunked":
        raise RivetError("RIVET_CONFIG_CHUNK_CONFLICT", f"export {exp.name!r}: chunk_by_key needs mode = \"chunked\" "
                         f"(mode is {exp.mode!r})", 'set mode = "chunked" or remove chunk_by_key')
    clash = [k for k in ("chunk_column", "chunk_count", "chunk_by_days") if getattr(exp, k) is not None]
    if clash:
        raise RivetError("RIVET_CONFIG_CHUNK_CONFLICT", f"export {exp.name!r}: chunk_by_key conflicts with "
                         f"{', '.join(clash)}", "chunk_by_key pages the key by chunk_size rows; keep chunk_by_key and "
                         "chunk_size, or the range keys")
    if exp.table is None:
        raise RivetError("RIVET_CONFIG_CHUNK_CONFLICT", f"export {exp.name!r}: chunk_by_key needs a table export",
                         "its uniqueness and index are checked in the table's catalog; use chunk_column over a query")


def _keyset_column(exp: ExportConfig, src: Source, mappings: list[ColumnMapping]) -> ColumnMapping:
    """The keyset key must be NOT NULL, unique and lead an index: pages are then disjoint, cover every row and are
    found by walking the index. Checked in the catalog at plan time; refused naming the column."""
    col = _mapping(mappings, exp.chunk_by_key, exp.name, "chunk_by_key")
    t = col.arrow_type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise RivetError("RIVET_CONFIG_CHUNK_COLUMN_TYPE", f"export {exp.name!r}: chunk_by_key {col.name!r} is "
                         f"{col.native_type}; keyset pages need an integer, text or uuid key",
                         "pick an integer, text or uuid column")
    assert exp.table is not None
    nullable, indexed, unique = src.key_index(exp.table, col.name)
    problems = ([] if not nullable else ["nullable"]) + ([] if indexed else ["not indexed"]) + \
        ([] if unique or not indexed else ["not unique"])
    if problems:
        raise RivetError("RIVET_PLAN_KEYSET_KEY", f"export {exp.name!r}: chunk_by_key {col.name!r} is "
                         f"{' and '.join(problems)}; keyset pages need a unique, NOT NULL, indexed key",
                         f"use a column with a unique index and NOT NULL (e.g. the primary key), or add one on "
                         f"{col.name!r}", ExitClass.REFUSED)
    return col


def _keyset_pages(exp: ExportConfig, src: Source, rel: Relation, qcol: str) -> list[tuple[str | None, str | None]]:
    """Page bounds (lo, hi] as state text: one query numbers the keys in the database's own order (an index-only
    walk of the key) and returns every chunk_size-th key; the last page ends at the greatest key. Reads no other column."""
    d = src.dialect
    size = exp.chunk_size or DEFAULT_CHUNK_SIZE
    inner = d.select(rel, [f"{qcol} AS rivet_k", f"ROW_NUMBER() OVER (ORDER BY {qcol}) AS rivet_rn"], [], [])
    ends = [cursor_text(v) for v in src.column_values(
        f"SELECT rivet_k FROM ({inner}) AS rivet_p WHERE MOD(rivet_rn, {size}) = 0 ORDER BY rivet_rn")]
    # the last key from the index (not MAX(): PostgreSQL has no max(uuid)); LIMIT: only PG / MySQL page by key
    last = src.column_values(d.select(rel, [qcol], [], [f"{qcol} DESC"]) + " LIMIT 1")
    if not last:
        return []
    top = last[0]
    if not ends or ends[-1] != cursor_text(top):
        ends.append(cursor_text(top))
    return [(ends[i - 1] if i else None, hi) for i, hi in enumerate(ends)]


def cursor_identity_for(exp: ExportConfig) -> str:
    ident = f"{relation_identity(relation_of(exp))}|{exp.incremental_cursor_mode}:{exp.cursor_column}"
    return ident + (f",{exp.cursor_fallback_column}" if exp.incremental_cursor_mode == "coalesce" else "")


def accept_cursor_identity(exp: ExportConfig, store) -> bool:
    """`rivet state accept`: keep the stored cursor, adopt the export's current column / relation."""
    state = store.get_export_state(exp.name)
    if not state or state.get("last_cursor_value") is None:
        return False
    store.accept_identity(exp.name, exp.cursor_column, cursor_identity_for(exp))
    return True
