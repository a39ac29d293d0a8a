"""The FastAPI app: routes by concern behind the token guard; the dashboard's files."""
from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from stemd import __version__
from stemd.web import api, files, metrics, pages, sse, upload
from stemd.web.apidocs import add_docs
from stemd.web.context import WebContext
from stemd.web.security import Guard


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(title="stemd", version=__version__, docs_url=None,
                  openapi_url="/api/openapi.json", redoc_url=None,
                  description="The stemd daemon's API. Every request needs the token "
                  "(Authorization: Bearer TOKEN, printed by `stemd web token`) except /healthz.")
    for module in (pages, api, upload, files, sse, metrics):
        app.include_router(module.router(ctx))
    add_docs(app)
    static = resources.files("stemd.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(Guard, ctx=ctx)   # outermost: nothing is reached without the token
    return app
