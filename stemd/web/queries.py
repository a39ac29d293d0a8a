"""Read-only queries of the job database for the web server's lists and chart."""
from __future__ import annotations

import time
from typing import Any, Optional

from stemd.jobs.store import Job, State, Store


def list_jobs(store: Store, state: Optional[State], limit: int, offset: int) -> list[Job]:
    where, params = ("WHERE state = ?", [state.value]) if state else ("", [])
    rows = store.db.conn.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                 (*params, limit, offset))
    return [Job.from_row(dict(row)) for row in rows]


def upload_job(store: Store, name: str, after_id: int) -> Optional[Job]:
    """The job intake recorded for an uploaded file (its name is unique while it waits)."""
    row = store.db.conn.execute("SELECT * FROM jobs WHERE input_name = ? AND source = 'upload' "
                                "AND id > ? ORDER BY id LIMIT 1", (name, after_id)).fetchone()
    return Job.from_row(dict(row)) if row else None


def last_job_id(store: Store) -> int:
    return int(store.db.conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0] or 0)


def history(store: Store, hours: int = 24, now: Optional[float] = None) -> list[dict[str, Any]]:
    """Per hour of the last ``hours``: jobs done, failed, and the mean real-time factor
    (separation time / audio length; below 1 is faster than real time)."""
    now = now or time.time()
    start = (int(now) // 3600 - hours + 1) * 3600
    rows = store.db.conn.execute(
        "SELECT CAST((finished_at - ?) / 3600 AS INTEGER) AS bucket, state, COUNT(*), "
        "AVG(CASE WHEN state = 'done' AND cached = 0 AND duration > 0 AND started_at IS NOT NULL "
        "THEN (finished_at - started_at) / duration END) FROM jobs WHERE finished_at >= ? "
        "AND state IN ('done', 'failed') GROUP BY bucket, state", (start, start))
    buckets = [{"hour": start + 3600 * i, "done": 0, "failed": 0, "rtf": None} for i in range(hours)]
    for bucket, state, count, rtf in rows:
        if 0 <= bucket < hours:
            buckets[bucket][state] = count
            if state == "done" and rtf is not None:
                buckets[bucket]["rtf"] = round(rtf, 4)
    return buckets
