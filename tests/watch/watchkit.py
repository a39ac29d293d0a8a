"""Helpers for the watcher tests: a real Watcher driven in real time, in small steps."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from stemd.watch import Candidate, Watcher

FAST = dict(settle_seconds=0.3, zero_tail_seconds=0.3, rescan_interval=3600.0)


class Run:
    """A started Watcher and everything it handed over so far."""

    def __init__(self, watcher: Watcher, inbox: Path) -> None:
        self.watcher = watcher
        self.inbox = inbox
        self.taken: list[Candidate] = []

    def step(self) -> list[Candidate]:
        ready = self.watcher.loop()
        self.taken.extend(ready)
        return ready

    def run(self, seconds: float) -> list[Candidate]:
        """Loop for ``seconds`` of real time; return what finished meanwhile."""
        start, before = time.monotonic(), len(self.taken)
        while time.monotonic() - start < seconds:
            self.step()
            time.sleep(0.02)
        return self.taken[before:]

    def during(self, work: Callable[[], object]) -> list[Candidate]:
        """Run ``work`` in another thread (the delivering program) and loop until it is done.

        Returns what finished while it ran.
        """
        errors: list[BaseException] = []

        def _work() -> None:
            try:
                work()
            except BaseException as exc:  # surfaced in the test below
                errors.append(exc)

        thread = threading.Thread(target=_work)
        before = len(self.taken)
        thread.start()
        while thread.is_alive():
            self.step()
            time.sleep(0.02)
        thread.join()
        assert not errors, errors
        return self.taken[before:]

    def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Loop until ``check()`` holds; fail after ``timeout`` seconds."""
        start = time.monotonic()
        while not check():
            assert time.monotonic() - start < timeout, "timed out waiting"
            self.step()
            time.sleep(0.02)

    def until_taken(self, count: int, timeout: float = 10.0) -> list[Candidate]:
        self.until(lambda: len(self.taken) >= count, timeout)
        return self.taken

    def names(self) -> list[str]:
        return sorted(c.path.relative_to(self.inbox).as_posix() for c in self.taken)

    def status(self) -> dict[str, object]:
        return self.watcher.status()[0]


def write_slowly(path: Path, chunks: int, pause: float, size: int = 4096) -> None:
    """Append ``chunks`` pieces of non-zero bytes to ``path``, ``pause`` seconds apart."""
    with open(path, "ab") as f:
        for _ in range(chunks):
            f.write(b"\x01" * size)
            f.flush()
            time.sleep(pause)


def audio_bytes(size: int = 8192) -> bytes:
    return bytes(range(1, 256)) * (size // 255) + b"\x01" * (size % 255)
