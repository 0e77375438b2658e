"""Keep credentials out of everything a user sees."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_registered: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret value so `redact` can scrub it from any text we print (error messages from drivers)."""
    if secret and len(secret) >= 4:
        _registered.add(secret)


def mask_url(url: str) -> str:
    """postgresql://user:pw@host/db → postgresql://user:***@host/db (also masks password=... in DSNs)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            url = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return re.sub(r"(?i)(password|pwd)=([^\s&;]+)", r"\1=***", url)


def redact(text: str) -> str:
    text = re.sub(r"(?i)(\w+://[^:/\s@]+:)([^@\s]+)(@)", r"\1***\3", text)
    text = re.sub(r"(?i)(password|pwd|sig|secret|token|key)=([^\s&;'\"]+)", r"\1=***", text)
    for s in sorted(_registered, key=len, reverse=True):
        text = text.replace(s, "***")
    return text
