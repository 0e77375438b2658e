"""Crash matrix (issue 8): SIGKILL at every commit point, then a plain `rivet run` (with --validate) must end with
every source row in the parts the manifests name, no gap, and no `_SUCCESS` over an incomplete prefix. Right after
the crash (before the rerun) the state must not be ahead of the data: a stored cursor or committed boundary only
covers rows already durable in manifest-named parts, every file-log row names a complete object, and every object
under a final name is a complete part.

The fault hook is engine/faults.py (RIVET_FAULT_AT / RIVET_FAULT_AFTER). Each export kind runs its seven points
concurrently (own directory, state file, bucket or table each). The outcome of every cell is compared with
EXPECTED below, which is also the table in tests/reliability/README.md (a test keeps the two equal).
"""
from __future__ import annotations

import re
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.faults import POINTS
from tests.reliability.common import Prefix, dest_toml, local_dest, rivet, run_summary, store_of, write_config

ROWS = 2000             # crash_items: ids 1..ROWS
CHUNKS = 4              # chunk_size 500
BIG_ROWS = 250_000      # crash_big: one ~18 MB part, uploaded multipart (8 MiB pieces) to S3

KINDS = {
    # kind: (export body, fault counts for points hit once per part)
    "full": 'table = "crash_items"\nmode = "full"\nmax_file_size = "20KB"',
    "chunked": 'table = "crash_items"\nmode = "chunked"\nchunk_size = 500',
    "incremental": 'table = "{table}"\nmode = "incremental"\ncursor_column = "seq"\nmax_file_size = "10KB"',
    "full_s3": 'table = "crash_items"\nmode = "full"\nmax_file_size = "20KB"',
    "chunked_s3": 'table = "crash_items"\nmode = "chunked"\nchunk_size = 500',
    "big_s3": 'table = "crash_big"\nmode = "full"\ncompression = "none"',
}
CELLS = [(p, k) for k in ("full", "chunked", "incremental") for p in POINTS] + [
    ("after_part_upload", "full_s3"), ("mid_upload", "full_s3"),
    ("after_part_upload", "chunked_s3"), ("mid_upload", "chunked_s3"),
    ("mid_upload", "big_s3")]

# (process, _SUCCESS right after the crash, state right after the crash, what the plain rerun did, duplicates)
EXPECTED: dict[tuple[str, str], tuple[str, str, str, str, str]] = {}


def _expect(kind, point, *outcome):
    EXPECTED[(point, kind)] = outcome


for _k in ("full", "full_s3"):
    _expect(_k, "after_part_upload", "SIGKILL (2nd part)", "none", "nothing recorded", "exports all rows again", "none")
    _expect(_k, "mid_upload", "SIGKILL (2nd part)", "none", "nothing recorded", "exports all rows again", "none")
_expect("big_s3", "mid_upload", "SIGKILL (multipart upload)", "none", "nothing recorded", "exports all rows again",
        "none")
_expect("full", "after_file_log", "SIGKILL", "none", "files logged", "exports all rows again", "none")
_expect("full", "after_manifest", "SIGKILL", "none", "files logged", "exports all rows again", "yes (at-least-once)")
_expect("full", "after_success", "SIGKILL", "honest", "files logged", "exports all rows again", "yes (at-least-once)")
_expect("full", "after_cursor", "not reached (no cursor)", "honest", "run recorded", "exports all rows again",
        "yes (at-least-once)")
_expect("full", "after_progression", "SIGKILL", "honest", "files logged", "exports all rows again",
        "yes (at-least-once)")
for _k in ("chunked", "chunked_s3"):
    _expect(_k, "after_part_upload", "SIGKILL (2nd part)", "none", "1 of 4 chunks completed",
            "resumes: 3 chunks to go", "none")
    _expect(_k, "mid_upload", "SIGKILL (2nd part)", "none", "1 of 4 chunks completed", "resumes: 3 chunks to go",
            "none")
_expect("chunked", "after_file_log", "SIGKILL (2nd chunk)", "none", "2 of 4 chunks completed",
        "resumes: 2 chunks to go", "none")
_expect("chunked", "after_manifest", "SIGKILL", "none", "4 of 4 chunks completed", "resumes: 0 chunks to go", "none")
_expect("chunked", "after_success", "SIGKILL", "honest", "4 of 4 chunks completed", "resumes: 0 chunks to go", "none")
_expect("chunked", "after_cursor", "not reached (no cursor)", "honest", "chunk run completed, committed #3",
        "new chunk run: exports all rows again", "yes (at-least-once)")
_expect("chunked", "after_progression", "SIGKILL", "honest", "chunk run completed, committed #3",
        "new chunk run: exports all rows again", "yes (at-least-once)")
_expect("incremental", "after_part_upload", "SIGKILL (2nd part)", "none", "cursor unchanged",
        "exports from the old cursor", "none")
_expect("incremental", "mid_upload", "SIGKILL (2nd part)", "none", "cursor unchanged", "exports from the old cursor",
        "none")
_expect("incremental", "after_file_log", "SIGKILL", "none", "cursor unchanged", "exports from the old cursor", "none")
_expect("incremental", "after_manifest", "SIGKILL", "none", "cursor unchanged", "exports from the old cursor",
        "yes (at-least-once)")
_expect("incremental", "after_success", "SIGKILL", "honest", "cursor unchanged", "exports from the old cursor",
        "yes (at-least-once)")
_expect("incremental", "after_cursor", "SIGKILL", "honest", "cursor moved, committed behind",
        "exports only new rows", "none")
_expect("incremental", "after_progression", "SIGKILL", "honest", "cursor and committed moved",
        "exports only new rows", "none")
assert set(EXPECTED) == set(CELLS)



def fault_after(point: str, kind: str) -> int:
    """RIVET_FAULT_AFTER: points reached once per part (or chunk) fire on the second, so the crash lands mid-export."""
    if kind == "big_s3":
        return 1
    if point in ("after_part_upload", "mid_upload") or (point, kind) == ("after_file_log", "chunked"):
        return 2
    return 1


@pytest.fixture(scope="module")
def crash_src(pg):
    pg.sql("DROP TABLE IF EXISTS crash_items")
    pg.sql("CREATE TABLE crash_items (id bigint PRIMARY KEY, v text, pad text)")
    pg.sql(f"INSERT INTO crash_items SELECT g, 'v' || g, md5(g::text) FROM generate_series(1, {ROWS}) g")
    return pg


@pytest.fixture(scope="module")
def crash_big(pg):
    pg.sql("DROP TABLE IF EXISTS crash_big")
    pg.sql("CREATE TABLE crash_big (id bigint PRIMARY KEY, a text, b text)")
    pg.sql(f"INSERT INTO crash_big SELECT g, md5(g::text), md5((-g)::text) FROM generate_series(1, {BIG_ROWS}) g")
    return pg


@dataclass
class Cell:
    point: str
    kind: str
    dir: Path
    cfg: Path
    dest: object           # DestinationConfig
    table: str
    ids: list[int]         # every source id at the end


def _config(pg, cell_dir: Path, kind: str, dest, table: str) -> Path:
    body = KINDS[kind].format(table=table)
    return write_config(cell_dir / "rivet.toml", f"""
[source]
type = "postgres"
url = "{pg.url}"

[[exports]]
name = "x"
{body}
destination = {dest_toml(dest)}
[exports.tuning]
batch_size = {100_000 if kind == "big_s3" else 250}
retry_backoff_ms = 100
""")


def _ids_of(pg, table: str) -> list[int]:
    return [r[0] for r in pg.sql(f"SELECT id FROM {table} ORDER BY id")]


def run_cell(pg, tmp_path: Path, point: str, kind: str, bucket_factory) -> tuple:
    cell_dir = tmp_path / f"{kind}-{point}"
    cell_dir.mkdir()
    dest = bucket_factory() if kind.endswith("_s3") else local_dest(cell_dir / "out")
    table = {"big_s3": "crash_big"}.get(kind, "crash_items")
    if kind == "incremental":
        table = f"crash_inc_{point}"
        pg.sql(f"DROP TABLE IF EXISTS {table}")
        pg.sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, seq bigint NOT NULL, v text)")
        pg.sql(f"INSERT INTO {table} SELECT g, g, md5(g::text) FROM generate_series(1, 1000) g")
    cfg = _config(pg, cell_dir, kind, dest, table)
    store = store_of(cfg)
    if kind == "incremental":   # a clean first run, then new rows: the crash happens with a cursor in place
        assert run_summary(rivet("run", "-c", cfg, "--no-tui", "--json", check=0))["rows"] == 1000
        pg.sql(f"INSERT INTO {table} SELECT g, g, md5(g::text) FROM generate_series(1001, 2000) g")
    before = Prefix.of(dest, "x")

    # -- the crash --------------------------------------------------------------------------------------------
    crashed = rivet("run", "-c", cfg, "--no-tui", "--json",
                    env={"RIVET_FAULT_AT": point, "RIVET_FAULT_AFTER": str(fault_after(point, kind))})
    if crashed.returncode == -signal.SIGKILL:
        nth = fault_after(point, kind)
        process = "SIGKILL"
        if kind == "big_s3":
            process += " (multipart upload)"
        elif nth > 1:
            process += f" ({['', '1st', '2nd', '3rd'][nth]} {'chunk' if point == 'after_file_log' else 'part'})"
    else:
        assert crashed.returncode == 0, crashed.stderr
        process = "not reached (no cursor)"
    assert "Traceback" not in crashed.stderr

    # -- right after the crash: nothing ahead of durable data ----------------------------------------------------
    after = Prefix.of(dest, "x")
    problems = after.success_problems()
    assert not problems, problems
    success = "honest" if after.success is not None and after.success != before.success else "none"
    for name in after.part_names:   # everything under a final name is a complete part
        after.rows_of(name)
    files = store.files("x")
    for f in files:                 # a file-log row only for a durable, complete part
        assert after.objects.get(f["path"]) == f["size_bytes"], f
        assert after.rows_of(f["path"]) == f["rows"], f
    durable = Counter(after.manifest_values("id"))
    if kind == "big_s3":            # the kill landed inside a multipart upload: begun, never completed, invisible
        assert _open_multipart_uploads(dest) and not after.part_names
    state = _state_after_crash(store, kind, table, pg, durable, files)

    # -- the plain rerun --------------------------------------------------------------------------------------
    if kind == "incremental":       # rows keep arriving; the rerun must pick them up too, without a gap
        pg.sql(f"INSERT INTO {table} SELECT g, g, md5(g::text) FROM generate_series(2001, 2500) g")
    tasks_before = _pending_chunks(store)
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--validate")
    summary = run_summary(proc)
    assert proc.returncode == 0, proc.stderr
    assert summary["status"] == "succeeded"
    assert "Traceback" not in proc.stderr

    final = Prefix.of(dest, "x")
    assert final.success is not None and not final.success_problems()
    ids = _ids_of(pg, table)
    everywhere = Counter(final.manifest_values("id"))
    assert set(everywhere) == set(ids), "a source row is missing from the manifest-named parts"
    if kind != "incremental":       # the latest manifest alone is the complete, duplicate-free table
        assert sorted(final.manifest_values("id", [final.latest])) == ids
    rerun = _rerun_kind(kind, summary, tasks_before, store, ids)
    dups = "yes (at-least-once)" if any(n > 1 for n in everywhere.values()) else "none"
    return process, success, state, rerun, dups


def _open_multipart_uploads(dest) -> list[str]:
    import boto3
    s3 = boto3.client("s3", endpoint_url=dest.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=dest.bucket).get("Uploads", [])]


def _state_after_crash(store, kind: str, table: str, pg, durable: Counter, files: list[dict]) -> str:
    export_state = store.get_export_state("x") or {}
    prog = (store.progression("x") or [{}])[0]
    if kind == "incremental":
        cursor = export_state.get("last_cursor_value")
        assert cursor is not None      # the clean first run stored one
        covered = {r[0] for r in pg.sql(f"SELECT id FROM {table} WHERE seq <= %s", (int(cursor),))}
        assert covered <= set(durable), "the cursor is ahead of the durable, manifest-named data"
        committed = prog.get("last_committed_cursor")
        assert committed is not None and int(committed) <= int(cursor), "committed ahead of the cursor"
        if int(cursor) == 1000:
            return "cursor unchanged"
        return "cursor and committed moved" if int(committed) == int(cursor) else "cursor moved, committed behind"
    if kind.startswith("chunked"):
        run = store.latest_chunk_run("x")
        tasks = store.chunk_tasks(run["run_id"])
        by_path = {f["path"]: f for f in files}
        for t in (t for t in tasks if t["status"] == "completed"):   # a completed chunk's rows are durable
            window = {r[0] for r in pg.sql("SELECT id FROM crash_items WHERE id BETWEEN %s AND %s",
                                           (int(t["lo"]), int(t["hi"])))}
            rows = sum(by_path[p]["rows"] for p in (t["file_path"] or "").split(",") if p)
            assert rows == len(window) == t["rows_written"], t
        if prog.get("last_committed_chunk_index") is not None:
            k = prog["last_committed_chunk_index"]
            assert all(t["status"] == "completed" for t in tasks if t["chunk_index"] <= k)
            assert set(range(1, ROWS + 1)) <= set(durable), "committed boundary ahead of manifest-named data"
        if run["status"] == "completed":
            return f"chunk run completed, committed #{prog.get('last_committed_chunk_index')}"
        done = sum(t["status"] == "completed" for t in tasks)
        return f"{done} of {len(tasks)} chunks completed"
    if files:
        return "run recorded" if store.metrics("x") else "files logged"
    return "nothing recorded"


def _pending_chunks(store) -> int | None:
    run = store.latest_chunk_run("x")
    if run is None or run["status"] == "completed":
        return None
    return sum(t["status"] != "completed" for t in store.chunk_tasks(run["run_id"]))


def _rerun_kind(kind: str, summary: dict, pending: int | None, store, ids: list[int]) -> str:
    if kind.startswith("chunked"):
        assert store.latest_chunk_run("x")["status"] == "completed"
        assert store.progression("x")[0]["last_committed_chunk_index"] == CHUNKS - 1
        if pending is None:
            assert summary["rows"] == len(ids)
            return "new chunk run: exports all rows again"
        return f"resumes: {pending} chunks to go"
    if kind == "incremental":
        state = store.get_export_state("x")
        assert state["last_cursor_value"] == str(max(ids))
        assert store.progression("x")[0]["last_committed_cursor"] == str(max(ids))
        return "exports only new rows" if summary["rows"] == 500 else "exports from the old cursor"
    assert summary["rows"] == len(ids)
    return "exports all rows again"


@pytest.mark.parametrize("kind", ["full", "chunked", "incremental", "s3"])
def test_crash_matrix(tmp_path, pg, crash_src, request, kind):
    cells = [(p, k) for p, k in CELLS if k == kind or (kind == "s3" and k.endswith("_s3"))]
    if kind == "s3":
        request.getfixturevalue("crash_big")
        moto = request.getfixturevalue("moto_server")
        from tests.fixtures.emulators import _unsigned_put
        import uuid

        def bucket():
            from engine.config import DestinationConfig
            name = f"rivet-crash-{uuid.uuid4().hex[:10]}"
            _unsigned_put(f"{moto.endpoint}/{name}")
            return DestinationConfig(type="s3", bucket=name, region="us-east-1", endpoint=moto.endpoint,
                                     access_key_env="RIVET_TEST_S3_ACCESS_KEY",
                                     secret_key_env="RIVET_TEST_S3_SECRET_KEY", prefix="x/")
    else:
        bucket = None
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {cell: pool.submit(run_cell, pg, tmp_path, *cell, bucket) for cell in cells}
    failures = []
    for cell, fut in futures.items():
        try:
            got = fut.result()
        except AssertionError as e:
            failures.append(f"{cell}: {e}")
            continue
        if got != EXPECTED[cell]:
            failures.append(f"{cell}: got {got}, expected {EXPECTED[cell]}")
    assert not failures, "\n".join(failures)


def matrix_markdown() -> str:
    lines = ["| point | export | process | `_SUCCESS` after the crash | state after the crash | plain rerun "
             "(+ validate: ok) | duplicate rows |", "|---|---|---|---|---|---|---|"]
    for point, kind in CELLS:
        lines.append(f"| {point} | {kind} | " + " | ".join(EXPECTED[(point, kind)]) + " |")
    return "\n".join(lines)


def test_readme_holds_the_matrix():
    readme = (Path(__file__).parent / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("|"))
    assert matrix_markdown() in table, "tests/reliability/README.md: regenerate the crash table from EXPECTED"


def test_every_point_is_in_the_matrix():
    assert {p for p, _ in CELLS} == set(POINTS)
    assert re.fullmatch(r"[a-z_]+", "".join(POINTS))
