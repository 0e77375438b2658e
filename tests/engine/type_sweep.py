"""The type sweep's machinery, shared by test_type_sweep_pg.py and test_type_sweep_mysql.py (docs/types.md).

A case is one column type with a few values. Cases of one group share a table; one `rivet run` (the real CLI) exports
every table through each read path of the source, to Parquet and to CSV, and one `rivet check` reports every mapping.
Each value written is compared with the source's own rendering of it: its text, and for dates and times also the
server's count of days (dates) or microseconds (timestamps, times) since 1970-01-01 / midnight, which is what
Parquet stores. A refused case must fail every read naming its column and the `[exports.columns] <col> = "text"`
override, with no `_SUCCESS`, and that override must then export the column's text exactly.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.helpers import rivet, write_config

TEMPORAL = ("date", "timestamp", "timestamptz", "time")
# (relation, format) of an export; on PostgreSQL "table" is DuckDB's parallel table scan, "query" the postgres_query
# path; each to both writers
ALL_PATHS = (("table", "parquet"), ("table", "csv"), ("query", "parquet"), ("query", "csv"))


@dataclass(frozen=True)
class Case:
    name: str                       # the column's name
    sql_type: str
    values: tuple[str, ...]         # SQL literals, one row each
    kind: str                       # how a value compares: int float4 float8 decimal text bool bytes + TEMPORAL
    fidelity: str = "exact"         # what `rivet check` must say: exact | text | refused
    query_fidelity: str = ""        # what it must say for a query export, when not the same
    refused: str | None = None      # the error code every read of it must end with
    truth: str = ""                 # SQL rendering of {c} by the source, when not the source's default
    override_truth: str = ""        # the same for the text its "text" override must export


@dataclass(frozen=True)
class Source:
    """What differs between the sources: how SQL runs, the default renderings, which table a case goes to."""
    type: str
    url: str
    execute: Callable[[list[str]], None]
    query: Callable[[str], list[tuple]]
    quote: Callable[[str], str]
    text: str                       # the source's text of {c}
    epoch: dict[str, str]           # temporal kind → SQL of {c} as days / microseconds since 1970-01-01 or midnight
    group: Callable[[Case], str]    # cases of one group share a table (a refused group: one export per read path)
    refusal_paths: tuple[tuple[str, str], ...] = ALL_PATHS


@dataclass
class Outcome:
    tables: dict[str, list[Case]]
    runs: dict[str, dict] = field(default_factory=dict)           # export → its entry in the run's --json summary
    check: dict[str, dict] = field(default_factory=dict)          # export → its `rivet check --json` report
    outputs: dict[str, pa.Table] = field(default_factory=dict)    # export → what its files hold
    types: dict[str, dict[str, str]] = field(default_factory=dict)  # Parquet export → column → written Arrow type
    truth: dict[str, list[tuple]] = field(default_factory=dict)   # case → (id, text, epoch) per row
    override_truth: dict[str, list[tuple]] = field(default_factory=dict)
    exports: dict[str, list[str]] = field(default_factory=dict)   # table → its exports
    out: Path = Path()
    config: Path = Path()


def _sql(src: Source, case: Case, template: str) -> str:
    return template.replace("{c}", src.quote(case.name))


def _export(name: str, table: str, relation: str, fmt: str, overrides: list[str]) -> str:
    rel = f'table = "{table}"' if relation == "table" else f'query = "SELECT * FROM {table}"'
    text = (f'[[exports]]\nname = "{name}"\n{rel}\nmode = "full"\nformat = "{fmt}"\n'
            f'destination = {{ type = "local", path = "out/{name}" }}\n')
    if overrides:
        text += "[exports.columns]\n" + "".join(f'{c} = "text"\n' for c in overrides)
    return text


def run_sweep(src: Source, cases: list[Case], workdir: Path, prefix: str,
              paths: tuple[tuple[str, str], ...] = ALL_PATHS, check: bool = True) -> Outcome:
    """Create one table per group, export each through `paths` (a refused group through the source's refusal paths,
    then once more with every column overridden to text), `rivet check` them (unless told not to), and read back
    what was written and the truth."""
    tables: dict[str, list[Case]] = {}
    for case in cases:
        tables.setdefault(f"{prefix}_{src.group(case)}", []).append(case)
    q = src.quote
    statements, exports = [], []
    outcome = Outcome(tables, out=workdir / "out")
    for table, members in tables.items():
        statements += [f"DROP TABLE IF EXISTS {q(table)}",
                       f"CREATE TABLE {q(table)} (id int PRIMARY KEY, "
                       + ", ".join(f"{q(c.name)} {c.sql_type}" for c in members) + ")"]
        for i in range(max(len(c.values) for c in members)):
            row = [str(i)] + [c.values[i] if i < len(c.values) else "NULL" for c in members]
            statements.append(f"INSERT INTO {q(table)} VALUES ({', '.join(row)})")
        refused = any(c.refused for c in members)
        assert all(bool(c.refused) == refused for c in members), f"{table} mixes refused and exported cases"
        for relation, fmt in (src.refusal_paths if refused else paths):
            exports.append((f"{table}__{relation}_{fmt}", table, relation, fmt, []))
        if refused:
            exports.append((f"{table}__override_csv", table, "table", "csv", [c.name for c in members]))
        outcome.exports[table] = [e[0] for e in exports if e[1] == table]
    src.execute(statements)
    cfg = write_config(workdir / "rivet.toml", f'[source]\ntype = "{src.type}"\nurl = "{src.url}"\n'
                       # the fast profile: no throttle
                       'environment = "local"\n\n'
                       + "\n".join(_export(*e) for e in exports))
    outcome.config = cfg
    outcome.runs = {e["name"]: e for e in json.loads(rivet("run", "-c", cfg, "--no-tui", "--json").stdout)["exports"]}
    if check:
        outcome.check = {r["export"]: r for r in json.loads(rivet("check", "-c", cfg, "--json").stdout)["exports"]}
    for table, members in tables.items():
        exprs = []
        for c in members:
            exprs += [_sql(src, c, c.truth or src.text), _sql(src, c, src.epoch[c.kind])
                      if c.kind in TEMPORAL and not c.refused else "NULL"]
        rows = src.query(f"SELECT id, {', '.join(exprs)} FROM {q(table)} ORDER BY id")
        for i, c in enumerate(members):
            outcome.truth[c.name] = [(r[0], r[1 + 2 * i], r[2 + 2 * i]) for r in rows]
            if c.refused:
                outcome.override_truth[c.name] = src.query(
                    f"SELECT id, {_sql(src, c, c.override_truth or src.text)} FROM {q(table)} ORDER BY id")
    for name, result in outcome.runs.items():
        if result["status"] == "succeeded":
            outcome.outputs[name] = read_output(outcome.out / name, name.endswith("_csv"))
            if name.endswith("_parquet"):
                outcome.types[name] = {f.name: str(f.type) for f in pq.read_schema(
                    next((outcome.out / name).glob("*.parquet")))}
    return outcome


def read_output(path: Path, csv: bool) -> pa.Table:
    """The rows an export wrote, by id. CSV is read as text, an unquoted empty field as NULL and "" as the empty
    string (docs/types.md); dates and times from Parquet as their stored days / microseconds."""
    files = sorted(path.glob("*.csv" if csv else "*.parquet"))
    assert files, f"no part under {path}"
    if csv:
        header = files[0].read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        names = [n.strip('"') for n in header.split(",")]
        tables = [pacsv.read_csv(f, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                 convert_options=pacsv.ConvertOptions(
                                     column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                                     null_values=[""], quoted_strings_can_be_null=False)) for f in files]
    else:
        tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables)
    cols = []
    for f, col in zip(table.schema, table.columns):
        if pa.types.is_date(f.type):
            col = col.cast(pa.int32())
        elif pa.types.is_timestamp(f.type) or pa.types.is_time(f.type):
            col = col.cast(pa.int64())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


_ISO_SOURCE = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)(?:[ T](\d\d:\d\d:\d\d)(\.\d+)?)?(\+00)?( BC)?$")


def iso_from_text(text: str, kind: str) -> str:
    """The ISO 8601 form docs/types.md promises in CSV, from the source's own text of a date, timestamp or time:
    'T' between date and time, six fraction digits, 'Z' for UTC instants, astronomical years with a sign outside
    0000..9999 (PostgreSQL's '0044-03-15 BC' is '-0043-03-15', '100000-01-01' is '+100000-01-01')."""
    if kind == "time":
        hms, _, frac = text.partition(".")
        return f"{hms}.{frac.ljust(6, '0')}"
    m = _ISO_SOURCE.match(text)
    assert m, f"unexpected {kind} text {text!r}"
    year = int(m[1]) if not m[7] else 1 - int(m[1])
    sign = "-" if year < 0 else "+" if year > 9999 else ""
    out = f"{sign}{abs(year):04d}-{m[2]}-{m[3]}"
    if kind == "date":
        return out
    return f"{out}T{m[4]}.{(m[5] or '.')[1:].ljust(6, '0')}" + ("Z" if kind == "timestamptz" else "")


def _float_bits(v: float, kind: str) -> bytes | str:
    return "nan" if math.isnan(v) else struct.pack("<f" if kind == "float4" else "<d", v)


def same(kind: str, got, want: tuple, csv: bool) -> bool:
    """Whether one written value is the source's value. `want` is (text, epoch) from the source."""
    text, epoch = want
    if isinstance(text, (bytes, bytearray)) and kind != "bytes":
        text = text.decode()
    if text is None:
        return got is None
    if got is None:
        return False
    if kind == "int":   # (a domain over an integer is text from a table)
        return str(got) == str(int(text))
    if kind in ("float4", "float8"):
        value = text if isinstance(text, float) else float(text)
        return _float_bits(float(got), kind) == _float_bits(value, kind)
    if kind == "decimal":
        return got == text if csv else format(got, "f") == text
    if kind == "bool":
        truth = str(text).lower() in ("t", "true", "1")
        return got == ("true" if truth else "false") if csv else got is truth
    if kind == "bytes":
        hexed = text[2:] if isinstance(text, str) and text.startswith("\\x") else (
            text.hex() if isinstance(text, (bytes, bytearray)) else text.lower())
        return got == hexed if csv else got.hex() == hexed
    if kind in TEMPORAL:
        return got == iso_from_text(text, kind) if csv else got == int(Decimal(str(epoch)))
    return got == text


def problems(outcome: Outcome, case: Case) -> list[str]:
    """Everything the sweep found wrong about one case (empty: the case is exact, or refused as it must be)."""
    table = next(t for t, members in outcome.tables.items() if case in members)
    found = []
    for export in outcome.exports[table]:
        run = outcome.runs[export]
        overridden = export.endswith("__override_csv")
        mapping = None
        if outcome.check:
            mapping = {c["name"]: c for c in outcome.check[export]["columns"]}.get(case.name)
            fidelity = "text" if overridden else (case.query_fidelity or case.fidelity) if "__query_" in export \
                else case.fidelity
            if mapping is None or mapping["fidelity"] != fidelity:
                found.append(f"{export}: check says {mapping and mapping['fidelity']}, expected {fidelity}")
        if case.refused and not overridden:
            found += _refusal_problems(outcome, export, case)
            continue
        written = outcome.types.get(export, {}).get(case.name)
        if mapping and written and written != mapping["arrow_type"]:
            found.append(f"{export}: wrote {written}, check says {mapping['arrow_type']}")
        if run["status"] != "succeeded":
            found.append(f"{export}: {run['status']} {run['error']}")
            continue
        got = dict(zip(outcome.outputs[export].column("id").to_pylist(),
                       outcome.outputs[export].column(case.name).to_pylist()))
        csv = export.endswith("_csv")
        if overridden:
            want = [(i, (t, None)) for i, t in outcome.override_truth[case.name]]
            kind = "text"
        else:
            want = [(i, (t, e)) for i, t, e in outcome.truth[case.name]]
            kind = case.kind
        if len(got) != len(want):
            found.append(f"{export}: {len(got)} rows written, the source has {len(want)}")
        for row_id, w in want:
            value = got.get(str(row_id) if csv else row_id, "<row missing>")
            if not same(kind, value, w, csv):
                found.append(f"{export}: row {row_id}: wrote {value!r}, the source holds {w[0]!r}")
    return found


def _refusal_problems(outcome: Outcome, export: str, case: Case) -> list[str]:
    run = outcome.runs[export]
    err = run["error"] or {}
    found = []
    if run["status"] == "succeeded" or err.get("code") != case.refused:
        found.append(f"{export}: expected {case.refused}, got {run['status']} {err.get('code')}")
    elif not re.search(rf"\b{re.escape(case.name)}\b", err.get("error", "")) \
            or f'{case.name} = "text"' not in err.get("hint", ""):
        found.append(f"{export}: the refusal does not name {case.name} and its override: {err}")
    if (outcome.out / export / "_SUCCESS").exists():
        found.append(f"{export}: _SUCCESS written by a refused run")
    return found


def random_sweep(src: Source, columns: dict[str, tuple], workdir_factory, examples: int,
                 paths: tuple[tuple[str, str], ...]) -> None:
    """Hypothesis draws a few rows of SQL literals per column (name → sql type, kind, fidelity, literal strategy[,
    truth]), and each example is one sweep of one table. Every example is a real `rivet run`, so the budget stays
    small and failures are reported unshrunk (each shrink step would be another run); the fidelity `rivet check`
    reports depends on the type, not the values, and is the fixed sweep's to check."""
    counter = itertools.count()

    @settings(max_examples=examples, deadline=None, database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one_example(data):
        n = next(counter)
        cases = [Case(name, sql_type, tuple(data.draw(st.lists(st.just("NULL") | literal, min_size=1, max_size=12),
                                                      label=name)), kind, fidelity, truth=truth[0] if truth else "")
                 for name, (sql_type, kind, fidelity, literal, *truth) in columns.items()]
        outcome = run_sweep(src, cases, workdir_factory.mktemp(f"random{n}"), f"random{n}", paths, check=False)
        found = [p for case in cases for p in problems(outcome, case)]
        assert not found, "\n".join(found)

    one_example()
