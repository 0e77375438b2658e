"""The one error type that reaches users.

Every failure a user can cause is a RivetError with a stable code (RIVET_<AREA>_<NAME>), a one-line message,
a hint, and an exit class (docs/architecture.md, "Errors"). Anything else escaping to the CLI is a bug and exits 6.
"""
from __future__ import annotations

import json
from enum import IntEnum


class ExitClass(IntEnum):
    OK = 0
    USAGE = 1        # usage / config
    TRANSIENT = 2    # transient or busy: retry later
    INTEGRITY = 3    # reconcile / validate / quality
    DRIFT = 4        # schema drift with on_schema_drift = "fail"
    REFUSED = 5      # refused on purpose (stale plan, cursor owner mismatch, complete prefix)
    INTERNAL = 6


class RivetError(Exception):
    def __init__(self, code: str, message: str, hint: str = "", exit_class: ExitClass = ExitClass.USAGE,
                 transient: bool = False):
        assert code.startswith("RIVET_"), code
        super().__init__(message)
        self.code = code
        self.message = " ".join(str(message).split())  # one line, always
        self.hint = " ".join(str(hint).split())
        self.exit_class = ExitClass(exit_class)
        # transient errors are retried by the runner (connection reset, server gone, deadlock, cloud 5xx)
        self.transient = transient

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        text = f"error[{self.code}]: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict:
        return {"code": self.code, "exit_class": int(self.exit_class), "error": self.message, "hint": self.hint}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def internal(exc: BaseException) -> RivetError:
    """Wrap an unexpected exception (a bug) without leaking a traceback to the user."""
    return RivetError("RIVET_INTERNAL_ERROR", f"{type(exc).__name__}: {exc}",
                      "this is a bug in rivet; rerun with RIVET_DEBUG=1 for a traceback and report it",
                      ExitClass.INTERNAL)
