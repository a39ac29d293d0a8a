"""``GET /api/events``: Server-Sent Events, one per change of a job.

Job events come from the ``events`` table in order, each with its id, so a client
that reconnects with ``Last-Event-ID`` gets what it missed. ``progress`` events
(no id: they are not replayed) are sent at most once a second per running job,
``paused`` when the dispatcher pauses or resumes.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from stemd.daemon.status import read_status_file
from stemd.jobs.events import events_after, last_event_id
from stemd.jobs.store import State
from stemd.web.context import WebContext

POLL = 0.25
PROGRESS_EVERY = 1.0
KEEPALIVE = 15.0


def message(kind: str, data: Any, event_id: Optional[int] = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


class EventFeed:
    """What one client is sent next; ``step`` is called a few times a second."""

    def __init__(self, ctx: WebContext, after: int) -> None:
        self.ctx, self.after = ctx, after
        self.progress: dict[int, float] = {}
        self.last_progress = 0.0
        self.paused: Optional[str] = None

    def step(self, now: float) -> list[str]:
        out = []
        for event in events_after(self.ctx.store, self.after):
            self.after = event.id
            job = self.ctx.store.get(event.job_id)
            if job is not None:
                out.append(message(event.kind, job.to_json(), event.id))
        if now - self.last_progress >= PROGRESS_EVERY:
            self.last_progress = now
            out += self._progress() + self._pause()
        return out

    def _progress(self) -> list[str]:
        out = []
        running = self.ctx.store.jobs(State.RUNNING, limit=100)
        for job in running:
            if self.progress.get(job.id) != job.progress:
                self.progress[job.id] = job.progress
                out.append(message("progress", job.to_json()))
        self.progress = {k: v for k, v in self.progress.items() if k in {j.id for j in running}}
        return out

    def _pause(self) -> list[str]:
        status = read_status_file(self.ctx.config) or {}
        paused = (status.get("dispatcher") or {}).get("paused")
        if paused == self.paused:
            return []
        self.paused = paused
        return [message("paused", {"paused": paused})]


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["events"])

    @api.get("/events")
    async def events(request: Request, since: Optional[int] = None) -> StreamingResponse:
        """Server-Sent Events: queued, started, progress, done, failed, canceled, paused;
        each with the job's JSON. Resume with the Last-Event-ID header (or ``since``)."""
        header = request.headers.get("last-event-id", "")
        after = int(header) if header.isdigit() else since
        if after is None:
            after = last_event_id(ctx.store)
        return StreamingResponse(_stream(request, EventFeed(ctx, after)),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})
    return api


async def _stream(request: Request, feed: EventFeed) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    yield "retry: 2000\n\n"
    quiet_since = loop.time()
    while not await request.is_disconnected():
        now = loop.time()
        for item in feed.step(now):
            quiet_since = now
            yield item
        if now - quiet_since > KEEPALIVE:
            quiet_since = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL)
