"""In-memory DuckDB instances with the postgres and mysql scanners, loaded offline.

The scanner extensions come from the pinned pip wheels (duckdb-extension-postgres / -mysql, same version as duckdb).
Their files are not an extension_directory layout, so we `INSTALL '<file>'` them once per process into a private
directory (~/.cache/rivet/duckdb_extensions, or a temp dir when HOME is unusable); after that, `ATTACH ... (TYPE
postgres|mysql)` autoloads them. `autoinstall_known_extensions` is always off: DuckDB would otherwise try the network.

DuckDB checks an extension's signature on every load by hashing the whole file: ~0.11 s per process for the 41 MB
postgres scanner, an eighth of a one-table `rivet run`. When only this user can change the directory and the files
in it (owned by us, not group/world-writable: `_private`), they are the copies rivet installed from the pinned wheel
and are trusted as that wheel is (DuckDB's own library beside it is not checked either): the instance then skips the
check (`allow_unsigned_extensions`). Anything else (a directory another user made, e.g. the /tmp fallback) keeps it.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import tempfile
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
from pyarrow._compute import CastOptions, call_function

from engine.errors import ExitClass, RivetError

# internal extension name → (pip package, file stem inside the package)
_EXTENSIONS = {"postgres_scanner": ("duckdb_extension_postgres", "postgres"),
               "mysql_scanner": ("duckdb_extension_mysql", "mysql")}
_PLATFORM_SUBDIR_GLOB = f"v{duckdb.__version__}/*/"

_lock = threading.Lock()
_ext_dir: str | None = None
_ext_dir_private = False


def _wheel_file(pkg: str, stem: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise RivetError("RIVET_INTERNAL_DUCKDB_EXTENSION", f"python package {pkg} is not installed",
                         f"install {pkg.replace('_', '-')}=={duckdb.__version__}", ExitClass.INTERNAL)
    f = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{stem}.duckdb_extension"
    if not f.is_file():
        raise RivetError("RIVET_INTERNAL_DUCKDB_EXTENSION", f"{f} is missing (duckdb {duckdb.__version__})",
                         f"install {pkg.replace('_', '-')}=={duckdb.__version__}, the same version as duckdb",
                         ExitClass.INTERNAL)
    return f


def _candidate_dirs() -> list[Path]:
    dirs = []
    try:
        home = Path.home()
        if home.is_dir():
            dirs.append(home / ".cache" / "rivet" / "duckdb_extensions")
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        pass
    dirs.append(Path(tempfile.gettempdir()) / f"rivet-duckdb-extensions-{os.getuid()}")
    return dirs


def _installed(ext_dir: Path) -> bool:
    return all(any(ext_dir.glob(f"{_PLATFORM_SUBDIR_GLOB}{name}.duckdb_extension")) for name in _EXTENSIONS)


def _install(ext_dir: Path) -> None:
    con = duckdb.connect(config={"extension_directory": str(ext_dir), "autoinstall_known_extensions": False})
    try:
        for pkg, stem in _EXTENSIONS.values():
            con.execute(f"INSTALL '{_wheel_file(pkg, stem)}'")
    finally:
        con.close()


def _private(ext_dir: Path) -> bool:
    """Only this user can change ext_dir, its version/platform folders and the scanner files in them."""
    files = [f for name in _EXTENSIONS for f in ext_dir.glob(f"{_PLATFORM_SUBDIR_GLOB}{name}.duckdb_extension")]
    paths = {ext_dir, *files, *(f.parent for f in files), *(f.parent.parent for f in files)}
    try:
        stats = [p.lstat() for p in paths]
    except OSError:
        return False
    return all(st.st_uid == os.getuid() and not st.st_mode & 0o022 for st in stats)


def _prepare_extension_dir() -> str:
    """Install the scanners into a private extension directory once per process; return that directory."""
    global _ext_dir, _ext_dir_private
    with _lock:
        if _ext_dir is not None:
            return _ext_dir
        last: Exception | None = None
        for d in _candidate_dirs():
            try:
                d.mkdir(parents=True, exist_ok=True)
                if not _installed(d):
                    # another rivet process may be installing into the same directory right now
                    with open(d / ".install.lock", "w") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX)
                        if not _installed(d):
                            _install(d)
                _ext_dir, _ext_dir_private = str(d), _private(d)
                return _ext_dir
            except (OSError, duckdb.Error) as e:  # unwritable HOME: try the next candidate
                last = e
        raise RivetError("RIVET_INTERNAL_DUCKDB_EXTENSION", f"cannot install the DuckDB scanner extensions: {last}",
                         "make ~/.cache or the temp directory writable", ExitClass.INTERNAL)


def connect(threads: int | None = None, preserve_insertion_order: bool = False) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the postgres and mysql scanners available (offline)."""
    config: dict[str, str | bool | int | float | list[str]] = {   # the value types duckdb.connect accepts
        "extension_directory": _prepare_extension_dir(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
        "allow_unsigned_extensions": _ext_dir_private,   # skip re-hashing the scanner files we installed (above)
        # order is only kept when asked: keeping it costs memory on parallel scans (3x RSS measured at 20 M rows)
        "preserve_insertion_order": preserve_insertion_order,
        "threads": threads or os.cpu_count() or 1,
    }
    return duckdb.connect(":memory:", config=config)


_attach_lock = threading.Lock()
_shared: dict[int, duckdb.DuckDBPyConnection] = {}   # worker threads → this process's instance with that many
_aliases: dict[tuple[int, str], str] = {}          # (threads, connection string + type) → its alias there


def attached(target: str, kind: str, parallel: bool = True) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A cursor of one of this process's DuckDB instances, with the database `target` (a libpq conninfo for
    kind="postgres") attached read-only, and the alias it is attached under.

    `parallel`: the instance with a worker thread per core, for DuckDB's own parallel table scans. A read that is a
    single stream (`postgres_query`) asks for the one-thread instance instead: there, a second worker finds nothing
    to do but DuckDB keeps it polling for the one task, which cost ~0.7 CPU-s per 5 M rows (measured, DuckDB 1.5) on
    cores the server and the Parquet writer need. Streams read side by side each run on their caller's thread.

    A fresh instance costs ~0.25 s (scanner load + ATTACH) on an idle machine and several times that under load; a
    run of hundreds of small exports pays it once instead of once per read. An instance's threads are shared by
    every read in the process that uses it, so parallel reads never oversubscribe the cores. A failed ATTACH is not
    remembered.
    """
    threads = (os.cpu_count() or 1) if parallel else 1
    key = (threads, f"{kind}:{target}")
    with _attach_lock:
        con = _shared.get(threads)
        if con is None:
            con = _shared[threads] = connect(threads)
        alias = _aliases.get(key)
        if alias is None:
            alias = f"src{len(_aliases) + 1}"
            con.execute(f"ATTACH {sql_string(target)} AS {alias} (TYPE {kind}, READ_ONLY)")
            if kind == "postgres":
                # the cached catalog checks for DDL before each use: a table altered since it was cached is read
                # with its new columns and types, never with the old layout
                con.execute("SET pg_staleness_query_enabled = true")
            _aliases[key] = alias
        return con.cursor(), alias


def sql_string(text: str) -> str:
    """A DuckDB string literal (DuckDB strings know no backslash escapes: only the quote is doubled)."""
    return "'" + text.replace("'", "''") + "'"


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Give a batch exactly `schema` (names, types, field metadata). Columns match by position: the read SQL
    selects them in schema order, and the server's own column names may differ (casts, case folding)."""
    if batch.num_columns != len(schema):
        raise RivetError("RIVET_SOURCE_SCHEMA_CHANGED",
                         f"the source returned {batch.num_columns} columns where the plan expects {len(schema)}",
                         "the relation changed since planning: run `rivet plan` / `rivet check` again",
                         ExitClass.DRIFT)
    arrays = []
    for arr, field in zip(batch.columns, schema):
        if arr.type != field.type:
            try:
                # safe cast: overflow or truncation raises (Array.cast would import pyarrow.compute: formats.py)
                arr = call_function("cast", [arr], CastOptions.safe(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise RivetError("RIVET_SOURCE_SCHEMA_CHANGED",
                                 f"column {field.name}: the source sent {arr.type}, the plan expects "
                                 f"{field.type} ({e})",
                                 "the column's type changed since planning: run `rivet check` again",
                                 ExitClass.DRIFT) from None
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
