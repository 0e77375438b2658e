"""How numbers, times and progression boundaries read on screen. Pure functions; "-" stands for "unknown", never None."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from rich.filesize import decimal as _decimal_size


def human_bytes(n: float | None) -> str:
    return "-" if n is None else _decimal_size(int(n), precision=1, separator=" ")


def human_count(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def shown(value: object) -> str:
    """A value from the engine as text: None (unknown) reads "-", never "None"."""
    return "-" if value is None or value == "" else str(value)


def chunk_bounds(chunk: dict, keyset: str | None = None, sep: str = " .. ") -> str:
    """A planned chunk's bounds: a range window "lo .. hi", or a keyset page "lo < key ≤ hi" (the first page has
    no lower bound)."""
    lo, hi = chunk.get("lo"), chunk.get("hi")
    if keyset is None:
        return f"{shown(lo)}{sep}{shown(hi)}"
    return (f"{keyset} ≤ {shown(hi)}" if lo is None else f"{shown(lo)} < {keyset} ≤ {shown(hi)}")


def parse_time(at: float | str | datetime | None) -> datetime | None:
    """Epoch seconds, ISO text or a datetime, as an aware UTC datetime (None when unknown or unreadable)."""
    if at is None or at == "":
        return None
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(at, (int, float)):
        return datetime.fromtimestamp(at, UTC)
    try:
        dt = datetime.fromisoformat(str(at))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def epoch(at: float | str | datetime | None) -> float | None:
    dt = parse_time(at)
    return dt.timestamp() if dt else None


def clock_text(at: float | str | None) -> str:
    """HH:MM:SS UTC of an event time (epoch seconds or ISO text)."""
    dt = parse_time(at)
    return dt.strftime("%H:%M:%S") if dt else "--:--:--"


def stamp_text(at: float | str | None) -> str:
    dt = parse_time(at)
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


def boundary(strategy: str | None, cursor: str | None, chunk: int | None) -> str:
    """A committed/verified boundary as `rivet state progression` prints it."""
    if strategy == "chunked" and chunk is not None:
        return f"chunk #{chunk}"
    if cursor is None:
        return "-"
    text = str(cursor)
    if "T" in text or ":" in text:   # a timestamp cursor: to the second is what fits in a column
        dt = parse_time(text)
        if dt is not None:
            return dt.strftime("%Y-%m-%d %H:%M:%S")
    return text


def lag(row: dict) -> str:
    """How far verified trails committed (docs/tui.md, "Progression board": advisory; chunked exports only)."""
    c_strategy, v_strategy = row.get("last_committed_strategy"), row.get("last_verified_strategy")
    if not c_strategy:
        return "-"
    if not v_strategy:   # incremental: no partitions, so no verified boundary
        return "unverified" if c_strategy == "chunked" else "n/a"
    if c_strategy != v_strategy:
        return "strategy changed"
    if c_strategy == "chunked":
        c, v = row.get("last_committed_chunk_index"), row.get("last_verified_chunk_index")
        if c is None or v is None:
            return "-"
        return "in sync" if c <= v else f"{c - v} chunk{'s' if c - v != 1 else ''}"
    c, v = row.get("last_committed_cursor"), row.get("last_verified_cursor")
    if c is None or v is None:
        return "-"
    if c == v:
        return "in sync"
    try:
        return f"{Decimal(c) - Decimal(v):,}"
    except InvalidOperation:
        pass
    tc, tv = parse_time(c), parse_time(v)
    if tc and tv:
        return human_duration((tc - tv).total_seconds())
    return "behind"


def destination_text(dest, base: Path | None = None) -> str:
    """Where an export writes, in one short line (never a credential: only type, bucket, prefix, path); a local
    path under `base` (the config's directory) relative to it."""
    kind = dest.type
    if kind == "local":
        if dest.path and base is not None and Path(dest.path).is_relative_to(base):
            return str(Path(dest.path).relative_to(base))
        return shown(dest.path)
    if kind == "stdout":
        return "stdout"
    scheme = {"s3": "s3", "gcs": "gs", "azure": "az"}.get(kind, kind)
    return f"{scheme}://{shown(dest.bucket)}/{dest.prefix or ''}".rstrip("/")
