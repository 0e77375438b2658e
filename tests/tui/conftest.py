"""TUI test helpers: real configs against the session PostgreSQL database, and a Pilot runner without pytest-asyncio."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from engine.config import load_config
from engine.state.store import StateStore
from tests.helpers import write_config

SIZE = (160, 48)
ROWS = 20_000


@pytest.fixture(scope="module")
def shop(pg):
    """tui_orders (chunked, 20,000 rows) and tui_events (incremental on id) in the session database."""
    pg.sql("DROP TABLE IF EXISTS tui_orders")
    pg.sql("CREATE TABLE tui_orders (id bigint PRIMARY KEY, customer int NOT NULL, note text)")
    pg.sql(f"INSERT INTO tui_orders SELECT g, g % 97, 'order ' || g FROM generate_series(1, {ROWS}) g")
    pg.sql("DROP TABLE IF EXISTS tui_events")
    pg.sql("CREATE TABLE tui_events (id bigint PRIMARY KEY, kind text NOT NULL)")
    pg.sql("INSERT INTO tui_events SELECT g, 'k' || (g % 5) FROM generate_series(1, 500) g")
    return pg


def make_config(tmp_path, pg, exports: str, keys: str = ""):
    """Write rivet.toml (source = the test database) and load it; returns (config, store)."""
    text = f'[source]\ntype = "postgres"\nurl = "{pg.url}"\n\n{exports}\n'
    if keys:
        text += f"\n[tui.keys]\n{keys}\n"
    path = write_config(tmp_path / "rivet.toml", text)
    config = load_config(path)
    return config, StateStore(config.state_path, lock_wait_s=30)


ORDERS = """
[[exports]]
name = "orders"
table = "tui_orders"
mode = "chunked"
chunk_column = "id"
chunk_size = 2000
parallel = 2
destination = { type = "local", path = "out/orders" }
"""

EVENTS = """
[[exports]]
name = "events"
table = "tui_events"
mode = "incremental"
cursor_column = "id"
destination = { type = "local", path = "out/events" }
"""

GHOST = """
[[exports]]
name = "ghost"
table = "no_such_table"
mode = "full"
destination = { type = "local", path = "out/ghost" }
"""


def run(coro_fn: Callable, *args, **kw):
    """Run an async test body (no pytest-asyncio: asyncio.run, one loop per test)."""
    return asyncio.run(coro_fn(*args, **kw))


async def until(pilot, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def cell(app, row: str, column: str) -> str:
    """What the exports table shows in one cell (as text, stripped)."""
    from rivet_tui.widgets.tables import ExportsTable
    table = app.screen.query_one(ExportsTable) if app.screen.query(ExportsTable) else None
    assert table is not None, f"the exports screen is not on top ({type(app.screen).__name__})"
    return table.get_cell(row, column).plain.strip()


def toasts(app) -> str:
    """The text of the notifications on screen."""
    from textual.widgets._toast import Toast
    return "\n".join(str(t.render()) for t in app.screen.query(Toast))
