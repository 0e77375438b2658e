"""`rivet serve`: the same Textual app in a browser, through textual-serve.

textual-serve runs one `rivet tui` process per browser connection and relays it over a websocket. It has no access
control of its own, so:
- it binds to loopback unless `--allow-remote` is given, and a remote bind needs an access token;
- with a token set, `/`, `/ws` and `/download/…` answer 401 unless the request carries it: `?token=…` on the page
  (which then sets an HttpOnly cookie, so the page's own websocket — opened without the query — carries it too), or
  that cookie. The static files (xterm.js, fonts) are served to anyone;
- the websocket refuses an Origin other than the page's own (another site open in the same browser must not
  reach a loopback server).
"""
from __future__ import annotations

import hmac
import os
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.urls import is_loopback
from engine.errors import ExitClass, RivetError

TOKEN_ENV = "RIVET_SERVE_TOKEN"
COOKIE = "rivet_serve_token"


def check_bind(host: str, allow_remote: bool, token: str | None) -> None:
    """Refuse a bind that would let anyone on the network drive the exports."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise RivetError("RIVET_SERVE_REMOTE", f"refusing to serve on {host}: anyone who reaches it could run and "
                         "reset exports", "keep the default --host 127.0.0.1, or pass --allow-remote with an access "
                         f"token (--token or ${TOKEN_ENV})", ExitClass.USAGE)
    if not token:
        raise RivetError("RIVET_SERVE_NO_TOKEN", f"--allow-remote on {host} needs an access token",
                         f"pass --token TOKEN or set ${TOKEN_ENV}; open the page as http://HOST:PORT/?token=TOKEN",
                         ExitClass.USAGE)


def tui_command(config_path: str | None, state_path: str | None) -> str:
    """The shell command textual-serve starts per browser: this Python, this rivet, the same config and state."""
    args = [sys.executable, "-m", "rivet_tui.cli", "tui", "-c", str(Path(config_path or "rivet.toml").resolve())]
    if state_path:
        args += ["--state", str(Path(state_path).resolve())]
    return " ".join(shlex.quote(a) for a in args)


def _server_class():
    from aiohttp import web
    from textual_serve.server import Server

    class RivetServer(Server):
        def __init__(self, command: str, host: str, port: int, token: str | None):
            super().__init__(command, host=host, port=port, title="rivet")
            self.token = token

        def _token_ok(self, request: web.Request) -> bool:
            given = request.query.get("token") or request.cookies.get(COOKIE) or ""
            return hmac.compare_digest(given.encode(), (self.token or "").encode())

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()

            @web.middleware
            async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
                if request.path.startswith("/static/"):
                    return await handler(request)
                origin = request.headers.get("Origin")
                if request.path == "/ws" and origin and urlsplit(origin).netloc != request.host:
                    # another site's page in the same browser must not drive the TUI (cross-site websocket)
                    raise web.HTTPForbidden(text="rivet serve: cross-origin websocket refused\n")
                if self.token is None:
                    return await handler(request)
                if not self._token_ok(request):
                    raise web.HTTPUnauthorized(text="rivet serve: open this page with ?token=<access token>\n")
                response = await handler(request)
                if request.query.get("token") and not response.prepared:
                    response.set_cookie(COOKIE, request.query["token"], httponly=True, samesite="Strict",
                                        path="/")
                return response

            app.middlewares.append(require_token)
            return app

        async def handle_index(self, request: web.Request) -> Any:
            # The page's websocket and static URLs come from public_url: take them from the address the browser
            # used, so a page opened from another machine (or via "localhost") connects back to the same place.
            self.public_url = f"{request.scheme}://{request.host}"
            return await super().handle_index(request)

        async def on_startup(self, app: web.Application) -> None:
            where = f"http://{self.host}:{self.port}/"
            print(f"rivet serve: {where}" + ("?token=<access token>" if self.token else "")
                  + " (ctrl+c stops)", file=sys.stderr, flush=True)

    return RivetServer


def serve(config_path: str | None, state_path: str | None, host: str, port: int, token: str | None) -> None:
    """Serve until interrupted. The config is loaded first so that a broken one fails here, not in the browser."""
    from engine.config import load_config
    load_config(config_path or "rivet.toml", state_path=state_path)
    os.environ.pop(TOKEN_ENV, None)   # the TUI processes need no token
    server = _server_class()(tui_command(config_path, state_path), host, port, token)
    server.serve()
