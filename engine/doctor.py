"""`rivet doctor`: config parses, state opens, source reachable and authenticated, each destination writable."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from engine.errors import RivetError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def _fail(name: str, e: Exception) -> Check:
    if isinstance(e, RivetError):
        return Check(name, False, f"error[{e.code}]: {e.message}", e.hint)
    from engine.secrets import redact
    return Check(name, False, redact(f"{type(e).__name__}: {e}"))


def run_checks(options: dict) -> list[Check]:
    from engine.config import load_config
    from engine.destinations import open_destination
    from engine.sources import open_source
    from engine.state import StateStore

    checks: list[Check] = []
    try:
        config = load_config(options.get("config_path") or "rivet.toml", state_path=options.get("state_path"))
        checks.append(Check("config", True, f"{config.path} ({len(config.exports)} exports)"))
    except Exception as e:  # noqa: BLE001 - nothing else can be checked without a config
        return [_fail("config", e)]
    try:
        store = StateStore(config.state_path, lock_wait_s=options.get("lock_wait") or 60.0)
        store.summary()
        checks.append(Check("state", True, str(config.state_path)))
    except Exception as e:  # noqa: BLE001
        checks.append(_fail("state", e))
    try:
        with open_source(config.source) as src:
            version = src.server_version()
        checks.append(Check("source", True, f"{config.source.masked_url()} ({version})"))
    except Exception as e:  # noqa: BLE001
        checks.append(_fail("source", e))
    # Every export's own destination: one config entry (`path = "out/{export}"`) resolves to a different place per
    # export, so only resolved places that were already probed are skipped.
    probed: dict[str, str] = {}
    now = datetime.now(timezone.utc)
    for exp in config.exports:
        name = f"destination {exp.name}"
        try:
            dest = open_destination(exp.destination, exp.name, "doctor", now)
            if dest.uri in probed:
                dest.close()
                checks.append(Check(name, True, f"{dest.uri} writable (as for {probed[dest.uri]})"))
                continue
            dest.probe()
            probed[dest.uri] = exp.name
            checks.append(Check(name, True, f"{dest.uri} writable"))
        except Exception as e:  # noqa: BLE001
            checks.append(_fail(name, e))
    if config.executor.type == "dask":
        checks.extend(executor_checks(config))
    return checks


def executor_checks(config) -> list[Check]:
    """[executor] type = "dask": the scheduler answers, and on every worker the rivet package imports, the source
    answers with that worker's own credentials and each (shared) destination takes a probe object."""
    import uuid
    from engine.run.executors import DaskExecutor, connect
    from engine.run.remote import probe_worker, strip_password
    try:
        executor = DaskExecutor(config)        # Dask installed, address set, destinations shareable
        client = connect(executor.address, timeout_s=5)
    except Exception as e:  # noqa: BLE001
        return [_fail("executor", e)]
    try:
        workers = sorted(client.scheduler_info()["workers"])
        checks = [Check("executor", bool(workers), f"dask scheduler {executor.address} ({len(workers)} workers)",
                        "" if workers else f"start workers: dask worker {executor.address}")]
        seen, dests = set(), []
        for exp in config.exports:
            if exp.destination.type != "stdout" and repr(exp.destination) not in seen:
                seen.add(repr(exp.destination))
                dests.append((exp.destination, exp.name))
        tag = uuid.uuid4().hex[:8]
        futures = {w: client.submit(probe_worker, strip_password(config.source), executor.rule, dests, workers=[w],
                                    allow_other_workers=False, pure=False, key=f"rivet-doctor-{tag}-{i}")
                   for i, w in enumerate(workers)}
        for w, fut in futures.items():
            name = f"worker {w}"
            try:
                results = fut.result(timeout=120)
            except ImportError as e:
                checks.append(Check(name, False, f"cannot import the rivet package: {e}",
                                    "install the same rivet version (pip install 'rivet-export[dask]') on every worker"))
                continue
            except Exception as e:  # noqa: BLE001
                checks.append(_fail(name, e))
                continue
            bad = [r for r in results if not r[1]]
            if bad:
                what, _, detail, hint = bad[0]
                checks.append(Check(name, False, f"{what}: {detail}", hint))
            else:
                checks.append(Check(name, True, "rivet imports; " + ", ".join(r[0] for r in results) + " ok"))
        return checks
    finally:
        client.close()
