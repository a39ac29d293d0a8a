"""Hints from file events, passed from the observer's thread to the watcher's loop.

Events are only hints: each one names a path to look at again. The queue keeps
the latest hint per path, so a burst of events on one file costs one look.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

HintKind = Literal["touch", "gone", "gone_tree", "scan"]
"""touch: a file changed; gone: a file left; gone_tree: a folder left; scan: a folder appeared."""


class HintQueue:
    """A thread-safe, coalescing queue of (path, kind), in the order of each path's latest hint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[Path, HintKind] = {}

    def put(self, path: Path, kind: HintKind) -> None:
        with self._lock:
            self._items.pop(path, None)
            self._items[path] = kind

    def drain(self) -> list[tuple[Path, HintKind]]:
        with self._lock:
            items, self._items = self._items, {}
        return list(items.items())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
