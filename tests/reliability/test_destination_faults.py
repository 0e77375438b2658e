"""Destination faults (issue 8): the object store goes away mid-run (our own moto process, SIGKILLed), the bucket is
deleted mid-run, the local disk fills up (a small tmpfs mounted by the test). Each run fails with a clear error code
and exit class, leaves no `_SUCCESS`, moves no cursor or committed boundary, and a plain rerun after the fault is
removed completes with every row (checked through the manifests and `rivet run --validate`).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from engine.config import DestinationConfig
from tests.fixtures.emulators import _start, _unsigned_put, free_port, stop
from tests.reliability.common import Prefix, dest_toml, local_dest, rivet, run_summary, start, store_of, wait_for, \
    write_config

ROWS = 20_000
SLOW = "[exports.tuning]\nbatch_size = 500\nthrottle_ms = 60\nretry_backoff_ms = 100\nmax_retries = 1"


@pytest.fixture(scope="module")
def dest_items(pg):
    pg.sql("DROP TABLE IF EXISTS dest_items")
    pg.sql("CREATE TABLE dest_items (id bigint PRIMARY KEY, seq bigint NOT NULL, pad text)")
    pg.sql(f"INSERT INTO dest_items SELECT g, g, repeat(md5(g::text), 2) FROM generate_series(1, {ROWS}) g")
    return pg


def config(tmp_path: Path, pg, dest: DestinationConfig, body: str, extra: str = SLOW) -> Path:
    return write_config(tmp_path / "rivet.toml", f"""
[source]
type = "postgres"
url = "{pg.url}"

[[exports]]
name = "d"
table = "dest_items"
{body}
destination = {dest_toml(dest)}
{extra}
""")


def s3(endpoint: str, bucket: str) -> DestinationConfig:
    return DestinationConfig(type="s3", bucket=bucket, prefix="d/", region="us-east-1", endpoint=endpoint,
                             access_key_env="RIVET_TEST_S3_ACCESS_KEY", secret_key_env="RIVET_TEST_S3_SECRET_KEY")


def boto(endpoint: str):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def parts_in(client, bucket: str) -> list[str]:
    try:
        objs = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    except Exception:  # noqa: BLE001 - the store may be gone; that is the point
        return []
    return [o["Key"] for o in objs if o["Key"].endswith(".parquet")]


def assert_failed_cleanly(cfg: Path, proc_out: str, code: str, exit_code: int, returncode: int) -> dict:
    summary = json.loads(proc_out)["exports"][0]
    assert returncode == exit_code, summary
    assert summary["status"] == "failed" and summary["error"]["code"] == code, summary["error"]
    assert summary["error"]["hint"]
    store = store_of(cfg)
    state = store.get_export_state("d") or {}
    assert state.get("last_cursor_value") is None, "the cursor moved over a failed run"
    assert store.progression("d") == [], "a committed boundary was recorded for a failed run"
    return summary


def assert_rerun_completes(cfg: Path, dest: DestinationConfig, cursor: bool = True) -> None:
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--validate")
    assert proc.returncode == 0, proc.stderr
    assert run_summary(proc)["status"] == "succeeded"
    prefix = Prefix.of(dest, "d")
    assert prefix.success is not None and not prefix.success_problems()
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))
    if cursor:
        assert store_of(cfg).get_export_state("d")["last_cursor_value"] == str(ROWS)


def test_object_store_stopped_mid_run(tmp_path, dest_items):
    port, work = free_port(), tmp_path / "moto"
    work.mkdir()
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    endpoint, bucket = f"http://127.0.0.1:{port}", f"rivet-stop-{uuid.uuid4().hex[:8]}"
    moto = _start(argv, port, work / "moto.log", work)
    try:
        _unsigned_put(f"{endpoint}/{bucket}")
        dest = s3(endpoint, bucket)
        cfg = config(tmp_path, dest_items, dest, 'mode = "incremental"\ncursor_column = "seq"\nmax_file_size = "64KB"')
        proc = start(cfg)
        client = boto(endpoint)
        assert wait_for(lambda: parts_in(client, bucket), timeout=60), "no part reached the store"
        stop(moto)                                   # the store is gone mid-run
        out, err = proc.communicate(timeout=120)
        assert_failed_cleanly(cfg, out, "RIVET_DEST_UNREACHABLE", 2, proc.returncode)
        assert "Traceback" not in err
        assert store_of(cfg).files("d") == []        # nothing was logged as durable

        moto = _start(argv, port, work / "moto2.log", work)   # the fault is removed (moto forgets everything)
        _unsigned_put(f"{endpoint}/{bucket}")
        assert_rerun_completes(cfg, dest)
    finally:
        stop(moto)


def test_bucket_deleted_mid_run(tmp_path, dest_items, moto_server):
    endpoint, bucket = moto_server.endpoint, f"rivet-del-{uuid.uuid4().hex[:8]}"
    _unsigned_put(f"{endpoint}/{bucket}")
    dest = s3(endpoint, bucket)
    cfg = config(tmp_path, dest_items, dest, 'mode = "chunked"\nchunk_count = 4')
    proc = start(cfg)
    client = boto(endpoint)
    assert wait_for(lambda: parts_in(client, bucket), timeout=60), "no part reached the store"
    for key in [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]:
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
    out, err = proc.communicate(timeout=120)
    assert_failed_cleanly(cfg, out, "RIVET_DEST_NO_BUCKET", 1, proc.returncode)
    assert "Traceback" not in err

    client.create_bucket(Bucket=bucket)              # the fault is removed: the bucket is back, empty
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--validate")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert any("missing from the destination" in w for w in run_summary(proc)["warnings"])
    prefix = Prefix.of(dest, "d")
    assert prefix.success is not None and not prefix.success_problems(), prefix.success_problems()
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) binary: cannot make a small filesystem to fill")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("mode", ["incremental", "full"])   # full: the parallel table scan
def test_local_disk_full(tmp_path, dest_items, tmpfs, mode):
    dest = local_dest(tmpfs / "out")
    body = 'mode = "incremental"\ncursor_column = "seq"' if mode == "incremental" else 'mode = "full"'
    cfg = config(tmp_path, dest_items, dest, body,
                 extra="[exports.tuning]\nbatch_size = 2000\nretry_backoff_ms = 100\nmax_retries = 1")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert_failed_cleanly(cfg, proc.stdout, "RIVET_DEST_DISK_FULL", 2, proc.returncode)
    assert "Traceback" not in proc.stderr
    prefix = Prefix.of(dest, "d")
    assert prefix.success is None and not prefix.part_names    # no half-written part under a final name
    leftovers = [p for p in tmpfs.rglob("*") if p.is_file()]
    assert not leftovers, f"the failed run left spool files on the full disk: {leftovers}"

    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)   # the fault is removed
    assert_rerun_completes(cfg, dest, cursor=mode == "incremental")
