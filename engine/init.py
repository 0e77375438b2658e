"""`rivet init`: introspect a source and write a commented starter rivet.toml (tomli-w), never overwriting.

Per table: a row estimate, the primary key, candidate cursor columns (timestamps named like updated/modified) and
the chunk column (a single-integer primary key). Big tables with such a key start chunked; others full. The
password never lands in the file: a URL with one becomes structured fields with `password_env`.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import tomli_w

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.secrets import mask_url
from engine.urls import is_loopback
from engine.sources import open_source
from engine.sources.base import Relation
from engine.types import map_columns

CHUNKED_FROM_ROWS = 1_000_000
CURSOR_NAME = re.compile(r"(?i)(updated|modified|changed|last_?update|_at$|_ts$|timestamp)")
PASSWORD_ENV = "RIVET_SOURCE_PASSWORD"


def _source_type(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("postgres"):
        return "postgres"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    if scheme in ("mssql", "sqlserver"):
        return "mssql"
    raise RivetError("RIVET_INIT_BAD_URL", f"cannot tell the source type of {mask_url(url)}",
                     "use a postgresql://, mysql:// or mssql:// URL")


def _list_tables(src) -> list[str]:
    if src.engine == "postgres":
        sql = ("SELECT table_schema || '.' || table_name AS t FROM information_schema.tables WHERE table_type = 'BASE "
               "TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
    elif src.engine == "mssql":
        sql = ("SELECT s.name + '.' + t.name AS t FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id "
               "WHERE t.is_ms_shipped = 0 ORDER BY 1")
    else:
        sql = ("SELECT table_name AS t FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
               "AND table_schema = DATABASE() ORDER BY 1")
    out = []
    for batch in src.read(sql, pa.schema([("t", pa.string())]), 10_000):
        out.extend(batch.column(0).to_pylist())
    return out


def _export_for(src, table: str) -> tuple[dict, list[str]]:
    rel = Relation(table=table)
    columns = src.describe(rel)
    mappings = map_columns(src.engine, columns, {}, src.dialect)
    estimate = src.estimate_rows(rel)
    pk = src.primary_key(table)
    by_name = {m.name: m for m in mappings}
    int_pk = pk[0].name if len(pk) == 1 and pa.types.is_integer(by_name[pk[0].name].arrow_type) else None
    cursors = [m.name for m in mappings if pa.types.is_timestamp(m.arrow_type) and CURSOR_NAME.search(m.name)]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", table.split(".")[-1])[:128] or "export"
    exp: dict = {"name": name, "table": table}
    if int_pk and (estimate or 0) >= CHUNKED_FROM_ROWS:
        exp.update(mode="chunked", chunk_column=int_pk, chunk_size=max(100_000, (estimate or 0) // 100), parallel=2)
    else:
        exp["mode"] = "full"
    exp.update(format="parquet", compression="zstd", max_file_size="256MB")
    overrides = {m.name: "text" for m in mappings if m.fidelity == "refused"}
    if overrides:
        exp["columns"] = overrides
    exp["destination"] = {"type": "local", "path": "out/{export}"}
    notes = [f"{table}: ~{estimate:,} rows" if estimate is not None else f"{table}: row count unknown",
             f"primary key: {', '.join(c.name for c in pk) or 'none'}"]
    if cursors:
        notes.append(f"incremental candidates: {', '.join(cursors)} "
                     f'(mode = "incremental", cursor_column = "{cursors[0]}")')
    if int_pk and exp["mode"] == "full":
        notes.append(f'chunk candidate: {int_pk} (mode = "chunked", chunk_column = "{int_pk}")')
    lossy = [f"{m.name} ({m.native_type}: {m.fidelity})" for m in mappings if m.fidelity != "exact"]
    if lossy:
        notes.append("not exact: " + ", ".join(lossy))
    return exp, notes


def environment_for(url: str) -> str:
    """"local" (the fast tuning profile) for a source on this machine — a loopback address or a unix socket —,
    "production" (the safe profile: longer timeouts, smaller batches, a throttle) for anything else."""
    host = urlsplit(url).hostname or ""
    if not host or host.startswith("/") or is_loopback(host):
        return "local"
    return "production"


def _source_section(url: str, kind: str) -> tuple[dict, list[str]]:
    parts = urlsplit(url)
    if not parts.password:
        return {"type": kind, "url": url}, []
    source: dict[str, str | int] = {"type": kind, "host": parts.hostname or "127.0.0.1"}
    if parts.port:
        source["port"] = parts.port
    if parts.username:
        source["user"] = unquote(parts.username)
    source["password_env"] = PASSWORD_ENV
    if parts.path.strip("/"):
        source["database"] = parts.path.strip("/")
    return source, [f"the password is read from ${PASSWORD_ENV} (never stored in this file)"]


def init_config(url: str, tables: list[str], output: Path, environment: str | None = None) -> Path:
    output = Path(output)
    environment = environment or environment_for(url)
    if output.exists():
        raise RivetError("RIVET_INIT_EXISTS", f"{output} already exists; rivet init never overwrites",
                         "pass -o NEW.toml, or move the old file away", ExitClass.USAGE)
    kind = _source_type(url)
    with open_source(SourceConfig(kind, url, environment, Tuning(connect_timeout_s=10))) as src:
        version = src.server_version()
        names = tables or _list_tables(src)
        if not names:
            raise RivetError("RIVET_INIT_NO_TABLES", "the source has no tables to export",
                             "name tables with --table, or check the database in the URL")
        exports = [_export_for(src, t) for t in names]
    source, source_notes = _source_section(url, kind)
    source["environment"] = environment
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# rivet.toml — written by `rivet init` on {stamp}",
             f"# source: {mask_url(url)} ({version})",
             *[f"# {n}" for n in source_notes],
             ('# environment = "local": the source is on this machine (fast tuning); say "production" for a '
              "database others depend on" if environment == "local" else
              '# environment = "production": safe tuning for a database others depend on; "local" if it is a '
              "throwaway copy"),
             "# Check it with `rivet doctor`, preview with `rivet check` / `rivet plan`, export with `rivet run`.",
             "", tomli_w.dumps({"source": source}).rstrip(), ""]
    for exp, notes in exports:
        lines += [f"# {n}" for n in notes]
        lines += [tomli_w.dumps({"exports": [exp]}).rstrip(), ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "x") as f:   # "x": never overwrite, even if the file appeared meanwhile
        f.write("\n".join(lines))
    return output
