"""The maintenance scheduler: the only place APScheduler is used.

Each job runs every ``interval`` seconds on an APScheduler 3.x ``BackgroundScheduler``,
once right after start-up, one instance at a time (``max_instances=1``), and with missed
runs coalesced into one (``coalesce=True``): after a suspend or a long pass, a job runs
once, however late, rather than once for every run it missed. A job that raises is
logged and runs again at its next time.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from stemd.units import duration_text

log = logging.getLogger(__name__)

_WORKERS = 4     # threads: jobs run side by side, each one at a time


class MaintenanceScheduler:
    """Runs ``(name, interval_seconds, fn)`` jobs in the background."""

    def __init__(self, jobs: list[tuple[str, float, Callable[[], None]]]) -> None:
        names = [name for name, _, _ in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        for name, interval, _ in jobs:
            if interval <= 0:
                raise ValueError(f"job {name!r}: the interval must be positive, got {interval}")
        self._jobs = list(jobs)
        self._lock = threading.Lock()
        self._last: dict[str, datetime] = {}
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": {"type": "threadpool", "max_workers": _WORKERS}},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def start(self) -> None:
        """Start the background thread; every job runs once now, then at its interval."""
        now = datetime.now(timezone.utc)
        for name, interval, fn in self._jobs:
            self._scheduler.add_job(self._wrap(name, fn), IntervalTrigger(seconds=interval),
                                    id=name, name=name, next_run_time=now,
                                    replace_existing=True)
        self._scheduler.start()
        log.info("Maintenance scheduler started: %s.",
                 ", ".join(f"{name} every {duration_text(interval)}" for name, interval, _ in self._jobs)
                 or "no jobs")

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let running jobs finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            log.info("Maintenance scheduler stopped.")

    def running(self) -> bool:
        return bool(self._scheduler.running)

    def pause(self) -> None:
        """Hold every job (running ones finish); runs missed meanwhile are coalesced."""
        self._scheduler.pause()

    def resume(self) -> None:
        self._scheduler.resume()

    def run_now(self, name: str) -> None:
        """Run a job now (e.g. a cleanup when the disk runs low); if it is running, once more after."""
        with self._lock:
            if name in self._active:
                self._again.add(name)
                return
        self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))

    def next_runs(self) -> dict[str, datetime]:
        """Each job's next run time (UTC); a paused scheduler still lists them."""
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()
                if job.next_run_time is not None}

    def last_runs(self) -> dict[str, datetime]:
        """When each job last finished (UTC), for ``stemd status``."""
        with self._lock:
            return dict(self._last)

    def _wrap(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self._lock:
                self._active.add(name)
            while True:
                self._run_once(name, fn)
                with self._lock:
                    if name not in self._again:
                        self._active.discard(name)
                        return
                    self._again.discard(name)
        return run

    def _run_once(self, name: str, fn: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            fn()
        except Exception:
            log.exception("Maintenance job %s failed; it runs again at its next time.", name)
        else:
            log.debug("Maintenance job %s done in %.1fs.", name, time.monotonic() - started)
        with self._lock:
            self._last[name] = datetime.now(timezone.utc)
