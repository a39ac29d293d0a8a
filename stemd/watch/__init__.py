"""Finding finished files in inboxes: watch, rescan, settle, hand over.

Usage::

    w = Watcher([InboxSpec(path=Path("~/Inbox").expanduser())])
    w.start()
    while running:
        for candidate in w.loop():
            ...                      # probe, hash and record it elsewhere
    w.stop()
"""
from stemd.watch.entries import check_entry
from stemd.watch.fstype import is_network_fstype
from stemd.watch.names import DEFAULT_IGNORE, is_ignored
from stemd.watch.spec import (DEFAULT_EXTENSIONS, DEFAULT_NETWORK_SETTLE_SECONDS, DEFAULT_SETTLE_SECONDS, DEFAULT_ZERO_TAIL_SECONDS, Candidate, InboxSpec)
from stemd.watch.watcher import Watcher

__all__ = [
    "DEFAULT_EXTENSIONS", "DEFAULT_IGNORE", "DEFAULT_NETWORK_SETTLE_SECONDS", "DEFAULT_SETTLE_SECONDS",
    "DEFAULT_ZERO_TAIL_SECONDS", "Candidate", "InboxSpec", "Watcher", "check_entry", "is_ignored",
    "is_network_fstype",
]
