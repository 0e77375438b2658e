"""Destinations against real stores: local disk, S3 on moto, obstore's GCS client on moto, Azure on Azurite.

What a user relies on: parts appear under their final name only complete (big ones multipart), small objects
round-trip, listing is exact, placeholders fill in, doctor's probe works, and every failure is one clear line with
the right code and exit class — never a credential, never a half-written object.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.config import DestinationConfig
from engine.destinations import Destination, open_destination
from engine.errors import ExitClass, RivetError
from tests.fixtures.emulators import AZURITE_KEY, azurite_request, free_port

NOW = datetime(2026, 4, 18, 23, 30, tzinfo=timezone(timedelta(hours=-5)))   # UTC date: 2026-04-19
BIG = 40 * 1024 * 1024
KINDS = ["local", "s3", "gcs_on_moto", "azure"]
CLOUD = ["s3", "gcs_on_moto", "azure"]


@pytest.fixture
def place(request, tmp_path):
    """A factory of DestinationConfigs for one kind: place(prefix=...) → a config pointing at a fresh location."""
    kind = request.param
    if kind == "local":
        return lambda prefix="", **kw: DestinationConfig(type="local", path=str(tmp_path / "out"), prefix=prefix, **kw)
    bucket = request.getfixturevalue({"s3": "s3_bucket", "gcs_on_moto": "gcs_bucket", "azure": "azure_container"}[kind])
    return bucket.destination


def open_dest(cfg: DestinationConfig, export: str = "orders", run_id: str = "run1") -> Destination:
    return open_destination(cfg, export, run_id, NOW)


def spool(dest: Destination, name: str, data: bytes) -> Path:
    path = dest.spool_dir() / name
    path.write_bytes(data)
    return path


def raises(code: str, fn, *args) -> RivetError:
    with pytest.raises(RivetError) as info:
        fn(*args)
    assert info.value.code == code, info.value.render()
    assert "\n" not in info.value.message
    return info.value


# ---------------------------------------------------------------------------------------------- happy paths

@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_commit_small_and_40mb_part_read_back_equal(place):
    dest = open_dest(place(prefix="raw/{export}/{date}/{run_id}/"))
    small, big = os.urandom(1000), os.urandom(BIG)
    small_path, big_path = spool(dest, "a.parquet", small), spool(dest, "b.parquet", big)

    dest.commit_file(small_path, "orders_part1.parquet")
    dest.commit_file(big_path, "chunks/orders_chunk2.parquet")

    assert dest.uri.endswith("/raw/orders/2026-04-19/run1/")
    assert not small_path.exists() and not big_path.exists()          # spool files consumed
    assert dest.list() == [("chunks/orders_chunk2.parquet", BIG), ("orders_part1.parquet", 1000)]
    assert dest.head("chunks/orders_chunk2.parquet") == BIG
    assert dest.get_bytes("orders_part1.parquet") == small
    assert hashlib.sha256(dest.get_bytes("chunks/orders_chunk2.parquet")).digest() == hashlib.sha256(big).digest()
    dest.close()


@pytest.mark.parametrize("kind", ["s3", "gcs_on_moto"])
def test_big_part_goes_multipart_on_moto(kind, request):
    bucket = request.getfixturevalue({"s3": "s3_bucket", "gcs_on_moto": "gcs_bucket"}[kind])
    dest = open_dest(bucket.destination(prefix="p/"))
    dest.commit_file(spool(dest, "b", os.urandom(BIG)), "big.parquet")
    req = urllib.request.Request(f"{bucket.endpoint}/{bucket.name}/p/big.parquet", method="HEAD")
    with urllib.request.urlopen(req) as r:
        assert r.headers["ETag"].strip('"').endswith("-5")          # 40 MiB / 8 MiB parts


def test_big_part_goes_multipart_on_azurite(azure_container):
    dest = open_dest(azure_container.destination(prefix="p/"))
    dest.commit_file(spool(dest, "b", os.urandom(BIG)), "big.parquet")
    status, body = azurite_request(azure_container.endpoint, "GET", f"{azure_container.name}/p/big.parquet",
                                   {"blocklisttype": "committed", "comp": "blocklist"})
    assert status == 200
    assert body.count(b"<Block>") == 5


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_small_objects_put_get_head_list_delete(place):
    dest = open_dest(place(prefix="exp/"))
    assert dest.list() == [] and dest.head("manifest.json") is None
    dest.put_bytes("manifest.json", b'{"status": "ok"}')
    dest.put_bytes("manifest-run1.json", b'{"status": "ok"}')
    dest.put_bytes("_SUCCESS", b"sha256:abc\n")

    assert dest.get_bytes("manifest.json") == b'{"status": "ok"}'
    assert dest.head("_SUCCESS") == 11
    assert [n for n, _ in dest.list()] == ["_SUCCESS", "manifest-run1.json", "manifest.json"]
    dest.delete("_SUCCESS")
    dest.delete("_SUCCESS")                                           # deleting twice is fine
    assert dest.head("_SUCCESS") is None
    assert raises("RIVET_DEST_OBJECT_MISSING", dest.get_bytes, "_SUCCESS").exit_class == ExitClass.INTEGRITY


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_list_stays_inside_the_prefix(place):
    a = open_dest(place(prefix="a/"))
    ab = open_dest(place(prefix="ab/"))
    a.put_bytes("x", b"1")
    ab.put_bytes("y", b"22")
    assert a.list() == [("x", 1)]
    assert ab.list() == [("y", 2)]


@pytest.mark.parametrize("place", KINDS, indirect=True)
def test_probe_leaves_nothing_behind(place):
    dest = open_dest(place(prefix="doctor/"))
    dest.probe()
    assert dest.list() == []


def test_placeholders_fill_path_and_prefix_with_utc_date(tmp_path):
    cfg = DestinationConfig(type="local", path=str(tmp_path / "{export}"), prefix="{date}/{run_id}")
    dest = open_destination(cfg, "events", "r42", NOW)
    dest.put_bytes("_SUCCESS", b"")
    assert (tmp_path / "events" / "2026-04-19" / "r42" / "_SUCCESS").is_file()
    assert dest.uri == f"file://{tmp_path}/events/2026-04-19/r42/"

    s3 = open_destination(DestinationConfig(type="s3", bucket="lake", prefix="/raw/{export}/", region="eu-west-1"),
                          "events", "r42", NOW)
    assert (s3.kind, s3.uri) == ("s3", "s3://lake/raw/events/")
    raises("RIVET_DEST_PLACEHOLDER", open_destination,
           DestinationConfig(type="local", path=str(tmp_path), prefix="{day}/"), "events", "r42", NOW)


def test_local_spool_is_on_the_same_filesystem_and_hidden_from_list(tmp_path):
    dest = open_dest(DestinationConfig(type="local", path=str(tmp_path / "out")))
    part = spool(dest, "p.csv", b"a,b\n")
    assert dest.spool_dir().is_relative_to(tmp_path / "out")
    ino = part.stat().st_ino
    assert dest.list() == []                                          # an unfinished part is invisible
    dest.commit_file(part, "p.csv")
    assert (tmp_path / "out" / "p.csv").stat().st_ino == ino          # a rename, not a copy
    dest.close()
    assert os.listdir(tmp_path / "out") == ["p.csv"]                 # empty staging dir removed


def test_stdout_streams_parts_and_refuses_reads(tmp_path):
    code = (
        "import sys; from datetime import datetime, timezone; from pathlib import Path\n"
        "from engine.config import DestinationConfig; from engine.destinations import open_destination\n"
        "d = open_destination(DestinationConfig(type='stdout'), 'e', 'r', datetime.now(timezone.utc))\n"
        "for i, data in enumerate([b'id\\n1\\n', b'2\\n3\\n']):\n"
        "    p = d.spool_dir() / f'p{i}'; p.write_bytes(data); d.commit_file(p, f'p{i}.csv')\n"
        "d.put_bytes('manifest.json', b'{}'); d.put_bytes('_SUCCESS', b''); d.probe(); d.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         cwd=Path(__file__).parents[2], timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"id\n1\n2\n3\n"
    dest = open_dest(DestinationConfig(type="stdout"))
    assert (dest.kind, dest.uri) == ("stdout", "stdout")
    for fn, args in ((dest.list, ()), (dest.head, ("x",)), (dest.get_bytes, ("x",))):
        raises("RIVET_DEST_UNSUPPORTED", fn, *args)


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kind", CLOUD)
def test_missing_bucket(kind, moto_server, azurite):
    endpoint = azurite.endpoint if kind == "azure" else moto_server.endpoint
    cfg = {"s3": DestinationConfig(type="s3", bucket="no-such-bucket", endpoint=endpoint, region="us-east-1",
                                   access_key_env="RIVET_TEST_S3_ACCESS_KEY", secret_key_env="RIVET_TEST_S3_SECRET_KEY"),
           "gcs_on_moto": DestinationConfig(type="gcs", bucket="nosuchbucket", endpoint=endpoint),
           "azure": DestinationConfig(type="azure", bucket="no-such-container", endpoint=endpoint,
                                      account_name="devstoreaccount1", account_key_env="RIVET_TEST_AZURITE_KEY")}[kind]
    dest = open_dest(cfg)
    err = raises("RIVET_DEST_NO_BUCKET", dest.probe)
    assert err.exit_class == ExitClass.USAGE and not err.transient
    assert "does not exist" in err.message and "create the" in err.hint
    raises("RIVET_DEST_NO_BUCKET", dest.list)
    raises("RIVET_DEST_NO_BUCKET", dest.commit_file, spool(dest, "p", b"x"), "p")


def test_wrong_account_key_on_azurite_is_access_denied_without_the_key(azure_container, monkeypatch):
    wrong = "AAAA" + AZURITE_KEY[4:]
    monkeypatch.setenv("RIVET_TEST_WRONG_KEY", wrong)
    dest = open_dest(azure_container.destination(account_key_env="RIVET_TEST_WRONG_KEY"))
    err = raises("RIVET_DEST_ACCESS_DENIED", dest.probe)
    assert err.exit_class == ExitClass.USAGE and "account_key_env" in err.hint
    assert wrong not in err.render() and AZURITE_KEY not in err.render()
    raises("RIVET_DEST_ACCESS_DENIED", dest.list)


def test_bad_sas_token_on_azurite_is_access_denied(azure_container, monkeypatch):
    monkeypatch.setenv("RIVET_TEST_SAS", "?sv=2021-08-06&ss=b&srt=sco&sp=rwdl&se=2099-01-01&sig=Zm9vYmFy")
    dest = open_dest(azure_container.destination(account_key_env=None, sas_token_env="RIVET_TEST_SAS"))
    err = raises("RIVET_DEST_ACCESS_DENIED", dest.probe)
    assert "Zm9vYmFy" not in err.render()


@pytest.mark.parametrize("kind", CLOUD)
def test_unreachable_endpoint_fails_fast_and_transient(kind):
    endpoint = f"http://127.0.0.1:{free_port()}"                   # nothing listens there
    cfg = {"s3": DestinationConfig(type="s3", bucket="b", endpoint=endpoint, region="us-east-1",
                                   access_key_env="RIVET_TEST_S3_ACCESS_KEY", secret_key_env="RIVET_TEST_S3_SECRET_KEY"),
           "gcs_on_moto": DestinationConfig(type="gcs", bucket="b", endpoint=endpoint),
           "azure": DestinationConfig(type="azure", bucket="c", endpoint=endpoint + "/devstoreaccount1",
                                      account_name="devstoreaccount1", account_key_env="RIVET_TEST_AZURITE_KEY")}[kind]
    started = time.monotonic()
    err = raises("RIVET_DEST_UNREACHABLE", open_dest(cfg).probe)
    assert time.monotonic() - started < 5
    assert err.transient and err.exit_class == ExitClass.TRANSIENT
    assert "Connection refused" in err.message


def test_https_endpoint_that_does_not_speak_tls(s3_bucket):
    https = s3_bucket.endpoint.replace("http://", "https://")
    err = raises("RIVET_DEST_TLS", open_dest(s3_bucket.destination(endpoint=https)).probe)
    assert "https" in err.hint


def test_plain_http_only_for_loopback():
    cfg = DestinationConfig(type="s3", bucket="b", endpoint="http://10.1.2.3:9000")
    raises("RIVET_DEST_INSECURE_ENDPOINT", open_dest, cfg)
    open_dest(DestinationConfig(type="s3", bucket="b", endpoint="http://localhost:9000"))
    open_dest(DestinationConfig(type="s3", bucket="b", endpoint="https://s3.example.com"))


def test_credentials_env_var_not_set(s3_bucket):
    cfg = s3_bucket.destination(access_key_env="RIVET_TEST_UNSET_VARIABLE")
    err = raises("RIVET_DEST_CREDENTIALS_MISSING", open_dest, cfg)
    assert "RIVET_TEST_UNSET_VARIABLE" in err.message


def test_aws_profile_static_keys(s3_bucket, tmp_path, monkeypatch):
    (tmp_path / "credentials").write_text("[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    dest = open_dest(s3_bucket.destination(access_key_env=None, secret_key_env=None, aws_profile="ci"))
    dest.probe()
    raises("RIVET_DEST_CREDENTIALS_MISSING", open_dest, s3_bucket.destination(
        access_key_env=None, secret_key_env=None, aws_profile="absent"))


def test_local_path_under_a_regular_file_is_not_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    dest = open_dest(DestinationConfig(type="local", path=str(tmp_path / "file" / "out")))
    err = raises("RIVET_DEST_NOT_WRITABLE", dest.probe)
    assert "Not a directory" in err.message
    raises("RIVET_DEST_NOT_WRITABLE", dest.spool_dir)
    assert dest.list() == [] and dest.head("x") is None              # reading a never-written place is empty


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          check=False, capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs filesystems (needs root with CAP_SYS_ADMIN); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        if not _mount_tmpfs(path, options):
            pytest.skip("cannot mount tmpfs here (needs root with CAP_SYS_ADMIN)")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_directory_is_not_writable(tmp_path, tmpfs):
    if os.geteuid() != 0:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o555)
    else:
        target = tmpfs("ro", "ro,size=1m")                           # root ignores mode bits, not a ro mount
    err = raises("RIVET_DEST_NOT_WRITABLE", open_dest(DestinationConfig(type="local", path=str(target))).probe)
    assert re.search("Read-only file system|Permission denied", err.message)


def test_disk_full_is_reported_as_such(tmpfs):
    target = tmpfs("small", "size=1m")
    dest = open_dest(DestinationConfig(type="local", path=str(target)))
    err = raises("RIVET_DEST_DISK_FULL", dest.put_bytes, "manifest.json", b"x" * (2 * 1024 * 1024))
    assert str(target) in err.hint
    with pytest.raises(OSError) as info:                              # the format writer's side: spool write
        spool(dest, "part", b"x" * (2 * 1024 * 1024))
    assert dest.error_from(info.value).code == "RIVET_DEST_DISK_FULL"


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/passwd", "a//b", "./a", "", "a\\..\\b"])
def test_object_names_cannot_escape_the_prefix(tmp_path, name):
    dest = open_dest(DestinationConfig(type="local", path=str(tmp_path / "out"), prefix="p/"))
    raises("RIVET_DEST_PATH_TRAVERSAL", dest.put_bytes, name, b"x")
    raises("RIVET_DEST_PATH_TRAVERSAL", dest.commit_file, tmp_path / "whatever", name)
    assert not (tmp_path / "x").exists()


def test_prefix_and_placeholder_values_cannot_escape(tmp_path):
    raises("RIVET_DEST_PATH_TRAVERSAL", open_dest, DestinationConfig(type="s3", bucket="b", prefix="raw/../../x"))
    raises("RIVET_DEST_PATH_TRAVERSAL", open_dest,
           DestinationConfig(type="local", path=str(tmp_path / "{export}")), "../etc")


class _CannedS3(BaseHTTPRequestHandler):
    """Answers every request with one canned S3 response and records the request headers. For what no emulator
    produces on demand: clock skew, a 503, a TLS certificate nobody trusts, the exact headers obstore sends."""
    status, body, seen = 200, b"", []

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(dict(self.headers))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", '"0"')
        self.end_headers()
        self.wfile.write(self.body)
    do_PUT = do_GET = do_HEAD = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def canned_s3():
    """canned_s3(status, s3_code, tls=None) → (endpoint, seen headers); servers stop after the test."""
    servers = []

    def start(status: int = 200, s3_code: str | None = None, tls: ssl.SSLContext | None = None):
        body = f"<?xml version='1.0'?><Error><Code>{s3_code}</Code><Message>m</Message></Error>" if s3_code else ""
        handler = type("H", (_CannedS3,), {"status": status, "body": body.encode(), "seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}", handler.seen
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def s3_at(endpoint: str, **kw) -> Destination:
    return open_dest(DestinationConfig(type="s3", bucket="b", region="us-east-1", endpoint=endpoint,
                                       access_key_env="RIVET_TEST_S3_ACCESS_KEY",
                                       secret_key_env="RIVET_TEST_S3_SECRET_KEY", **kw))


@pytest.mark.parametrize("status, s3_code, code, transient", [
    (403, "RequestTimeTooSkewed", "RIVET_DEST_CLOCK_SKEW", False),
    (403, "AccessDenied", "RIVET_DEST_ACCESS_DENIED", False),
    (503, "SlowDown", "RIVET_DEST_SERVER_ERROR", True),
])
def test_s3_error_answers_are_mapped(canned_s3, status, s3_code, code, transient):
    endpoint, _ = canned_s3(status, s3_code)
    started = time.monotonic()
    err = raises(code, s3_at(endpoint).put_bytes, "x", b"1")
    assert err.transient is transient and time.monotonic() - started < 10
    assert s3_code in err.message


def test_untrusted_certificate_is_a_tls_error(canned_s3, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime(2020, 1, 1)).not_valid_after(datetime(2100, 1, 1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    endpoint, _ = canned_s3(tls=tls)
    err = raises("RIVET_DEST_TLS", s3_at(endpoint).probe)
    assert "UnknownIssuer" in err.message


def test_explicit_keys_do_not_pick_up_a_session_token_from_the_environment(canned_s3, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-another-identity")
    endpoint, seen = canned_s3()
    s3_at(endpoint).put_bytes("x", b"1")
    assert "x-amz-security-token" not in {k.lower() for k in seen[-1]}
    monkeypatch.setenv("RIVET_TEST_TOKEN", "the-right-token")
    s3_at(endpoint, session_token_env="RIVET_TEST_TOKEN").put_bytes("x", b"1")
    assert {k.lower(): v for k, v in seen[-1].items()}["x-amz-security-token"] == "the-right-token"


# ---------------------------------------------------------------------------------------------- interrupted uploads

class StallingProxy:
    """A loopback TCP proxy in front of an emulator. After `limit` bytes went upstream it either stalls (holds every
    connection open, forwarding nothing more) or cuts every connection and refuses new ones."""

    def __init__(self, upstream: str, limit: int, cut: bool):
        parts = urllib.request.urlparse(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.path = parts.path
        self.limit, self.cut = limit, cut
        self.sent = 0
        self.tripped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}{self.path}"
        self._socks: list[socket.socket] = [self.listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.tripped.is_set() and self.cut:
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counts: bool):
        try:
            while data := src.recv(65536):
                if counts:
                    with self._lock:
                        self.sent += len(data)
                        if self.sent > self.limit and not self.tripped.is_set():
                            self.tripped.set()
                            if self.cut:
                                self.close()
                    if self.tripped.is_set():
                        if self.cut:
                            return
                        time.sleep(3600)                              # stall: the upload never finishes
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _cloud_bucket(kind: str, request):
    return request.getfixturevalue({"s3": "s3_bucket", "gcs_on_moto": "gcs_bucket", "azure": "azure_container"}[kind])


@pytest.mark.parametrize("kind", CLOUD)
def test_killed_upload_leaves_no_object_under_the_final_name(kind, request, tmp_path):
    bucket = _cloud_bucket(kind, request)
    proxy = StallingProxy(bucket.endpoint, limit=12 * 1024 * 1024, cut=False)
    part = tmp_path / "part.parquet"
    part.write_bytes(os.urandom(BIG))
    cfg = bucket.destination(prefix="k/", endpoint=proxy.endpoint)
    code = (
        "import sys; from datetime import datetime, timezone; from pathlib import Path\n"
        "from engine.config import DestinationConfig; from engine.destinations import open_destination\n"
        f"cfg = DestinationConfig(**{cfg.__dict__!r})\n"
        "open_destination(cfg, 'e', 'r', datetime.now(timezone.utc)).commit_file(Path(sys.argv[1]), 'final.parquet')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(part)], cwd=Path(__file__).parents[2])
    try:
        assert proxy.tripped.wait(30), "the upload never got going"
        child.kill()                                                   # SIGKILL mid-upload
        child.wait(10)
    finally:
        proxy.close()
    dest = open_dest(bucket.destination(prefix="k/"))
    assert dest.head("final.parquet") is None
    assert dest.list() == []
    assert part.stat().st_size == BIG                                  # the spool file is still there to retry


@pytest.mark.parametrize("kind", CLOUD)
def test_cut_connection_fails_transient_and_a_retry_commits(kind, request):
    bucket = _cloud_bucket(kind, request)
    proxy = StallingProxy(bucket.endpoint, limit=12 * 1024 * 1024, cut=True)
    dest = open_dest(bucket.destination(prefix="k/", endpoint=proxy.endpoint))
    data = os.urandom(BIG)
    part = spool(dest, "part", data)
    try:
        with pytest.raises(RivetError) as info:
            dest.commit_file(part, "f.parquet")
        err = info.value
    finally:
        proxy.close()
    assert err.code in ("RIVET_DEST_UNREACHABLE", "RIVET_DEST_CONNECTION"), err.render()
    assert err.transient and err.exit_class == ExitClass.TRANSIENT
    direct = open_dest(bucket.destination(prefix="k/"))
    assert direct.head("f.parquet") is None
    direct.commit_file(part, "f.parquet")                              # the retry the runner would do
    assert direct.get_bytes("f.parquet") == data


@pytest.mark.slow
def test_300mb_part_uploads_in_bounded_memory(s3_bucket, tmp_path):
    part = tmp_path / "big.parquet"
    with open(part, "wb") as f:
        f.writelines(os.urandom(10 * 1024 * 1024) for _ in range(30))
    cfg = s3_bucket.destination(prefix="m/")
    code = (
        "import resource, sys; from datetime import datetime, timezone; from pathlib import Path\n"
        "from engine.config import DestinationConfig; from engine.destinations import open_destination\n"
        f"cfg = DestinationConfig(**{cfg.__dict__!r})\n"
        "open_destination(cfg, 'e', 'r', datetime.now(timezone.utc)).commit_file(Path(sys.argv[1]), 'big.parquet')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(part)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2], timeout=120)
    assert int(out.stdout) < 300, f"peak RSS {out.stdout.strip()} MiB"
    assert open_dest(cfg).head("big.parquet") == 300 * 1024 * 1024


def test_unfinished_local_part_is_invisible(tmp_path):
    dest = open_dest(DestinationConfig(type="local", path=str(tmp_path / "out")))
    with open(dest.spool_dir() / "half.parquet", "wb") as f:           # a writer that died mid-part
        f.write(b"PAR1" + b"\0" * 1000)
    dest.put_bytes("manifest.json", b"{}")
    assert dest.list() == [("manifest.json", 2)]
