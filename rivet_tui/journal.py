"""Journal lines: one engine event (live, or a stored run_journal row: same fields) as one line of text."""
from __future__ import annotations

from dataclasses import dataclass

from rivet_tui.format import epoch, human_bytes, human_count, human_duration, shown


@dataclass
class JournalLine:
    at: float | None           # epoch seconds (None: unknown, sorts first)
    kind: str
    text: str
    level: str = "info"        # info | warn | error
    export: str = ""

    @property
    def order(self) -> float:
        return self.at if self.at is not None else float("-inf")


def error_text(error: dict | None) -> str:
    if not error:
        return ""
    text = f"error[{error.get('code') or 'RIVET_ERROR'}]: {error.get('error') or error.get('message') or ''}"
    return f"{text}\n  hint: {error['hint']}" if error.get("hint") else text


def short_error(error: dict | None) -> str:
    """An error in one column: its code and the first line of its message."""
    if not error:
        return ""
    message = str(error.get("error") or error.get("message") or "").splitlines()
    return f"{error.get('code') or 'RIVET_ERROR'} {message[0] if message else ''}".strip()


def journal_line(kind: str, p: dict, at: float | str | None) -> JournalLine | None:
    """One journal event as a line for the run detail; None for events that are not worth a line (batches)."""
    when = epoch(p.get("at", at))
    if kind == "ExportStarted":
        parts = [f"started ({p.get('mode')})"]
        if p.get("chunks_total") is not None:
            parts.append(f"{p['chunks_total']} chunks to run" + (f", {p['chunks_done']} already done"
                                                                  if p.get("chunks_done") else ""))
        if p.get("rows_estimate"):
            parts.append(f"~{human_count(p['rows_estimate'])} rows")
        return JournalLine(when, kind, ", ".join(parts))
    if kind == "PhaseChanged":
        return JournalLine(when, kind, str(p.get("phase")))
    if kind == "ChunkStarted":
        attempt = f" attempt {p['attempt']}" if (p.get("attempt") or 1) > 1 else ""
        return JournalLine(when, kind, f"chunk #{p.get('chunk_index')} [{shown(p.get('lo'))} .. {shown(p.get('hi'))}]"
                                       f"{attempt} on {p.get('worker') or 'local'}")
    if kind == "ChunkFinished":
        if p.get("status") == "failed":
            return JournalLine(when, kind, f"chunk #{p.get('chunk_index')} failed: {shown(p.get('error'))}", "error")
        return JournalLine(when, kind, f"chunk #{p.get('chunk_index')} done: {human_count(p.get('rows'))} rows")
    if kind == "PartCommitted":
        return JournalLine(when, kind, f"part {p.get('path')}: {human_count(p.get('rows'))} rows, "
                                       f"{human_bytes(p.get('size_bytes'))}")
    if kind == "Retrying":
        chunk = f"chunk #{p['chunk_index']} " if p.get("chunk_index") is not None else ""
        return JournalLine(when, kind, f"{chunk}retry {p.get('attempt')} in {p.get('delay_s') or 0:.1f}s: "
                                       f"{shown(p.get('error'))}", "warn")
    if kind == "Warned":
        return JournalLine(when, kind, shown(p.get("message")), "warn")
    if kind == "ExportFinished":
        status = p.get("status")
        text = (f"{status}: {human_count(p.get('rows'))} rows, {p.get('files') or 0} files, "
                f"{human_bytes(p.get('bytes'))} in {human_duration((p.get('duration_ms') or 0) / 1000)}")
        if p.get("retries"):
            text += f", {p['retries']} retries"
        if p.get("error"):
            text += "\n" + error_text(p["error"])
        level = "info" if status in ("succeeded", "skipped") else "warn" if status == "stopped" else "error"
        return JournalLine(when, kind, text, level)
    if kind == "BatchWritten":
        return None
    return JournalLine(when, kind, ", ".join(f"{k}={shown(v)}" for k, v in p.items() if k != "at"))
