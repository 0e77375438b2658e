"""`rivet validate`: re-check a destination against its manifests.

For every prefix an export wrote to: `_SUCCESS` holds the hash of `manifest.json` (and exists only when the last
run there succeeded); every committed part of every `manifest-<run_id>.json` is present with its size, content
hash and row count (read from the Parquet footer / by parsing the CSV); files no manifest names are reported as
foreign (a warning: a crashed attempt may leave one, never a gap).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine import guardrails
from engine.config import Config, ExportConfig
from engine.destinations import open_destination
from engine.errors import ExitClass, RivetError
from engine.formats import csv_text
from engine.manifest import MANIFEST, SUCCESS, success_bytes
from engine.planner import run_started_at

RUN_MANIFEST = re.compile(r"^manifest-(.+)\.json$")


@dataclass
class Finding:
    object: str
    problem: str


@dataclass
class ValidateReport:
    export: str
    uri: str
    parts_checked: int = 0
    rows: int = 0
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def part_rows(data: bytes, name: str) -> int:
    if name.endswith(".parquet"):
        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    return pacsv.read_csv(io.BytesIO(data)).num_rows


def validate_prefix(dest, export: str) -> ValidateReport:
    report = ValidateReport(export, dest.uri)
    objects = dict(dest.list())
    if not objects:
        report.failures.append(Finding("-", "nothing at this prefix"))
        return report
    named = {MANIFEST, SUCCESS}
    manifests = {}
    for name in sorted(objects):
        if RUN_MANIFEST.match(name.rsplit("/", 1)[-1]):
            named.add(name)
            try:
                manifests[name] = json.loads(dest.get_bytes(name))
            except (ValueError, RivetError) as e:
                report.failures.append(Finding(name, f"unreadable manifest: {e}"))
    latest = None
    if MANIFEST in objects:
        data = dest.get_bytes(MANIFEST)
        try:
            latest = json.loads(data)
        except ValueError:
            report.failures.append(Finding(MANIFEST, "not valid JSON"))
        if SUCCESS in objects:
            if dest.get_bytes(SUCCESS) != success_bytes(data):
                report.failures.append(Finding(SUCCESS, "does not hold the hash of manifest.json"))
            if latest is not None and latest.get("status") != "succeeded":
                report.failures.append(Finding(SUCCESS, f"present over a run whose status is {latest.get('status')!r}"))
        elif latest is not None and latest.get("status") == "succeeded":
            report.failures.append(Finding(SUCCESS, "missing although manifest.json says the run succeeded"))
        if latest is not None and latest.get("status") != "succeeded":
            report.failures.append(Finding(MANIFEST, f"the latest run here (run {latest.get('run_id')}) ended "
                                           f"{latest.get('status')!r}: its parts are not a complete export; "
                                           "run the export again"))
    else:
        report.failures.append(Finding(MANIFEST, "missing"))

    for mname, m in manifests.items():
        for part in m.get("parts", []):
            path = part["path"]
            named.add(path)
            if part.get("status", "committed") != "committed":
                continue
            report.parts_checked += 1
            size = objects.get(path)
            if size is None:
                report.failures.append(Finding(path, f"listed in {mname} but missing"))
                continue
            if size != part["size_bytes"]:
                report.failures.append(Finding(path, f"size {size} B, manifest says {part['size_bytes']} B"))
                if part.get("column_checksums"):   # name the columns whose values changed
                    _add_checksums(report, dest.get_bytes(path), path, part["column_checksums"])
                continue
            checksums = part.get("column_checksums")
            data = dest.get_bytes(path)
            if "sha256:" + hashlib.sha256(data).hexdigest() != part["content_hash"]:
                report.failures.append(Finding(path, "content hash differs from the manifest"))
                if checksums:   # name the columns whose values changed
                    _add_checksums(report, data, path, checksums)
                continue
            if checksums:
                report.failures += checksum_findings(data, path, checksums)
            try:
                rows = part_rows(data, path)
            except Exception as e:  # noqa: BLE001 - a corrupt part is a finding, not a crash
                report.failures.append(Finding(path, f"unreadable: {e}"))
                continue
            if rows != part["rows"]:
                report.failures.append(Finding(path, f"{rows} rows, manifest says {part['rows']}"))
            report.rows += rows
    for mname, m in manifests.items():
        report.failures += run_checksum_findings(mname, m)
    for name in sorted(set(objects) - named):
        report.warnings.append(Finding(name, "foreign file: no manifest names it"))
    return report


def _add_checksums(report: ValidateReport, data: bytes, path: str, expected: dict[str, str]) -> None:
    """After a size or content-hash finding: name the columns whose values changed, or say that none did."""
    found = checksum_findings(data, path, expected)
    if found:
        report.failures += found
    else:
        last = report.failures[-1]
        last.problem += " (every column's checksum matches: the values are unchanged, the file was re-encoded)"


def checksum_findings(data: bytes, path: str, expected: dict[str, str]) -> list[Finding]:
    """Recompute a part's column checksums (engine/guardrails.py) and name every column that differs."""
    try:
        got = {k: guardrails.hex64(v) for k, v in guardrails.column_sums(io.BytesIO(data), csv_text).items()}
    except Exception as e:  # noqa: BLE001 - a corrupt part is a finding, not a crash
        return [Finding(path, f"column checksums: unreadable part: {e}")]
    out = [Finding(path, f"column {col!r}: checksum {got[col]} differs from the manifest's {want}"
                   if col in got else f"column {col!r}: in the manifest's checksums but not in the part")
           for col, want in expected.items() if got.get(col) != want]
    out += [Finding(path, f"column {col!r}: in the part but not in the manifest's checksums")
            for col in got if col not in expected]
    return out


def run_checksum_findings(mname: str, m: dict) -> list[Finding]:
    """A run's column checksums are the sums of its committed parts' (as the manifest states them)."""
    declared = (m.get("column_checksums") or {}).get("columns")
    if not declared:
        return []
    total: dict[str, int] = {}
    for part in m.get("parts", []):
        if part.get("status", "committed") == "committed":
            guardrails.add_sums(total, {k: int(v, 16) for k, v in (part.get("column_checksums") or {}).items()})
    return [Finding(mname, f"column {col!r}: run checksum {want} is not the sum of its parts' "
                    f"({guardrails.hex64(total.get(col, 0))})")
            for col, want in declared.items() if guardrails.hex64(total.get(col, 0)) != want]


def validate_export(config: Config, exp: ExportConfig, store) -> list[ValidateReport]:
    runs = sorted({f["run_id"] for f in store.files(exp.name)} |
                  {m["run_id"] for m in store.metrics(exp.name) if m.get("status") == "succeeded" and m["run_id"] != "-"})
    if not runs:
        raise RivetError("RIVET_VALIDATE_NEVER_RAN", f"export {exp.name!r} has never written anything",
                         f"run `rivet run -e {exp.name}` first", ExitClass.USAGE)
    seen, reports = set(), []
    for run_id in runs:
        dest = open_destination(exp.destination, exp.name, run_id, run_started_at(run_id))
        if dest.uri in seen:
            continue
        seen.add(dest.uri)
        reports.append(validate_prefix(dest, exp.name))
    return reports


def validate(config: Config, store, names: list[str] | None = None) -> list[ValidateReport]:
    reports = []
    for exp in config.select(names):
        if exp.destination.type == "stdout":
            continue
        reports.extend(validate_export(config, exp, store))
    return reports
