"""File events for one inbox, from watchdog: the only module that imports watchdog.

An :class:`EventSource` runs one watchdog observer (inotify, or polling with
``lstat`` so that symbolic links to folders are never followed) and turns its
events into hints. It never raises into watchdog's threads.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from stemd.watch.hints import HintKind, HintQueue

log = logging.getLogger(__name__)

EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent, FileMovedEvent,
    FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]
STOP_TIMEOUT = 5.0

# watchdog warns when a folder created with its parents (mkdir -p) is watched twice; it is harmless.
warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning,
                        module=r"watchdog\.")


def native_mode() -> str:
    """The name of the event mechanism of this platform, as shown in status."""
    return "inotify" if sys.platform.startswith("linux") else "native"


def translate(event: FileSystemEvent, rebase: Callable[[str], Path] = Path) -> list[tuple[Path, HintKind]]:
    """The hints one watchdog event gives (a move is a departure plus an arrival).

    ``rebase`` turns an event's path into the path under the inbox as the user named it.
    """
    src = rebase(os.fsdecode(event.src_path)) if event.src_path else None
    dest = rebase(os.fsdecode(event.dest_path)) if event.dest_path else None
    if event.is_directory:
        gone: HintKind = "gone_tree"
        came: HintKind = "scan"
    else:
        gone, came = "gone", "touch"
    if event.event_type == "moved":
        return [(p, k) for p, k in ((src, gone), (dest, came)) if p is not None]
    if src is None:
        return []
    if event.event_type == "deleted":
        return [(src, gone)]
    if event.is_directory:
        return [(src, came)] if event.event_type == "created" else []
    return [(src, came)]


class _Handler(FileSystemEventHandler):
    def __init__(self, hints: HintQueue, rebase: Callable[[str], Path]) -> None:
        self._hints = hints
        self._rebase = rebase

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            for path, kind in translate(event, self._rebase):
                self._hints.put(path, kind)
        except Exception:                        # never let a hint kill watchdog's thread
            log.exception("Could not record the file event %r", event)


class EventSource:
    """One running watchdog observer for one folder, recursive.

    The folder is watched at its resolved path (inotify does not watch through a symbolic
    link); event paths are given back under ``path`` as named.
    """

    def __init__(self, path: Path, polling: bool, interval: float, hints: HintQueue) -> None:
        self.path = path
        self._real = os.path.realpath(path)
        self.polling = polling
        self.mode = "polling" if polling else native_mode()
        self._interval = interval
        self._hints = hints
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Start watching; raises OSError when the folder cannot be watched (inotify limits...)."""
        observer = self._make_observer()
        try:
            handler = _Handler(self._hints, self._rebase)
            observer.schedule(handler, self._real, recursive=True, event_filter=EVENTS)
            observer.name = f"stemd-watch {self.path}"
            for emitter in observer.emitters:
                emitter.name = f"stemd-watch-emitter {self.path}"
            observer.start()
        except BaseException:
            _stop_quietly(observer)
            raise
        self._observer = observer

    def alive(self) -> bool:
        """True while the observer thread and every emitter of it run."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = list(observer.emitters)
        return bool(emitters) and all(e.is_alive() for e in emitters)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            _stop_quietly(observer)

    def _rebase(self, event_path: str) -> Path:
        if event_path == self._real:
            return self.path
        if event_path.startswith(self._real.rstrip(os.sep) + os.sep):
            return self.path / event_path[len(self._real.rstrip(os.sep)) + 1:]
        return Path(event_path)

    def _make_observer(self) -> BaseObserver:
        if self.polling:
            return PollingObserverVFS(os.lstat, os.scandir, polling_interval=self._interval)
        return Observer()


def _stop_quietly(observer: BaseObserver) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(STOP_TIMEOUT)
    except Exception as exc:                     # stopping a broken observer must not fail
        log.debug("Stopping the observer of a watched folder failed: %s", exc)
