"""Keep credentials out of everything a user sees."""
from __future__ import annotations

import re

from engine.urls import mask_url

__all__ = ["mask_url", "redact", "register"]   # mask_url lives in engine.urls (URL surgery); kept here for callers

_registered: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret value so `redact` can scrub it from any text we print (error messages from drivers)."""
    if secret and len(secret) >= 4:
        _registered.add(secret)


def redact(text: str) -> str:
    text = re.sub(r"(?i)(\w+://[^:/\s@]+:)([^@\s]+)(@)", r"\1***\3", text)
    text = re.sub(r"(?i)(password|pwd|sig|secret|token|key)=([^\s&;'\"]+)", r"\1=***", text)
    for s in sorted(_registered, key=len, reverse=True):
        text = text.replace(s, "***")
    return text
