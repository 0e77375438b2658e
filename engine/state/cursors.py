"""Timestamps in the store's format, and the order of cursor values (docs/state.md, "Progression")."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, overload


def now_iso() -> str:
    """The current UTC time in the store's timestamp format."""
    return iso(datetime.now(UTC))


@overload
def iso(value: datetime | str) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | str | None) -> str | None:
    """A datetime in the store's format (naive = UTC); strings and None pass through unchanged."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Cursor ordering (progression rule PG3): numbers as numbers, else timestamps, else byte order.

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})[.,](\d+)")


def _as_number(text: str) -> Decimal | None:
    text = text.strip()
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def _as_instant(text: str) -> tuple[datetime, int] | None:
    """(UTC instant to the microsecond, the digits past microseconds) or None. Naive values are taken as UTC."""
    text = text.strip()
    extra = 0
    m = _FRACTION.search(text)
    if m and len(m.group(2)) > 6:  # fromisoformat drops digits past microseconds; keep them as a tie-breaker
        digits = m.group(2)
        extra = int(digits[6:].ljust(12, "0")[:12])
        text = text[:m.start(2)] + digits[:6] + text[m.end(2):]
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC), extra


def compare_cursors(a: str, b: str) -> int:
    """-1, 0 or 1 as cursor `a` sorts before, equal to, or after `b`.

    Numeric when both parse as numbers ('9' < '10'), else as instants when both parse as ISO 8601 timestamps or dates
    (with or without a zone; naive = UTC), else byte order of the UTF-8 text.
    """
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return _order(na, nb)
    ta, tb = _as_instant(a), _as_instant(b)
    if ta is not None and tb is not None:
        return _order(ta, tb)
    return _order(a.encode(), b.encode())


def _order(x: Any, y: Any) -> int:
    return (x > y) - (x < y)
