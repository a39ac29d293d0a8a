"""The dashboard's pages, the login and logout, and the health check."""
from __future__ import annotations

import asyncio
import html
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from stemd import __version__
from stemd.web.auth import COOKIE, SESSION_SECONDS, use_login_code
from stemd.web.context import WebContext

LOGIN_BODY_LIMIT = 4096
LOGIN_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>stemd: log in</title>
<style>body{font-family:system-ui,sans-serif;background:#14161a;color:#e8e8e8;display:grid;
place-items:center;height:100vh;margin:0}form{background:#1e2127;padding:2em;border-radius:8px;
width:22em}input{width:100%;box-sizing:border-box;padding:.6em;margin:.6em 0;background:#111;
color:#eee;border:1px solid #444;border-radius:4px}button{padding:.6em 1.2em;background:#3d7eff;
color:#fff;border:0;border-radius:4px;cursor:pointer}p.err{color:#ff7a7a}code{color:#9ad}</style>
</head><body><form method="post" action="/login"><h1>stemd</h1>{message}
<label for="token">Token</label><input id="token" name="token" type="password"
autocomplete="current-password" autofocus>
<p>Print it on the daemon's machine with <code>stemd web token</code>, or open the link
<code>stemd web url</code> prints.</p><button type="submit">Log in</button></form></body></html>"""


def login_page(message: str) -> str:
    note = f'<p class="err">{html.escape(message)}</p>' if message else ""
    return LOGIN_FORM.replace("{message}", note)


def static_text(name: str) -> str:
    return resources.files("stemd.web").joinpath("static", name).read_text(encoding="utf-8")


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(include_in_schema=False)

    @api.get("/healthz", include_in_schema=True, tags=["health"])
    def healthz() -> dict[str, str]:
        """Open to everyone: whether the web server answers (nothing else)."""
        return {"status": "ok", "version": __version__}

    @api.get("/")
    def index() -> HTMLResponse:
        return HTMLResponse(static_text("index.html"), headers={"cache-control": "no-store"})

    @api.get("/jobs/{job_id}")
    def job_page(job_id: int) -> HTMLResponse:
        return HTMLResponse(static_text("job.html"), headers={"cache-control": "no-store"})

    @api.get("/login")
    async def login_link(request: Request, code: str = "") -> Response:
        if code and use_login_code(ctx.store, code):
            return _logged_in(ctx, request)
        if code:
            client = request.client.host if request.client else "?"
            await _wait(ctx, client)
            ctx.auth.throttle.failed(client)
        message = "This login link was used already or has expired." if code else ""
        return HTMLResponse(login_page(message), status_code=401 if code else 200)

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = await _small_form(request)
        if form is None:
            return JSONResponse({"detail": "The login form is larger than it can be."}, 413)
        client = request.client.host if request.client else "?"
        await _wait(ctx, client)
        if ctx.auth.token_ok(form.get("token", "")):
            return _logged_in(ctx, request)
        ctx.auth.throttle.failed(client)
        return HTMLResponse(login_page("That is not the token."), status_code=401)

    @api.post("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @api.get("/api/session", include_in_schema=True, tags=["session"])
    def session(request: Request) -> JSONResponse:
        """The CSRF token the page sends with changes (X-CSRF-Token), for cookie sessions."""
        found = ctx.auth.session(request.cookies.get(COOKIE))
        return JSONResponse({"csrf": ctx.auth.csrf_for(found) if found else None,
                             "version": __version__})
    return api


async def _wait(ctx: WebContext, client: str) -> None:
    await asyncio.sleep(ctx.auth.throttle.delay(client))


async def _small_form(request: Request, limit: int = LOGIN_BODY_LIMIT) -> dict[str, str] | None:
    """The url-encoded login form, read up to ``limit`` bytes (None when larger)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    return {key: values[0] for key, values in fields.items()}


def _logged_in(ctx: WebContext, request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, ctx.auth.new_session(), max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response
