"""Notifications `[notifications]` (issue 15, docs/guardrails.md): one webhook POST per export run that meets a
subscribed event, against a real HTTP server on 127.0.0.1; a failed delivery only warns; the URL is never shown."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import export_config, rivet, write_config

SECRET_PATH = "/hooks/T0PSECRET-4f9c2a"
ENV = "RIVET_TEST_WEBHOOK"


class Hook:
    """An HTTP server in a thread that records every POST and answers `status`."""

    def __init__(self, status: int = 200):
        self.status, self.requests = status, []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                      "body": json.loads(body)})
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture()
def items(pg):
    pg.sql("DROP TABLE IF EXISTS notify_items")
    pg.sql("CREATE TABLE notify_items (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL)")
    pg.sql("INSERT INTO notify_items SELECT g, 'n' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'"
           " FROM generate_series(1, 5) g")
    return pg


def config(tmp_path, pg, *, fmt="json", on='["failure", "schema_change", "quality", "degraded"]', table="notify_items",
           mode="full", extra=""):
    text = export_config(pg.url, name="items", table=table, mode=mode, extra=extra)
    head = f"""
        [notifications]
        webhook_url_env = "{ENV}"
        format = "{fmt}"
        on = {on}
        """
    return write_config(tmp_path / "rivet.toml", head + text)


def run(cfg, url, check):
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", env={ENV: url}, check=check)
    assert SECRET_PATH not in proc.stdout and SECRET_PATH not in proc.stderr
    return proc


def test_failure_notifies_once_with_a_json_payload(tmp_path, items, hook):
    cfg = config(tmp_path, items, table="no_such_table")
    proc = run(cfg, hook.url, check=None)
    assert proc.returncode != 0
    out = json.loads(proc.stdout)["exports"][0]
    assert len(hook.requests) == 1
    req = hook.requests[0]
    assert req["path"] == SECRET_PATH and req["content_type"] == "application/json"
    body = req["body"]
    assert body["source"] == "rivet" and body["export"] == "items" and body["event"] == "failure"
    assert body["status"] == out["status"] and body["error_code"] == out["error"]["code"]
    assert body["error_message"] == out["error"]["error"]
    assert set(body) >= {"run_id", "rows", "duration_ms"}


def test_failure_notifies_once_with_a_slack_payload(tmp_path, items, hook):
    cfg = config(tmp_path, items, fmt="slack", table="no_such_table")
    proc = run(cfg, hook.url, check=None)
    code = json.loads(proc.stdout)["exports"][0]["error"]["code"]
    assert len(hook.requests) == 1
    body = hook.requests[0]["body"]
    assert body["text"].startswith("rivet: export items failed") and code in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]


def test_success_notifies_nothing_and_skipped_runs_notify_nothing(tmp_path, items, hook):
    cfg = config(tmp_path, items, mode="incremental", extra='cursor_column = "updated_at"\n        skip_empty = true')
    run(cfg, hook.url, check=0)
    proc = run(cfg, hook.url, check=0)   # no new rows: skipped
    assert json.loads(proc.stdout)["exports"][0]["status"] == "skipped"
    assert hook.requests == []


def test_quality_gate_failure_notifies_quality(tmp_path, items, hook):
    cfg = config(tmp_path, items, extra="[exports.quality]\n        row_count_min = 100")
    run(cfg, hook.url, check=3)
    assert [r["body"]["event"] for r in hook.requests] == ["quality"]
    assert hook.requests[0]["body"]["error_code"] == "RIVET_QUALITY_GATE_FAILED"


def test_only_subscribed_events_notify(tmp_path, items, hook):
    cfg = config(tmp_path, items, on='["degraded"]', table="no_such_table")
    run(cfg, hook.url, check=None)
    assert hook.requests == []


def test_schema_change_notifies_on_a_run_that_succeeds(tmp_path, items, hook):
    cfg = config(tmp_path, items, on='["schema_change"]')
    run(cfg, hook.url, check=0)
    items.sql("ALTER TABLE notify_items ADD COLUMN extra int")
    run(cfg, hook.url, check=0)
    assert [r["body"]["event"] for r in hook.requests] == ["schema_change"]
    assert hook.requests[0]["body"]["status"] == "succeeded"


def test_a_server_error_only_warns_and_keeps_the_exit_code(tmp_path, items):
    hook = Hook(status=500)
    try:
        cfg = config(tmp_path, items, extra="[exports.quality]\n        row_count_min = 100")
        proc = run(cfg, hook.url, check=3)   # the quality failure's exit code, not a notification's
    finally:
        hook.close()
    assert 1 < len(hook.requests) <= 3   # retried, bounded
    out = json.loads(proc.stdout)["exports"][0]
    assert any("notification (quality) not delivered: HTTP 500" in w for w in out["warnings"])
    assert "notification (quality) not delivered" in proc.stderr


def test_a_closed_port_only_warns_and_the_url_is_never_shown(tmp_path, items):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    cfg = config(tmp_path, items, table="no_such_table")
    proc = run(cfg, url, check=None)
    out = json.loads(proc.stdout)["exports"][0]
    assert out["status"] in ("failed", "refused")
    warned = [w for w in out["warnings"] if w.startswith("notification (failure) not delivered")]
    assert warned and "refused" in warned[0].lower()
    assert url not in warned[0] and SECRET_PATH not in warned[0]
    journal = rivet("run", "-c", cfg, "--no-tui", "--json", check=None)   # no env var: warns that it is unset
    assert "RIVET_TEST_WEBHOOK" in json.loads(journal.stdout)["exports"][0]["warnings"][-1]


def test_the_url_env_holds_a_name_not_a_url(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", '[notifications]\nwebhook_url_env = "http://x/y"\n'
                       + export_config(items.url, name="items", table="notify_items", mode="full"))
    proc = rivet("check", "-c", cfg, check=1)
    assert "webhook_url_env" in proc.stdout + proc.stderr


def test_check_names_the_notifications(tmp_path, items):
    cfg = config(tmp_path, items, fmt="slack", on='["failure", "quality"]')
    proc = rivet("check", "-c", cfg, check=0)
    assert f"notifications: slack webhook from ${ENV} on failure, quality" in proc.stderr
    assert json.loads(rivet("check", "-c", cfg, "--json", check=0).stdout)["notifications"] == [
        f"slack webhook from ${ENV} on failure, quality"]


def test_a_run_much_slower_than_its_recent_runs_is_degraded(tmp_path, items, hook):
    """"degraded" covers slow as well as retries and warnings: a run taking more than twice the median of its last
    successful runs (and at least a second more) notifies once, saying how much slower."""
    def write(throttle_ms: int):
        return write_config(tmp_path / "rivet.toml", f"""
            [notifications]
            webhook_url_env = "{ENV}"
            format = "json"
            on = ["degraded"]

            [source]
            type = "postgres"
            url = "{items.url}"

            [[exports]]
            name = "items"
            table = "notify_items"
            destination = {{ type = "local", path = "out/{{run_id}}" }}
            [exports.tuning]
            throttle_ms = {throttle_ms}
            """)
    cfg = write(0)
    for _ in range(3):      # the history: quick runs, each into its own directory (no prefix warning)
        run(cfg, hook.url, check=0)
    assert hook.requests == []
    run(write(4000), hook.url, check=0)   # one batch held 4 s: far above the median, even on a loaded machine
    [request] = hook.requests
    body = request["body"]
    assert body["event"] == "degraded" and body["status"] == "succeeded" and body["warnings"] == []
    assert body["slow"].startswith("slow: ") and "x the median of its last 3 runs" in body["slow"]
