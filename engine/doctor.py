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
    seen = set()
    now = datetime.now(timezone.utc)
    for exp in config.exports:
        key = repr(exp.destination)
        if key in seen:
            continue
        seen.add(key)
        name = f"destination {exp.name}"
        try:
            dest = open_destination(exp.destination, exp.name, "doctor", now)
            dest.probe()
            checks.append(Check(name, True, f"{dest.uri} writable"))
        except Exception as e:  # noqa: BLE001
            checks.append(_fail(name, e))
    return checks
