"""The stability tracker: decides when a file is finished.

A file is finished when nothing has touched it for ``settle`` seconds and then
its size, mtime and inode are what they were at the last touch, and it is still
a regular file. Any change restarts the wait. Two guards more:

* a 0-byte file is not finished (browsers create placeholders); it waits, and
  only after ``empty_timeout`` unchanged is it handed over (intake then refuses
  it as empty, so a user sees why nothing happened);
* a file whose last 64 KiB are all zero bytes (pre-sized, maybe not filled
  yet) is held until it has been unchanged for ``settle + zero_tail_seconds``,
  and so is a file with a downloader's control file next to it.

Time is passed in (``now``, monotonic seconds), huey-style, so tests can drive it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from stemd.watch.entries import Signature, has_busy_sidecar, inspect, tail_is_zero
from stemd.watch.spec import Candidate, InboxSpec


@dataclass(frozen=True)
class _Pending:
    touched: float          # last event or change seen
    sig: Signature          # signature at that moment
    since: float            # when this signature was first seen


@dataclass(frozen=True)
class Settled:
    """What one step of the tracker found: finished files, and entries that turned odd."""

    ready: tuple[Candidate, ...] = ()
    odd: tuple[tuple[Path, str], ...] = ()


class StabilityTracker:
    """Pending and finished files of one inbox."""

    def __init__(self, inbox: InboxSpec, settle: float) -> None:
        self.inbox = inbox
        self.settle = settle
        self._pending: dict[Path, _Pending] = {}
        self._done: dict[Path, Signature] = {}

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def done_count(self) -> int:
        return len(self._done)

    def touch(self, path: Path, now: float) -> str | None:
        """An event hints that ``path`` changed: look at it and restart its wait.

        Returns a reason when the entry is not a regular file (it is then not tracked).
        """
        look = inspect(path, self.inbox)
        if look is None or isinstance(look, str):
            self.gone(path)
            return look
        if self._done.get(path) == look:
            return None
        self._done.pop(path, None)
        old = self._pending.get(path)
        since = old.since if old is not None and old.sig == look else now
        self._pending[path] = _Pending(touched=now, sig=look, since=since)
        return None

    def seen(self, path: Path, sig: Signature, now: float) -> None:
        """A scan found ``path`` with ``sig``: track it when new or changed.

        Unlike an event, a scan that finds nothing new does not restart the wait.
        """
        if self._done.get(path) == sig:
            return
        self._done.pop(path, None)
        old = self._pending.get(path)
        if old is None or old.sig != sig:
            self._pending[path] = _Pending(touched=now, sig=sig, since=now)

    def gone(self, path: Path) -> None:
        self._pending.pop(path, None)
        self._done.pop(path, None)

    def gone_tree(self, folder: Path) -> None:
        """Forget everything at or below ``folder``."""
        for table in (self._pending, self._done):
            for path in [p for p in table if p == folder or folder in p.parents]:
                del table[path]

    def reconcile(self, found: set[Path]) -> None:
        """After a full scan: forget tracked paths the scan did not find and that are gone."""
        for table in (self._pending, self._done):
            for path in [p for p in table if p not in found and not os.path.lexists(p)]:
                del table[path]

    def clear(self) -> None:
        self._pending.clear()
        self._done.clear()

    def step(self, now: float) -> Settled:
        """Check every file whose wait is over; return those that are finished."""
        ready: list[Candidate] = []
        odd: list[tuple[Path, str]] = []
        for path, entry in list(self._pending.items()):
            if now - entry.touched < self.settle:
                continue
            outcome = self._settle(path, entry, now)
            if isinstance(outcome, Candidate):
                ready.append(outcome)
            elif isinstance(outcome, str):
                odd.append((path, outcome))
        return Settled(tuple(ready), tuple(odd))

    def _settle(self, path: Path, entry: _Pending, now: float) -> Candidate | str | None:
        look = inspect(path, self.inbox)
        if look is None or isinstance(look, str):
            self.gone(path)
            return look
        if look != entry.sig:
            self._pending[path] = _Pending(touched=now, sig=look, since=now)
        elif (look.size == 0 and now - entry.since < self.inbox.empty_timeout) or has_busy_sidecar(path):
            self._pending[path] = replace(entry, touched=now)
        elif self._zero_tail(path, entry, now):     # look again when the extra wait is over
            self._pending[path] = replace(entry, touched=min(now, entry.since + self.inbox.zero_tail_seconds))
        else:
            del self._pending[path]
            self._done[path] = look
            return Candidate(path, self.inbox, self.inbox.profile_for(path), look.size, look.mtime)
        return None

    def _zero_tail(self, path: Path, entry: _Pending, now: float) -> bool:
        if entry.sig.size == 0 or now - entry.since >= self.settle + self.inbox.zero_tail_seconds:
            return False
        return tail_is_zero(path, entry.sig.size, self.inbox.follow_symlinks)
