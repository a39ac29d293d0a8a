"""The notifier: a thread of the supervisor that turns job events into deliveries and
sends those that are due, retrying with backoff. It never touches the dispatcher.

Its place in the event log is kept in the database, so events that happen while
it is behind, or while the daemon is down, are still notified after a restart.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from stemd.config import NotifyConfig
from stemd.jobs.events import events_after, get_value, last_event_id, set_value
from stemd.jobs.store import Job, Store
from stemd.notify import deliveries
from stemd.notify.senders import SendError, send, where

log = logging.getLogger(__name__)

CURSOR = "notify_cursor"
IDLE_CURSOR_EVERY = 30.0     # with no [[notify]] entry the place in the log is only kept up
MAX_BACKOFF = 600.0
KEEP_DONE = 7 * 86400.0


def payload_for(kind: str, job: Optional[Job], event_id: Optional[int]) -> dict[str, Any]:
    name = os.path.basename(job.input) if job else ""
    if job is None:
        text = "stemd can send you notifications."
    elif kind == "done":
        text = f"{name}: stems ready in {job.output_dir}"
    elif kind == "failed":
        text = f"{name} failed: {job.error}"
    else:
        text = f"{name}: {kind}"
    title = f"stemd: job {job.id} {kind}" if job else "stemd: test notification"
    return {"event": kind, "event_id": event_id, "job": job.to_json() if job else None,
            "title": title, "text": text, "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def backoff(first: float, attempts: int) -> float:
    return min(first * 2 ** max(0, attempts - 1), MAX_BACKOFF)


class Notifications:
    def __init__(self, db_path: Path, targets: list[NotifyConfig]) -> None:
        self.store = Store(db_path)
        self.targets = list(targets)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._cursor_kept = 0.0

    def reconfigure(self, targets: list[NotifyConfig]) -> None:
        self.targets = list(targets)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stemd-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        last_prune = 0.0
        while not self._stop.is_set():
            try:
                self.loop(time.time())
                if time.monotonic() - last_prune > 3600:
                    deliveries.prune(self.store, time.time() - KEEP_DONE)
                    last_prune = time.monotonic()
            except Exception:
                log.exception("notifier step failed; continuing")
            self._stop.wait(0.5)

    # -- one step -----------------------------------------------------------------------
    def loop(self, now: float) -> None:
        if not self.targets:
            self._keep_cursor(now)
            return
        self.enqueue_new_events(now)
        for delivery in deliveries.due(self.store, now):
            if self._stop.is_set():
                return
            self.attempt(delivery, time.time())

    def _keep_cursor(self, now: float) -> None:
        """No receivers: move the place in the event log along now and then, so that
        receivers added later (after a restart) are not sent old events."""
        if now - self._cursor_kept >= IDLE_CURSOR_EVERY:
            set_value(self.store, CURSOR, str(last_event_id(self.store)))
            self._cursor_kept = now

    def enqueue_new_events(self, now: float) -> None:
        cursor = get_value(self.store, CURSOR)
        after = int(cursor) if cursor is not None else last_event_id(self.store)
        events = events_after(self.store, after)
        if not events and cursor is not None:
            return
        with self.store.transaction():
            for event in events:
                self._enqueue(event.id, event.kind, event.job_id, now)
            set_value(self.store, CURSOR, str(events[-1].id if events else after))

    def _enqueue(self, event_id: int, kind: str, job_id: int, now: float) -> None:
        wanted = [t for t in self.targets if kind in t.events]
        if not wanted:
            return
        payload = payload_for(kind, self.store.get(job_id), event_id)
        for target in wanted:
            deliveries.enqueue(self.store, event_id, target.url, target.headers, payload, now)

    def attempt(self, delivery: deliveries.Delivery, now: float) -> None:
        target = next((t for t in self.targets if t.url == delivery.url), None)
        if target is None:
            deliveries.record(self.store, delivery.id, "dropped", delivery.attempts, now,
                              "no longer in the config", now)
            return
        attempts = delivery.attempts + 1
        what = f"notification {delivery.id} ({delivery.payload.get('event')}) to {where(delivery.url)}"
        try:
            send(delivery.url, target.headers, delivery.payload)
        except SendError as exc:
            self._failed(delivery, target, attempts, str(exc), what, now)
            return
        deliveries.record(self.store, delivery.id, "sent", attempts, now, None, now)
        log.info("%s: delivered (attempt %d)", what, attempts)

    def _failed(self, delivery: deliveries.Delivery, target: NotifyConfig, attempts: int,
                error: str, what: str, now: float) -> None:
        if now - delivery.created_at >= target.retry_for:
            deliveries.record(self.store, delivery.id, "abandoned", attempts, now, error, now)
            log.error("%s: attempt %d failed, giving up after %.0f h: %s", what, attempts,
                      target.retry_for / 3600, error)
            return
        wait = backoff(target.retry_backoff, attempts)
        deliveries.record(self.store, delivery.id, "pending", attempts, now + wait, error, now)
        log.warning("%s: attempt %d failed, next in %.0f s: %s", what, attempts, wait, error)


def send_test(targets: list[NotifyConfig]) -> list[tuple[str, Optional[str]]]:
    """``stemd notify test``: one test notification to each target, now; (where, error)."""
    results = []
    for target in targets:
        try:
            send(target.url, target.headers, payload_for("test", None, None))
            results.append((where(target.url), None))
        except SendError as exc:
            results.append((where(target.url), str(exc)))
    return results
