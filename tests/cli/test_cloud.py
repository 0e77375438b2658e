"""Every mode on every destination (issue 6): S3 on moto, GCS's client on moto, Azure on Azurite, and stdout.

Objects are listed and read back through obstore and compared with the source rows; manifest and _SUCCESS must be
the last objects written; bad credentials, a missing bucket and an unreachable endpoint each fail clearly and
leave state untouched.
"""
from __future__ import annotations

import io
import json
import subprocess
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.destinations import open_destination
from tests.helpers import rivet, run_json, write_config

SECRET = "rivet-distinctive-secret-8431"


@pytest.fixture(scope="module")
def items(pg):
    pg.sql("DROP TABLE IF EXISTS cloud_items")
    pg.sql("CREATE TABLE cloud_items (id bigint PRIMARY KEY, v text, at timestamptz)")
    pg.sql("INSERT INTO cloud_items SELECT g, 'v' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 s' "
           "FROM generate_series(1, 3000) g")
    return pg


def dest_toml(store, prefix: str, **overrides) -> str:
    cfg = store.destination(prefix=prefix, **overrides)
    fields = {k: v for k, v in cfg.__dict__.items() if v not in (None, "")}
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in fields.items()) + " }"


def config(tmp_path, pg, store, mode="full", extra="", prefix="{export}/", **dest_overrides):
    """One export of cloud_items to `store`, or to stdout when store is None; `extra` lines go in the export."""
    destination = '{ type = "stdout" }' if store is None else dest_toml(store, prefix, **dest_overrides)
    return write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{pg.url}"

        [[exports]]
        name = "items"
        table = "cloud_items"
        mode = "{mode}"
        destination = {destination}
        {extra}
        """)


def read_back(bucket, prefix="items/") -> tuple[pa.Table, dict, list[str]]:
    dest = open_destination(bucket.destination(prefix=prefix), "items", "x", datetime.now(timezone.utc))
    objects = [name for name, _ in dest.list()]
    m = json.loads(dest.get_bytes("manifest.json"))
    tables = []
    for p in m["parts"]:
        data = dest.get_bytes(p["path"])
        tables.append(pq.read_table(io.BytesIO(data)) if p["path"].endswith(".parquet")
                      else pacsv.read_csv(io.BytesIO(data)))
    return pa.concat_tables(tables), m, objects


BUCKETS = ["s3_bucket", "gcs_bucket", "azure_container"]


@pytest.mark.parametrize("bucket_fixture", BUCKETS, ids=["s3_moto", "gcs_client_on_moto", "azure_azurite"])
@pytest.mark.parametrize("mode", ["full", "chunked"])
def test_export_to_cloud_reads_back_equal(tmp_path, items, request, bucket_fixture, mode):
    bucket = request.getfixturevalue(bucket_fixture)
    extra = ("chunk_size = 1000\n        parallel = 2" if mode == "chunked"
             else 'max_file_size = "10KB"\n        [exports.tuning]\n        batch_size = 500')
    cfg = config(tmp_path, items, bucket, mode=mode, extra=extra)
    out = run_json(cfg)["exports"][0]
    assert out["status"] == "succeeded" and out["rows"] == 3000 and out["files"] >= 2
    table, m, objects = read_back(bucket)
    assert sorted(table.column("id").to_pylist()) == list(range(1, 3001))
    assert m["destination"]["uri"].startswith({"s3": "s3://", "gcs": "gs://", "azure": "az://"}[bucket.kind])
    assert {"manifest.json", "_SUCCESS", f"manifest-{m['run_id']}.json"} <= set(objects)
    assert rivet("validate", "-c", cfg, check=0).returncode == 0
    journal_order = [e for e in json.loads(rivet("metrics", "-c", cfg, "--json", check=0).stdout)["runs"]]
    assert journal_order[0]["status"] == "succeeded"


def test_manifest_and_success_are_written_last_on_s3(tmp_path, items, s3_bucket):
    import boto3
    cfg = config(tmp_path, items, s3_bucket, mode="chunked", extra="chunk_size = 1000")
    run_json(cfg)
    s3 = boto3.client("s3", endpoint_url=s3_bucket.endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    objs = s3.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    by_time = sorted(objs, key=lambda o: (o["LastModified"], o["Key"].endswith("_SUCCESS")))
    assert by_time[-1]["Key"].endswith("_SUCCESS")
    parts = [o for o in objs if o["Key"].endswith(".parquet")]
    manifests = [o for o in objs if "manifest" in o["Key"]]
    assert max(p["LastModified"] for p in parts) <= min(m["LastModified"] for m in manifests)


def test_placeholders_in_prefix(tmp_path, items, s3_bucket):
    cfg = config(tmp_path, items, s3_bucket, prefix="raw/{export}/{date}/{run_id}/")
    run_id = run_json(cfg)["exports"][0]["run_id"]
    day = datetime.strptime(run_id[:8], "%Y%m%d").strftime("%Y-%m-%d")
    table, m, _ = read_back(s3_bucket, prefix=f"raw/items/{day}/{run_id}/")
    assert table.num_rows == 3000 and m["run_id"] == run_id


@pytest.mark.parametrize("case", ["wrong_credentials", "missing_bucket", "unreachable"])
def test_cloud_errors_are_clear_and_leave_state_untouched(tmp_path, items, azure_container, s3_bucket, case):
    if case == "wrong_credentials":
        bucket, overrides, code = azure_container, {"account_key_env": "RIVET_BAD_KEY"}, "RIVET_DEST_ACCESS_DENIED"
    elif case == "missing_bucket":
        bucket, overrides, code = s3_bucket, {"bucket": "rivet-no-such-bucket"}, "RIVET_DEST_NO_BUCKET"
    else:
        bucket, overrides, code = s3_bucket, {"endpoint": "http://127.0.0.1:9"}, "RIVET_DEST_UNREACHABLE"
    cfg = config(tmp_path, items, bucket, mode="incremental", extra='cursor_column = "id"', **overrides)
    env = {"RIVET_BAD_KEY": "d3Jvbmcta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tbG9vay1yZWFsCg=="}
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", env=env)
    assert proc.returncode in (1, 2)
    err = json.loads(proc.stdout)["exports"][0]["error"]
    assert err["code"] == code, err
    assert "Traceback" not in proc.stderr
    state = json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"]
    assert all(s["cursor"] is None for s in state)
    assert json.loads(rivet("state", "files", "-c", cfg, "--json", check=0).stdout)["files"] == []


def test_doctor_proves_each_destination_writable(tmp_path, items, s3_bucket):
    cfg = config(tmp_path, items, s3_bucket)
    proc = rivet("doctor", "-c", cfg, check=0)
    assert "writable" in proc.stderr
    bad = config(tmp_path, items, s3_bucket, bucket="rivet-absent")
    proc = rivet("doctor", "-c", bad)
    assert proc.returncode == 1 and "RIVET_DEST_NO_BUCKET" in proc.stderr


def test_stdout_destination_streams_bytes_and_keeps_cursor(tmp_path, items):
    cfg = config(tmp_path, items, None, mode="incremental", extra='cursor_column = "id"\nformat = "csv"')
    proc = rivet("run", "-c", cfg, "--no-tui", check=0)
    table = pacsv.read_csv(io.BytesIO(proc.stdout.encode()))
    assert table.num_rows == 3000 and table.column_names == ["id", "v", "at"]
    state = json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"]
    assert all(s["cursor"] is None for s in state)       # not retry-safe: no cursor advance
    rivet("run", "-c", cfg, "--no-tui", "--force", check=0)
    state = json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"]
    assert state[0]["cursor"] == "3000"
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 1 and "RIVET_CLI_STDOUT_ONE_EXPORT" in proc.stderr


def test_chunked_csv_to_stdout_streams_its_rows_in_chunk_order(tmp_path, items):
    """One ordered byte stream: chunks follow one another strictly (no read overlap, runner._task_outcomes); on a
    pipe a chunk is one part (never rotated)."""
    cfg = config(tmp_path, items, None, mode="chunked", extra='chunk_size = 500\nparallel = 1\nformat = "csv"\n'
                 '[exports.tuning]\nbatch_size = 100\nthrottle_ms = 0')
    proc = rivet("run", "-c", cfg, "--no-tui", check=0)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0]   # each part starts with one
    ids = [int(line.split(",")[0]) for line in lines if line != header]
    assert ids == list(range(1, 3001)) and lines.count(header) == 6   # a part per chunk, in chunk order


def test_stdout_parquet_pipes_into_a_reader(tmp_path, items):
    cfg = config(tmp_path, items, None)
    proc = subprocess.run(["bash", "-c", f"{' '.join(__import__('tests.helpers', fromlist=['RIVET']).RIVET)} run -c {cfg} "
                           "--no-tui > out.parquet"], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__('os').environ, "PYTHONPATH": str(__import__('tests.helpers', fromlist=['ROOT']).ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 3000


def test_credentials_never_appear_in_outputs(tmp_path, items, s3_bucket):
    env = {"RIVET_TEST_S3_SECRET_KEY": SECRET}   # moto accepts any secret
    cfg = config(tmp_path, items, s3_bucket, mode="chunked", extra="chunk_size = 1000")
    runs = [rivet("run", "-c", cfg, "--no-tui", "--json", env=env),
            rivet("plan", "-c", cfg, "--json", "-o", tmp_path / "plan.json", env=env),
            rivet("state", "files", "-c", cfg, "--json", env=env),
            rivet("doctor", "-c", cfg, env=env)]
    blobs = [p.stdout + p.stderr for p in runs] + [(tmp_path / "plan.json").read_text()]
    _, m, _ = read_back(s3_bucket)
    blobs.append(json.dumps(m))
    assert not any(SECRET in b for b in blobs)
    assert SECRET.encode() not in (tmp_path / ".rivet/state.duckdb").read_bytes()
