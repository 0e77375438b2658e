"""`rivet serve`: the Textual app in a real browser (Debian's headless chromium driven by Selenium), behind a token;
a non-loopback bind is refused unless --allow-remote and a token are given.

Chromium comes from `make services` (scripts/services.sh installs chromium and chromium-driver when absent). Without
it this test fails: it never skips."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import RIVET, ROOT, export_config, rivet, write_config

TOKEN = "s3cret-token-for-the-test"
# xterm.js draws on a canvas and textual-serve keeps its Terminal private: catch it when the page assigns
# `this.terminal = new Terminal(...)` (a setter on Object.prototype, installed before any page script runs).
HOOK = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && typeof value.write === "function") { window.__rivetTerm = value; }
  },
});
"""
SCREEN = """
const t = window.__rivetTerm;
if (!t) { return null; }
const b = t.buffer.active, lines = [];
for (let i = 0; i < t.rows; i++) { const l = b.getLine(b.viewportY + i); lines.push(l ? l.translateToString(true) : ""); }
return lines.join("\\n");
"""


@pytest.fixture(scope="module")
def serve_orders(pg):
    pg.sql("DROP TABLE IF EXISTS serve_orders")
    pg.sql("CREATE TABLE serve_orders (id int PRIMARY KEY, v text)")
    pg.sql("INSERT INTO serve_orders SELECT g, 'v' || g FROM generate_series(1, 250) g")
    return pg


def config(tmp_path: Path, pg) -> Path:
    return write_config(tmp_path / "rivet.toml", export_config(pg.url, name="orders", table="serve_orders",
                                                               mode="full"))


def test_non_loopback_host_is_refused_without_allow_remote_and_token(tmp_path, serve_orders):
    cfg = config(tmp_path, serve_orders)
    proc = rivet("serve", "-c", cfg, "--host", "0.0.0.0")
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0" in proc.stderr and "--allow-remote" in proc.stderr
    proc = rivet("serve", "-c", cfg, "--host", "0.0.0.0", "--allow-remote")
    assert proc.returncode == 1
    assert "--allow-remote on 0.0.0.0 needs an access token" in proc.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for(what: str, probe, deadline_s: float = 120.0, interval_s: float = 0.25):
    """Wait for an event (not a timing assertion): the deadline only bounds a hang."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"gave up waiting for {what}; last: {last!r}")


@pytest.fixture
def server(tmp_path, serve_orders):
    cfg = config(tmp_path, serve_orders)
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RIVET_SERVE_TOKEN": TOKEN}
    proc = subprocess.Popen([*RIVET, "serve", "-c", str(cfg), "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def up():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_for("rivet serve to listen", up)
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromium-driver are not installed: run `make services` (scripts/services.sh "
                    "installs them) — this test does not skip")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_served_page_needs_the_token(server):
    url, _ = server
    assert http_status(url + "/") == 401
    assert http_status(url + "/?token=wrong") == 401
    assert http_status(url + "/ws") == 401
    assert http_status(url + f"/?token={TOKEN}") == 200
    # a page of another site in the same browser cannot open the websocket, token cookie or not
    assert http_status(url + f"/ws?token={TOKEN}", {"Origin": "http://evil.example"}) == 403


def test_browser_shows_the_exports_and_r_runs_one(server):
    from selenium.webdriver.common.action_chains import ActionChains
    url, tmp_path = server
    browser = chromium()
    try:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
        browser.get(url + f"/?token={TOKEN}")

        def row(predicate):
            def probe():
                screen = browser.execute_script(SCREEN) or ""
                return next((line for line in screen.splitlines() if "orders" in line and predicate(line)), None)
            return probe

        idle = wait_for("the exports table with orders idle", row(lambda line: "·" in line or "idle" in line))
        assert "✓" not in idle
        browser.execute_script("document.querySelector('.xterm-helper-textarea').focus()")
        ActionChains(browser).send_keys("r").perform()
        wait_for("orders to finish (✓) in the browser", row(lambda line: "✓" in line), deadline_s=180)
        out = tmp_path / "out"
        assert (out / "_SUCCESS").exists() and (out / "manifest.json").exists()
    finally:
        browser.quit()
