"""The ASGI layer in front of every route: token or cookie, CSRF, throttled refusals."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from starlette.datastructures import Headers

from stemd.web.auth import COOKIE, CSRF_HEADER
from stemd.web.context import WebContext

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]],
                   Awaitable[None]]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
OPEN_PATHS = {"/healthz", "/login"}


class Guard:
    """Refuses a request without a valid token (401) or, when it comes with the session
    cookie and changes something, without the page's CSRF header or from another origin (403)."""

    def __init__(self, app: ASGIApp, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        auth = self.ctx.auth
        client = (scope.get("client") or ("?", 0))[0]
        if auth.bearer_ok(headers.get("authorization")):
            await self.app(scope, receive, send)
            return
        cookie = _cookie(headers, COOKIE)
        session = auth.session(cookie)
        if session is None:
            if cookie or headers.get("authorization"):     # a wrong guess, not a first visit
                await asyncio.sleep(auth.throttle.delay(client))
                auth.throttle.failed(client)
            log.warning("web: refused %s %s from %s (no valid token)", scope["method"],
                        scope["path"], client)
            await _refuse(scope, send, 401, "A valid token is needed: log in, or send "
                          "Authorization: Bearer TOKEN (stemd web token prints it).")
            return
        if scope["method"] not in SAFE_METHODS and not self._same_origin(headers, session, scope):
            await _refuse(scope, send, 403, "This request needs the page's CSRF token "
                          "(X-CSRF-Token) and must come from the dashboard's own address.")
            return
        await self.app(scope, receive, send)

    def _open(self, scope: Scope) -> bool:
        path = scope["path"]
        if path == "/metrics" and self.ctx.config.web.metrics_public:
            return True
        return path in OPEN_PATHS

    def _same_origin(self, headers: Headers, session: Any, scope: Scope) -> bool:
        if not self.ctx.auth.csrf_ok(session, headers.get(CSRF_HEADER)):
            return False
        origin = headers.get("origin")
        if origin is None:        # same-origin fetches of some browsers send none
            return True
        host = headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _refuse(scope: Scope, send: Any, status: int, message: str) -> None:
    wants_page = status == 401 and scope["method"] == "GET" and \
        not scope["path"].startswith(("/api/", "/metrics", "/static/"))
    if wants_page:
        from stemd.web.pages import login_page
        body, kind = login_page("").encode(), b"text/html; charset=utf-8"
    else:
        body, kind = json.dumps({"detail": message}).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="stemd"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
