"""Where parts, manifests and _SUCCESS land: local disk, S3, GCS, Azure Blob (all through obstore) and stdout.

One commit path serves every destination (docs/architecture.md): the format writer writes a part into `spool_dir()`, then
`commit_file` makes it visible under its final name only once it is complete — a rename for local disk (the spool
is a hidden staging dir inside the destination root, so same filesystem), an obstore put for clouds (multipart
above 8 MiB, streamed from the file). An interrupted upload leaves no object under the final name: a single PUT is
all-or-nothing, and a multipart upload only becomes an object when it is completed.

Failing fast: every cloud store gets a 2 s connect timeout, a 60 s per-request timeout (one request carries at most
one 8 MiB part) and at most 2 retries (backoff 0.1 s → 2 s, never retrying after 10 s). A closed port fails in well
under a second; a black-holed address in about 7 s. The runner retries transient errors on its own schedule.

GCS pointed at an emulator: when `endpoint` is set, it becomes obstore's `base_url` and the bearer token is taken from
the environment variable RIVET_GCS_BEARER_TOKEN (never from the config file). Without `endpoint` the variable is
ignored and `credentials_file` or application default credentials are used.

Every obstore/OS failure leaves this module as a one-line RivetError (see `error_from`), credentials redacted.
"""
from __future__ import annotations

import configparser
import json
import os
import io
import re
import shutil
import sys
import tempfile
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, overload
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

from engine import secrets
from engine.urls import fill_placeholders as _fill
from engine.urls import is_loopback
from engine.config import DestinationConfig
from engine.faults import armed, fault
from engine.formats import is_part_of
from engine.errors import ExitClass, RivetError

if TYPE_CHECKING:   # typing-only names in obstore (not importable at runtime)
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, RetryConfig, S3Config, S3Credential

PART_CHUNK = 8 * 1024 * 1024      # multipart above this size, and the part size (bounds memory with CONCURRENCY)
CONCURRENCY = 4                   # parts in flight per upload: peak buffer ≈ PART_CHUNK × CONCURRENCY = 32 MiB
STAGING_DIR = ".rivet-staging"    # local only: hidden spool inside the destination root, excluded from list()
CLIENT_OPTIONS: ClientConfig = {"connect_timeout": "2s", "timeout": "60s"}
RETRY: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=10),
         "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2}}


class _FaultAtHalf(io.RawIOBase):
    """Test-only (RIVET_FAULT_AT=mid_upload): a file reader that kills the process once half was handed over."""

    def __init__(self, path: Path, size: int):
        self._f, self._half, self._sent, self._hit = open(path, "rb"), size // 2, 0, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._sent += len(data)
        if self._sent >= self._half and not self._hit:
            self._hit = True   # one hit per upload, so RIVET_FAULT_AFTER=N counts parts, not reads
            fault("mid_upload")
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_destination(cfg: DestinationConfig, export_name: str, run_id: str, now: datetime) -> Destination:
    if cfg.type == "stdout":
        return StdoutDestination(cfg, export_name, run_id, now)
    return Destination(cfg, export_name, run_id, now)


class Destination:
    """One export's output location for one run. Thread-safe: parallel chunk tasks share it."""

    kind: str    # local | s3 | gcs | azure | stdout
    uri: str     # for display, never credentials: file:///abs/dir/, s3://bucket/prefix/, gs://…, az://container/…, stdout
    # An object to delete before the first part of this run lands (the prefix's _SUCCESS): a run that commits
    # nothing leaves the prefix exactly as it was, and a part never lands beside a _SUCCESS that does not name it.
    retract_on_commit: str | None = None

    def __init__(self, cfg: DestinationConfig, export_name: str, run_id: str, now: datetime):
        self.kind = cfg.type
        self.run_id = run_id
        values = _placeholder_values(export_name, run_id, now)
        self._prefix = _norm_prefix(_fill(cfg.prefix or "", values))
        self._lock = threading.Lock()
        self._retract_lock = threading.Lock()
        self._retracted = False
        self._dirty_dirs: set[Path] = set()     # local directories that received a part since the last sync()
        self._spool: Path | None = None
        self._store = None
        if self.kind == "local":
            if not cfg.path:
                raise RivetError("RIVET_DEST_CONFIG", "local destination needs `path`",
                                 'set path = "out/{export}" in [exports.destination]')
            self.root = Path(_fill(cfg.path, values)).absolute()
            self.uri = f"file://{self.root.as_posix().rstrip('/')}/{self._prefix}"
            return
        if self.kind not in ("s3", "gcs", "azure"):
            raise RivetError("RIVET_DEST_CONFIG", f"unknown destination type {self.kind!r}",
                             "use one of: local, s3, gcs, azure, stdout")
        if not cfg.bucket:
            what = "container" if self.kind == "azure" else "bucket"
            raise RivetError("RIVET_DEST_CONFIG", f"{self.kind} destination needs `bucket` (the {what} name)",
                             "set bucket in [exports.destination]")
        scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}[self.kind]
        self.uri = f"{scheme}://{cfg.bucket}/{self._prefix}"
        self._store = self._cloud_store(cfg)

    # ------------------------------------------------------------------ public API

    def spool_dir(self) -> Path:
        """Where a part is written before commit_file. Local: <root>/.rivet-staging/<run_id>/; cloud: a temp dir."""
        with self._lock:
            if self._spool is None:
                with self._guard("create the spool directory"):
                    if self.kind == "local":
                        spool = self.root / STAGING_DIR / self.run_id
                        spool.mkdir(parents=True, exist_ok=True)
                    else:
                        spool = Path(tempfile.mkdtemp(prefix=f"rivet-spool-{self.run_id}-"))
                self._spool = spool
            return self._spool

    def commit_file(self, local_path: Path, name: str) -> None:
        """Make a complete local file visible as prefix/name. On failure the spool file stays, so a retry can rerun."""
        key = self._key(name)
        local_path = Path(local_path)
        self._retract_once()
        with self._guard(f"commit {name}"):
            if self.kind == "local" and local_path.is_relative_to(self.root):
                fault("mid_upload")   # a local part is complete in the spool, not yet under its name
                obstore.rename(self._local(), local_path.relative_to(self.root).as_posix(), key)
                with self._lock:   # and each directory the rename created (a Hive partition's), up to the prefix
                    d = (self.root / key).parent
                    self._dirty_dirs.add(d)
                    for _ in range(name.count("/")):
                        d = d.parent
                        self._dirty_dirs.add(d)
                return
            size = local_path.stat().st_size
            source = _FaultAtHalf(local_path, size) if armed("mid_upload") else local_path
            obstore.put(self._writable(), key, source, use_multipart=size > PART_CHUNK,
                        chunk_size=PART_CHUNK, max_concurrency=CONCURRENCY)
            local_path.unlink()

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write a small object whole. Locally it is durable when this returns (file and directory fsynced): a
        manifest or _SUCCESS must survive a power loss once the cursor moves past it."""
        key = self._key(name)
        with self._guard(f"write {name}"):
            if self.kind != "local":
                obstore.put(self._writable(), key, data, use_multipart=False)
                return
            spool = self.spool_dir() / f".{uuid.uuid4().hex[:12]}-{name.rsplit('/', 1)[-1]}"
            with open(spool, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            obstore.rename(self._local(), spool.relative_to(self.root).as_posix(), key)
            _fsync_dir((self.root / key).parent)

    def sync(self) -> None:
        """Make the names of the parts committed so far durable (local: fsync their directories; a cloud upload is
        durable when it completes). Call before writing a manifest that names them."""
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        for d in dirs:
            with self._guard("sync the destination directory"):
                _fsync_dir(d)

    def _retract_once(self) -> None:
        if self.retract_on_commit is None:
            return
        with self._retract_lock:
            if not self._retracted:
                self.delete(self.retract_on_commit)
                self._retracted = True

    def get_bytes(self, name: str) -> bytes:
        key = self._key(name)
        store = self._readable()
        if store is None:
            raise self._missing(name)
        try:
            with self._guard(f"read {name}", missing_ok=True):
                return bytes(obstore.get(store, key).bytes())
        except FileNotFoundError:
            raise self._missing(name) from None

    def local_copy(self, name: str, into: Path) -> tuple[Path, bool]:
        """A readable local file with the bytes of prefix/name (quality gates, engine/guardrails.py): a local part
        where it lies (False: not a copy), a cloud object streamed into a file under `into` (True: the caller
        deletes it). Memory stays bounded by the stream's chunk size."""
        key = self._key(name)
        if self.kind == "local":
            path = self.root / key
            if not path.is_file():
                raise self._missing(name)
            return path, False
        store = self._readable()
        if store is None:
            raise self._missing(name)
        target = Path(into) / f"{uuid.uuid4().hex[:12]}-{name.rsplit('/', 1)[-1]}"
        try:
            with self._guard(f"read {name}", missing_ok=True), open(target, "wb") as f:
                for chunk in obstore.get(store, key).stream():
                    f.write(chunk)
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            raise self._missing(name) from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target, True

    def head(self, name: str) -> int | None:
        """Size in bytes, or None when the object is missing."""
        key = self._key(name)
        store = self._readable()
        if store is None:
            return None
        try:
            with self._guard(f"look up {name}", missing_ok=True):
                return int(obstore.head(store, key)["size"])
        except FileNotFoundError:
            return None

    def list(self) -> list[tuple[str, int]]:
        """Every object under the prefix, recursively: (name relative to the prefix, size), sorted by name."""
        store = self._readable()
        if store is None:
            return []
        out: list[tuple[str, int]] = []
        with self._guard("list"):
            for batch in obstore.list(store, prefix=self._prefix.rstrip("/") or None):
                for meta in batch:
                    rel = meta["path"][len(self._prefix):]
                    if self.kind == "local" and not self._prefix and rel.startswith(STAGING_DIR + "/"):
                        continue
                    out.append((rel, int(meta["size"])))
        return sorted(out)

    def delete(self, name: str) -> None:
        """Delete prefix/name; a missing object is not an error."""
        key = self._key(name)
        store = self._readable()
        if store is None:
            return
        try:
            with self._guard(f"delete {name}", missing_ok=True):
                obstore.delete(store, key)
        except FileNotFoundError:
            pass

    def probe(self) -> None:
        """doctor: prove the destination writable by putting and deleting a small object."""
        name = f".rivet-probe-{uuid.uuid4().hex[:12]}"
        try:
            self.put_bytes(name, b"rivet doctor probe\n")
            self.delete(name)
        finally:
            self.close()

    def sweep_spool(self, export_name: str) -> int:
        """Local only: remove spool files an earlier, killed run of this export left behind (its parts never reached
        their final names). Call it holding the export's run lock; files of other exports are never touched.
        Returns how many files were removed."""
        if self.kind != "local":
            return 0
        staging = self.root / STAGING_DIR
        removed = 0
        for run_dir in staging.glob("*") if staging.is_dir() else []:
            if run_dir.name == self.run_id or not run_dir.is_dir():
                continue
            for sub in [d for d in run_dir.glob("*=*") if d.is_dir()]:   # a Hive partition's spool folder
                for f in sub.iterdir():
                    if is_part_of(export_name, f.name) and f.is_file():
                        f.unlink(missing_ok=True)
                        removed += 1
                try:
                    sub.rmdir()
                except OSError:
                    pass
            for f in run_dir.iterdir():
                if not is_part_of(export_name, f.name):
                    continue
                if f.is_dir():   # a partitioned export's folder
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
                removed += 1
            try:
                run_dir.rmdir()   # only if nothing of another export is left in it
            except OSError:
                pass
        return removed

    def close(self) -> None:
        """Remove the (now empty) spool directory. Leftover spool files of a failed commit are left for inspection."""
        with self._lock:
            spool, self._spool = self._spool, None
        if spool is None:
            return
        for sub in sorted((p for p in spool.glob("*=*") if p.is_dir()), reverse=True):
            try:   # a Hive partition's spool folder (engine/layouts.py), empty once its parts are committed
                sub.rmdir()
            except OSError:
                pass
        for d in (spool, spool.parent) if self.kind == "local" else (spool,):
            try:
                d.rmdir()
            except OSError:
                break

    def error_from(self, exc: BaseException, action: str = "write a part") -> RivetError:
        """Translate an obstore/OS error into one clear line. Public so format writers can map spool-write OSErrors
        (ENOSPC while writing into spool_dir()) to the same codes."""
        if isinstance(exc, RivetError):
            return exc
        return _translate(exc, self, action)

    # ------------------------------------------------------------------ internals

    def _key(self, name: str) -> str:
        segments = name.split("/")
        if not name or name.startswith("/") or "\\" in name or any(s in ("", ".", "..") for s in segments):
            raise RivetError("RIVET_DEST_PATH_TRAVERSAL",
                             f"object name {name!r} is not a plain relative path under {self.uri}",
                             "object names are relative paths without '.', '..', empty segments or backslashes")
        return self._prefix + name

    @overload
    def _local(self, create: Literal[True] = ...) -> LocalStore: ...
    @overload
    def _local(self, create: bool) -> LocalStore | None: ...

    def _local(self, create: bool = True) -> LocalStore | None:
        """The local store, made on first use; None only when not asked to create the missing root."""
        with self._lock:
            if self._store is None:
                if not create and not self.root.is_dir():
                    return None
                with self._guard("create the destination directory"):
                    self._store = LocalStore(self.root, mkdir=True)
            return self._store

    def _writable(self):
        return self._local() if self.kind == "local" else self._store

    def _readable(self):
        return self._local(create=False) if self.kind == "local" else self._store

    def _missing(self, name: str) -> RivetError:
        return RivetError("RIVET_DEST_OBJECT_MISSING", f"{self.uri}{name} does not exist",
                          "the object was never written or was removed; rerun the export", ExitClass.INTEGRITY)

    @contextmanager
    def _guard(self, action: str, missing_ok: bool = False):
        """Turn obstore/OS errors into RivetError. With missing_ok, obstore's "object not found" (FileNotFoundError)
        passes through for the caller to handle — unless it is really a missing bucket."""
        try:
            yield
        except RivetError:
            raise
        except Exception as exc:
            if missing_ok and isinstance(exc, FileNotFoundError) and not _NO_BUCKET.search(str(exc)):
                raise
            raise self.error_from(exc, action) from exc

    def _cloud_store(self, cfg: DestinationConfig):
        client = CLIENT_OPTIONS.copy()
        if cfg.endpoint:
            client["allow_http"] = _check_endpoint(cfg.endpoint)
        conf: dict = {}
        try:
            if self.kind == "s3":
                creds = _s3_credentials(cfg)
                region = cfg.region or creds.pop("region", None)
                if region:
                    conf["region"] = region
                if cfg.endpoint:
                    conf["endpoint"] = cfg.endpoint
                # Explicit keys go through a provider: passed as config, obstore would still mix in an
                # AWS_SESSION_TOKEN from the environment and sign with a token that does not belong to them.
                provider = (lambda: cast("S3Credential", {**creds, "expires_at": None})) if creds else None
                return S3Store(cfg.bucket, config=cast("S3Config", conf), client_options=client, retry_config=RETRY,
                               credential_provider=provider)
            if self.kind == "gcs":
                if cfg.credentials_file:
                    conf.update(_gcs_credentials(cfg.credentials_file))
                if cfg.endpoint:
                    conf["base_url"] = cfg.endpoint.rstrip("/")
                    token = os.environ.get("RIVET_GCS_BEARER_TOKEN")
                    if token:
                        secrets.register(token)
                        conf["bearer_token"] = token
                return GCSStore(cfg.bucket, config=cast("GCSConfig", conf), client_options=client, retry_config=RETRY)
            conf.update(_azure_credentials(cfg))
            if cfg.endpoint:
                conf["endpoint"] = cfg.endpoint.rstrip("/")
            return AzureStore(cfg.bucket, config=cast("AzureConfig", conf), client_options=client, retry_config=RETRY)
        except RivetError:
            raise
        except Exception as exc:
            raise RivetError("RIVET_DEST_CONFIG", f"{self.kind} destination {self.uri}: {_first_line(exc)}",
                             "check [exports.destination] and the credentials it names") from exc


class StdoutDestination(Destination):
    """Parts stream to stdout in commit order; nothing else is written and nothing can be read back."""

    def __init__(self, cfg: DestinationConfig, export_name: str, run_id: str, now: datetime):
        self.kind, self.uri, self.run_id = "stdout", "stdout", run_id
        self._prefix, self._lock, self._spool, self._store = "", threading.Lock(), None, None
        self._retract_lock, self._retracted, self._dirty_dirs = threading.Lock(), True, set()   # nothing to retract

    def commit_file(self, local_path: Path, name: str) -> None:
        local_path = Path(local_path)
        out = sys.stdout.buffer
        with self._lock:   # parts must not interleave
            try:
                with open(local_path, "rb") as f:
                    shutil.copyfileobj(f, out, 1024 * 1024)
                out.flush()
            except BrokenPipeError as exc:
                raise RivetError("RIVET_DEST_STDOUT_CLOSED", "stdout was closed while writing a part",
                                 "the reading side of the pipe exited; check the consuming command",
                                 ExitClass.TRANSIENT) from exc
        local_path.unlink()

    def put_bytes(self, name: str, data: bytes) -> None:
        """Manifests and _SUCCESS have nowhere to go on stdout: a no-op."""

    def get_bytes(self, name: str) -> bytes:
        raise self._unsupported("read objects back")

    def head(self, name: str) -> int | None:
        raise self._unsupported("look objects up")

    def list(self) -> list[tuple[str, int]]:
        raise self._unsupported("list objects")

    def delete(self, name: str) -> None:
        raise self._unsupported("delete objects")

    def probe(self) -> None:
        if sys.stdout is None or sys.stdout.closed:
            raise RivetError("RIVET_DEST_STDOUT_CLOSED", "stdout is closed", "run rivet with stdout attached")

    @staticmethod
    def _unsupported(what: str) -> RivetError:
        return RivetError("RIVET_DEST_UNSUPPORTED", f"the stdout destination cannot {what}",
                          "validate, reconcile and resume need a stored destination (local, s3, gcs, azure)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- placeholders and paths

def _placeholder_values(export_name: str, run_id: str, now: datetime) -> dict[str, str]:
    for label, value in (("export name", export_name), ("run id", run_id)):
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise RivetError("RIVET_DEST_PATH_TRAVERSAL", f"{label} {value!r} cannot be used in a destination path",
                             "names used in {export}/{run_id} must be single path segments")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return {"export": export_name, "date": now.astimezone(UTC).strftime("%Y-%m-%d"), "run_id": run_id}


def _norm_prefix(prefix: str) -> str:
    """'/raw/orders' → 'raw/orders/'; '' stays ''. Refuses '..' and '.' segments."""
    segments = [s for s in prefix.strip("/").split("/") if s]
    if any(s in (".", "..") for s in segments) or "\\" in prefix:
        raise RivetError("RIVET_DEST_PATH_TRAVERSAL", f"destination prefix {prefix!r} contains '.' or '..'",
                         "use a plain relative prefix such as raw/{export}/{date}/")
    return "/".join(segments) + "/" if segments else ""


def _check_endpoint(endpoint: str) -> bool:
    """Return allow_http. Plain http is accepted only for loopback addresses (emulators, local MinIO)."""
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return False
    if parts.scheme != "http" or not parts.hostname:
        raise RivetError("RIVET_DEST_CONFIG", f"endpoint {endpoint!r} is not an http(s) URL",
                         "use https://host[:port] (or http://127.0.0.1:port for a local emulator)")
    loopback = is_loopback(parts.hostname)
    if not loopback:
        raise RivetError("RIVET_DEST_INSECURE_ENDPOINT", f"plain-http endpoint {endpoint!r} is not a loopback address",
                         "use https:// for remote endpoints; http:// is only accepted for 127.0.0.1/localhost/::1")
    return True


# ---------------------------------------------------------------------- credentials (names in config, values in env/files)

def _env(var: str, field: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise RivetError("RIVET_DEST_CREDENTIALS_MISSING", f"environment variable {var} (named by {field}) is not set",
                         f"export {var}=... before running rivet, or remove {field} to use the default credential chain")
    secrets.register(value)
    return value


def _s3_credentials(cfg: DestinationConfig) -> dict:
    if cfg.access_key_env or cfg.secret_key_env:
        return {"access_key_id": _env(cfg.access_key_env or "AWS_ACCESS_KEY_ID", "access_key_env"),
                "secret_access_key": _env(cfg.secret_key_env or "AWS_SECRET_ACCESS_KEY", "secret_key_env"),
                "token": _env(cfg.session_token_env, "session_token_env") if cfg.session_token_env else None}
    if cfg.aws_profile:
        return _aws_profile(cfg.aws_profile, cfg.region)
    return {}   # obstore's default chain: AWS_* environment, web identity, ECS/EC2 instance metadata


def _aws_profile(profile: str, region: str | None) -> dict:
    """Static keys (+ region) of a named profile from the shared credentials/config files. SSO and assume-role
    profiles are not read: use access_key_env or the default chain for those."""
    path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser()
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section(profile) or not parser.get(profile, "aws_access_key_id", fallback=None):
        raise RivetError("RIVET_DEST_CREDENTIALS_MISSING", f"AWS profile {profile!r} has no static keys in {path}",
                         "add aws_access_key_id/aws_secret_access_key to that profile, or use access_key_env")
    creds = {"access_key_id": parser.get(profile, "aws_access_key_id"),
             "secret_access_key": parser.get(profile, "aws_secret_access_key", fallback=""),
             "token": parser.get(profile, "aws_session_token", fallback=None) or None}
    for value in creds.values():
        secrets.register(value)
    if not region:
        conf = configparser.ConfigParser()
        conf.read(Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser())
        section = profile if profile == "default" else f"profile {profile}"
        if conf.get(section, "region", fallback=None):
            creds["region"] = conf.get(section, "region")
    return creds


def _gcs_credentials(path: str) -> dict:
    try:
        kind = json.loads(Path(path).read_text()).get("type")
    except (OSError, ValueError, AttributeError) as exc:
        raise RivetError("RIVET_DEST_CREDENTIALS_MISSING", f"cannot read GCS credentials_file {path}: "
                         f"{type(exc).__name__}", "point credentials_file at a service-account JSON key") from exc
    # authorized_user files (gcloud auth application-default login) go through obstore's ADC reader
    return {"application_credentials": path} if kind == "authorized_user" else {"service_account": path}


def _azure_credentials(cfg: DestinationConfig) -> dict:
    creds: dict = {}
    if cfg.account_name:
        creds["account_name"] = cfg.account_name
    if cfg.account_key_env:
        creds["account_key"] = _env(cfg.account_key_env, "account_key_env")
    elif cfg.sas_token_env:
        creds["sas_key"] = _env(cfg.sas_token_env, "sas_token_env").lstrip("?")
    return creds   # neither: obstore's chain (AZURE_STORAGE_* environment, managed identity, az cli)


# ---------------------------------------------------------------------- error translation

_NO_BUCKET = re.compile(r"NoSuchBucket|ContainerNotFound|bucket does not exist|container does not exist")
_SKEW = re.compile(r"RequestTimeTooSkewed|RequestExpired|clock skew|Request date header too old", re.IGNORECASE)
_TLS = re.compile(r"InvalidCertificate|InvalidContentType|UnknownIssuer|certificate|tls handshake|"
                  r"CorruptMessage|HandshakeFailure|AlertReceived|rustls", re.IGNORECASE)
_DENIED = re.compile(r"AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|AuthorizationFailure|"
                     r"AuthenticationFailed|AuthorizationPermissionMismatch|ExpiredToken|InvalidToken|"
                     r"403 Forbidden|401 Unauthorized|NoAuthorization|InvalidAuthenticationInfo")
_UNREACHABLE = re.compile(r"dns error|tcp connect error|Connection refused|kind: Connect|"
                          r"failed to lookup address|Network is unreachable|No route to host", re.IGNORECASE)
_DISK_FULL = re.compile(r"No space left on device|os error 28|Disk quota exceeded|os error 122")
_NOT_WRITABLE = re.compile(r"Permission denied|os error 13|Read-only file system|os error 30|Not a directory|"
                           r"os error 20|Operation not permitted|os error 1\b|File exists|os error 17|"
                           r"Unable to canonicalize")
_REGION = re.compile(r"incorrectly configured region|PermanentRedirect|AuthorizationHeaderMalformed")
_STATUS = re.compile(r"status code: (\d{3})")


def _translate(exc: BaseException, dest: Destination, action: str) -> RivetError:
    where = f"{dest.kind} destination {dest.uri}"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        text = f"{exc.strerror} (os error {exc.errno})"    # the path is in `where` already
    else:
        text = f"{type(exc).__name__}: {exc}"
    status = _STATUS.search(text)
    http_status = status.group(1) if status else ""
    code_5xx = http_status.startswith("5")

    def err(code: str, reason: str, hint: str, exit_class=ExitClass.USAGE, transient=False) -> RivetError:
        return RivetError(code, secrets.redact(f"{where}: cannot {action}: {reason}"), secrets.redact(hint),
                          exit_class, transient=transient)

    if _DISK_FULL.search(text):
        return err("RIVET_DEST_DISK_FULL", "no space left on device",
                   f"free space on the filesystem holding {getattr(dest, 'root', 'the spool directory')} "
                   "or point `path` elsewhere", ExitClass.TRANSIENT)
    if dest.kind == "local" and _NOT_WRITABLE.search(text):
        return err("RIVET_DEST_NOT_WRITABLE", f"{dest.root} is not writable ({_detail(text)})",
                   "make the directory writable by this user (and not under a file or a read-only mount), "
                   "or change `path`")
    if _SKEW.search(text):
        return err("RIVET_DEST_CLOCK_SKEW", f"the server rejected the request time as skewed ({_detail(text)})",
                   "this machine's clock is off; sync it (chrony/ntpd/timedatectl) and retry")
    if _TLS.search(text):
        return err("RIVET_DEST_TLS", f"TLS failed ({_detail(text)})",
                   "check that the endpoint speaks https and its certificate is trusted; plain http:// is "
                   "accepted only for loopback emulators")
    if _NO_BUCKET.search(text):
        what = "container" if dest.kind == "azure" else "bucket"
        return err("RIVET_DEST_NO_BUCKET", f"the {what} does not exist",
                   f"create the {what} (or fix `bucket` in [exports.destination]); rivet never creates it")
    if _REGION.search(text):
        return err("RIVET_DEST_WRONG_REGION", "the bucket lives in another region",
                   "set `region` in [exports.destination] to the bucket's region")
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or _DENIED.search(text):
        return err("RIVET_DEST_ACCESS_DENIED", f"access denied ({_detail(text)})",
                   _CREDENTIAL_HINT.get(dest.kind, "check the destination credentials"))
    if _UNREACHABLE.search(text):
        return err("RIVET_DEST_UNREACHABLE", f"endpoint unreachable ({_detail(text)})",
                   "check `endpoint`, DNS and the network; rivet exits 2 so a scheduler can retry later",
                   ExitClass.TRANSIENT, transient=True)
    if code_5xx:
        return err("RIVET_DEST_SERVER_ERROR", f"the service answered {http_status} ({_detail(text)})",
                   "a cloud-side failure; retry later", ExitClass.TRANSIENT, transient=True)
    if "error sending request" in text or "connection reset" in text.lower() or "timed out" in text.lower():
        return err("RIVET_DEST_CONNECTION", f"the connection failed mid-request ({_detail(text)})",
                   "a network interruption; retry later", ExitClass.TRANSIENT, transient=True)
    if dest.kind == "local" and isinstance(exc, FileNotFoundError):
        return err("RIVET_DEST_NOT_WRITABLE", f"a file or directory vanished ({_detail(text)})",
                   "something else removed files under the destination while rivet was writing")
    return err("RIVET_DEST_ERROR", _detail(text), "see the message; rerun with RIVET_DEBUG=1 for details",
               ExitClass.TRANSIENT)


_CREDENTIAL_HINT = {
    "s3": "check the keys named by access_key_env/secret_key_env (or aws_profile / the default chain) "
          "and that they may write to the bucket",
    "gcs": "check credentials_file (or application default credentials) and the bucket's IAM permissions",
    "azure": "check account_name and the key or SAS token named by account_key_env/sas_token_env",
}


def _detail(text: str) -> str:
    """The one informative fragment of an obstore error: the service's error code, the OS reason, else line one."""
    for pattern in (r"<Code>(\w+)</Code>", r'message: "([^"]+)"', r'error: "([^"]+)"', r"InvalidCertificate\(\s*(\w+)",
                    r"InvalidMessage\(\s*(\w+)", r"(\w[\w ,'-]*) \(os error \d+\)"):
        m = re.search(pattern, text)
        if m:
            status = _STATUS.search(text)
            return f"{m.group(1)}, HTTP {status.group(1)}" if status and pattern.startswith("<Code>") else m.group(1)
    status = _STATUS.search(text)
    if status:
        return f"HTTP {status.group(1)}"
    return _first_line(text)


def _first_line(exc: object) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line[:300]
