"""The JSON API: the daemon's status, jobs, and the cancel and retry requests."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from stemd.jobs.store import Job, State
from stemd.web.context import WebContext
from stemd.web.queries import history, list_jobs

ALLOWED = {"cancel": (State.QUEUED, State.RUNNING), "retry": (State.FAILED, State.CANCELED)}


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["jobs"])

    @api.get("/status")
    def status() -> dict[str, Any]:
        """What ``stemd status --json`` prints, plus the web server's address."""
        from stemd.daemon.status import collect_status
        return collect_status(ctx.config)

    @api.get("/jobs")
    def jobs(state: Optional[State] = None, limit: int = Query(50, ge=1, le=1000),
             offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        """What ``stemd jobs --json`` prints: newest first."""
        return [job.to_json() for job in list_jobs(ctx.store, state, limit, offset)]

    @api.get("/jobs/{job_id}")
    def job(job_id: int) -> dict[str, Any]:
        return get_job(ctx, job_id).to_json()

    @api.post("/jobs/{job_id}/cancel", status_code=202)
    def cancel(job_id: int) -> dict[str, Any]:
        """Cancel a queued job, or stop a running one (carried out by the daemon)."""
        return _request(ctx, "cancel", job_id)

    @api.post("/jobs/{job_id}/retry", status_code=202)
    def retry(job_id: int) -> dict[str, Any]:
        """Queue a failed or canceled job again (carried out by the daemon)."""
        return _request(ctx, "retry", job_id)

    @api.get("/profiles")
    def profiles() -> dict[str, Any]:
        """The profiles an upload may use, and the one used when none is named."""
        config = ctx.config
        return {"default": config.inbox[0].profile,
                "profiles": {name: {"model": p.model, "format": p.format, "two_stems": p.two_stems}
                             for name, p in sorted(config.profiles.items())}}

    @api.get("/history")
    def chart(hours: int = Query(24, ge=1, le=168)) -> JSONResponse:
        """Per hour: jobs done and failed, mean real-time factor (time / audio length)."""
        return JSONResponse(history(ctx.store, hours))
    return api


def get_job(ctx: WebContext, job_id: int) -> Job:
    job = ctx.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}.")
    return job


def _request(ctx: WebContext, kind: str, job_id: int) -> dict[str, Any]:
    job = get_job(ctx, job_id)
    if job.state not in ALLOWED[kind]:
        states = " or ".join(s.value for s in ALLOWED[kind])
        raise HTTPException(409, f"Job {job_id} is {job.state.value}; only {states} jobs can be "
                                 f"{'canceled' if kind == 'cancel' else 'retried'}.")
    ctx.store.add_request(kind, job_id)
    return {"requested": kind, "job": job.to_json()}
