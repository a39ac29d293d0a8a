"""One inbox under watch: its event source, its supervision, its scans and its tracker.

Supervision (at most once a second): when the inbox folder is missing it is
marked so and checked again later; when it is back, or its observer or an
emitter has stopped, or the folder was replaced (removed and recreated,
unmounted, remounted), the watch is started again. When inotify cannot watch
it (limits) or its watch keeps dying, the inbox is polled instead. Every case
is logged with its reason.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

from stemd.watch.entries import Signature, inspect
from stemd.watch.fstype import Filesystem, filesystem_of
from stemd.watch.hints import HintKind, HintQueue
from stemd.watch.names import shown
from stemd.watch.observer import EventSource
from stemd.watch.scope import Scope
from stemd.watch.spec import Candidate, InboxSpec
from stemd.watch.tracker import StabilityTracker

log = logging.getLogger(__name__)

SUPERVISE_EVERY = 1.0           # seconds between two supervision checks
DEATH_WINDOW = 300.0            # observer deaths counted over this many seconds ...
DEATHS_BEFORE_POLLING = 3       # ... before events are given up for polling
RETRY_MAX = 60.0                # longest wait between two failed attempts to watch
NFS_ATTRIBUTE_CACHE = 60.0      # acregmax: how stale attributes on NFS can be


class InboxWatch:
    """Watches one inbox; driven by :meth:`step` from the watcher's thread."""

    def __init__(self, inbox: InboxSpec, nested: tuple[Path, ...] = ()) -> None:
        self.inbox = inbox
        self.scope = Scope.of(inbox, nested)
        self.hints = HintQueue()
        self.tracker = StabilityTracker(inbox, inbox.settle_for(network=False))
        self.state = "stopped"                  # stopped | watched | missing | failed
        self.problem: str | None = None
        self.fs: Filesystem | None = None
        self._source: EventSource | None = None
        self._root: tuple[int, int] | None = None
        self._fallback: str | None = None       # why events were given up for polling
        self._deaths: list[float] = []
        self._next_check = 0.0
        self._next_attempt = 0.0
        self._retry_delay = 1.0
        self._next_scan = float("inf")
        self._last_scan: tuple[float, float, int] | None = None   # wall time, seconds, files
        self._odd: dict[Path, str] = {}
        self._ignored: set[Path] = set()        # files passed over, each logged once

    # -- driven by the watcher -------------------------------------------------

    def start(self, now: float) -> None:
        """Start watching and scan the whole inbox; finished files come from later steps."""
        self._next_check = 0.0
        self._refresh(now)

    def step(self, now: float) -> list[Candidate]:
        """One cheap step: supervise, apply event hints, rescan when due, return finished files."""
        self._refresh(now)
        settled = self.tracker.step(now)
        for path, reason in settled.odd:
            self._report_odd(path, reason)
        return list(settled.ready)

    def stop(self) -> None:
        self._detach()
        self.state = "stopped"

    def forget(self, path: Path) -> None:
        self.tracker.gone(path)

    def healthy(self) -> bool:
        """Watched by a live observer, or missing and checked for its return."""
        if self.state == "missing":
            return True
        return self._source is not None and self._source.alive()

    def status(self) -> dict[str, object]:
        scan = self._last_scan
        return {
            "path": str(self.inbox.path),
            "mode": self._source.mode if self._source is not None else "none",
            "watched": self.state == "watched" and self._source is not None and self._source.alive(),
            "state": self.state,
            "problem": self.problem,
            "filesystem": self.fs.fstype if self.fs else None,
            "network": self.fs.network if self.fs else None,
            "settle_seconds": self.tracker.settle,
            "pending": self.tracker.pending_count,
            "finished": self.tracker.done_count,
            "skipped": len(self._odd),
            "last_scan": scan[0] if scan else None,
            "last_scan_seconds": scan[1] if scan else None,
            "last_scan_files": scan[2] if scan else None,
        }

    def _refresh(self, now: float) -> None:
        self._supervise(now)
        self._apply_hints(now)
        if self._source is not None and now >= self._next_scan:
            self._full_scan(now)

    # -- supervision -------------------------------------------------------------

    def _supervise(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + SUPERVISE_EVERY
        root = _root_id(self.inbox.path)
        if root is None:
            self._went_missing()
            return
        if self._source is not None:
            if self._source.alive() and root == self._root:
                return
            self._lost(now, replaced=root != self._root)
        if now >= self._next_attempt:
            self._attach(now, root)

    def _went_missing(self) -> None:
        if self.state == "missing":
            return
        log.warning("Inbox %s is missing (removed or unmounted); it will be watched again when it is back.",
                    shown(self.inbox.path))
        self._detach()
        self.tracker.clear()
        self._odd.clear()
        self.state, self.problem = "missing", "the folder is missing"

    def _lost(self, now: float, replaced: bool) -> None:
        why = "the folder was replaced or remounted" if replaced else "its file-event observer stopped"
        log.warning("Inbox %s: %s; watching it again.", shown(self.inbox.path), why)
        polling = self._source is not None and self._source.polling
        self._detach()
        if replaced:
            self.tracker.clear()
            self._odd.clear()
            return
        self._deaths = [t for t in self._deaths if now - t < DEATH_WINDOW] + [now]
        if len(self._deaths) >= DEATHS_BEFORE_POLLING and not polling:
            self._use_polling(f"its file-event watch stopped {len(self._deaths)} times in "
                              f"{DEATH_WINDOW / 60:.0f} minutes")

    def _attach(self, now: float, root: tuple[int, int]) -> None:
        self.fs = filesystem_of(self.inbox.path)
        self.tracker.settle = self.inbox.settle_for(self.fs.network)
        source = self._start_source(self._fallback is not None or self.inbox.wants_polling(self.fs.network))
        if source is None:
            self._next_attempt = now + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
            return
        if self.state == "missing":
            log.info("Inbox %s is back.", shown(self.inbox.path))
        self._source, self._root, self._retry_delay = source, root, 1.0
        self.state, self.problem = "watched", self._fallback
        self._next_scan = now
        self._log_attached()

    def _start_source(self, polling: bool) -> EventSource | None:
        source = EventSource(self.inbox.path, polling, self.inbox.poll_interval, self.hints)
        try:
            source.start()
            return source
        except (FileNotFoundError, NotADirectoryError):
            return None                          # gone meanwhile: the next check sees it missing
        except OSError as exc:
            if polling:
                self._failed(exc)
                return None
            self._use_polling(_describe(exc))
            return self._start_source(True)

    def _use_polling(self, why: str) -> None:
        self._fallback = why
        log.warning("Inbox %s: %s; polling it every %g s instead.",
                    shown(self.inbox.path), why, self.inbox.poll_interval)

    def _failed(self, exc: OSError) -> None:
        self.state, self.problem = "failed", f"cannot watch it: {exc.strerror or exc}"
        log.error("Inbox %s cannot be watched (%s); retrying in %.0f s.",
                  shown(self.inbox.path), exc.strerror or exc, self._retry_delay)

    def _detach(self) -> None:
        if self._source is not None:
            self._source.stop()
        self._source, self._root, self._next_scan = None, None, float("inf")

    def _log_attached(self) -> None:
        fs = self.fs or Filesystem("unknown", "", False)
        log.info("Watching inbox %s (%s, %s filesystem%s, settle %g s, rescan every %g s).",
                 shown(self.inbox.path), self._source.mode if self._source else "none", fs.fstype,
                 ", network" if fs.network else "", self.tracker.settle, self.inbox.rescan_interval)
        if fs.network and self.tracker.settle < NFS_ATTRIBUTE_CACHE:
            log.warning("Inbox %s is on a network filesystem but settle_seconds is %g s: attributes may be "
                        "cached for up to 60 s, so a file still being copied can look finished. "
                        "Leave settle_seconds unset or set it above 60.", shown(self.inbox.path),
                        self.tracker.settle)
        if fs.network and self._source is not None and not self._source.polling:
            log.warning("Inbox %s is on a network filesystem but poll = \"never\": files written by other "
                        "machines are only found by the rescan every %g s.",
                        shown(self.inbox.path), self.inbox.rescan_interval)

    # -- hints and scans -----------------------------------------------------------

    def _apply_hints(self, now: float) -> None:
        for path, kind in self.hints.drain():
            self._apply_hint(path, kind, now)

    def _apply_hint(self, path: Path, kind: HintKind, now: float) -> None:
        if kind == "touch":
            if self.scope.wants_file(path):
                self._track(path, self.tracker.touch(path, now))
            elif path.exists():
                self._note_ignored([path])
        elif kind == "gone":
            self.tracker.gone(path)
            self._odd.pop(path, None)
            self._ignored.discard(path)
        elif kind == "gone_tree":
            self.tracker.gone_tree(path)
            for odd in [p for p in self._odd if p == path or path in p.parents]:
                del self._odd[odd]
        elif self._source is not None and self.scope.wants_folder(path):
            self._scan_folder(path, now)

    def _scan_folder(self, folder: Path, now: float) -> None:
        skipped: list[Path] = []
        try:
            for path in self.scope.walk(folder, skipped):
                self._found(path, now)
        except OSError:
            pass                                 # the folder left again; its events say so
        self._note_ignored(skipped)

    def _full_scan(self, now: float) -> None:
        started, found, skipped = time.monotonic(), set(), []
        try:
            for path in self.scope.walk(self.inbox.path, skipped):
                self._found(path, now)
                found.add(path)
        except OSError as exc:
            log.warning("Cannot scan inbox %s: %s", shown(self.inbox.path), exc.strerror or exc)
            self._next_scan = now + min(self.inbox.rescan_interval, RETRY_MAX)
            return
        self.tracker.reconcile(found)
        for path in [p for p in self._odd if p not in found]:
            del self._odd[path]
        self._ignored &= set(skipped)            # forget what is gone; log what is new
        self._note_ignored(skipped)
        self._next_scan = now + self.inbox.rescan_interval
        self._last_scan = (time.time(), time.monotonic() - started, len(found))

    def _found(self, path: Path, now: float) -> None:
        look = inspect(path, self.inbox)
        if isinstance(look, Signature):
            self.tracker.seen(path, look, now)
        else:
            self._track(path, look)

    def _track(self, path: Path, reason: str | None) -> None:
        if reason is None:
            self._odd.pop(path, None)
        else:
            self._report_odd(path, reason)

    def _note_ignored(self, paths: list[Path]) -> None:
        """Log once, at info level, each file the inbox passes over, with the reason."""
        for path in paths:
            if path in self._ignored:
                continue
            reason = self.scope.skip_reason(path)
            if reason is not None:
                self._ignored.add(path)
                log.info("Ignoring %s: %s.", shown(path), reason)

    def _report_odd(self, path: Path, reason: str) -> None:
        if self._odd.get(path) != reason:
            log.warning("Skipping %s: %s.", shown(path), reason)
        self._odd[path] = reason


def _root_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the inbox folder, or None when it is missing or not a folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the inotify watch limit is reached (raise fs.inotify.max_user_watches)"
    if exc.errno == errno.EMFILE:
        return "the inotify instance or open-file limit is reached (raise fs.inotify.max_user_instances)"
    return f"inotify cannot watch it ({exc.strerror or exc})"
