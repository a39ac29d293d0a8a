"""The watcher: every inbox under watch, stepped by one ``loop(now)`` call.

The daemon's watcher thread calls :meth:`Watcher.loop` about twice a second;
other threads may call :meth:`healthy` and :meth:`status`.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Sequence

from stemd.errors import ConfigError
from stemd.watch.inbox import InboxWatch
from stemd.watch.names import shown
from stemd.watch.spec import Candidate, InboxSpec

log = logging.getLogger(__name__)

LOOP_STALE_AFTER = 120.0        # healthy() turns false when loop() has not run for this long


class Watcher:
    """Finds finished files in inboxes. Nothing happens until :meth:`start`."""

    def __init__(self, inboxes: Sequence[InboxSpec]) -> None:
        _check_distinct(inboxes)
        self._inboxes = [InboxWatch(spec, _nested(spec, inboxes)) for spec in inboxes]
        self._lock = threading.RLock()
        self._started = False
        self._last_loop = 0.0

    def start(self, now: float | None = None) -> None:
        """Start watching every inbox and scan each fully (files dropped while stemd was down).

        An inbox that is missing is only logged; it is watched once it appears.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self._started = True
            self._last_loop = time.monotonic()
            for inbox in self._inboxes:
                try:
                    inbox.start(now)
                except Exception:                # one inbox's surprise must not stop the others
                    log.exception("Starting to watch inbox %s failed", shown(inbox.inbox.path))

    def loop(self, now: float | None = None) -> list[Candidate]:
        """One step: supervise, apply events, rescan when due; return files that just finished."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._started:
                return []
            ready: list[Candidate] = []
            for inbox in self._inboxes:
                ready.extend(_step(inbox, now))
            self._last_loop = time.monotonic()
            return ready

    def healthy(self) -> bool:
        """Every inbox is watched by a live observer (or missing and looked for), and loop() runs."""
        with self._lock:
            if not self._started or time.monotonic() - self._last_loop > LOOP_STALE_AFTER:
                return False
            return all(inbox.healthy() for inbox in self._inboxes)

    def status(self) -> list[dict[str, object]]:
        with self._lock:
            return [inbox.status() for inbox in self._inboxes]

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for inbox in self._inboxes:
                inbox.stop()

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _step(inbox: InboxWatch, now: float) -> list[Candidate]:
    try:
        return inbox.step(now)
    except Exception:                            # one inbox's surprise must not stop the others
        log.exception("Watching inbox %s failed in this step", shown(inbox.inbox.path))
        return []


def _check_distinct(inboxes: Sequence[InboxSpec]) -> None:
    seen: set[Path] = set()
    for spec in inboxes:
        if spec.path in seen:
            raise ConfigError(f"The inbox {shown(spec.path)} is listed twice.",
                              "List each inbox folder once.")
        seen.add(spec.path)


def _nested(spec: InboxSpec, inboxes: Sequence[InboxSpec]) -> tuple[Path, ...]:
    """Other inboxes inside ``spec``'s folder: they are watched on their own, not as part of it."""
    return tuple(o.path for o in inboxes if o.path != spec.path and spec.path in o.path.parents)
