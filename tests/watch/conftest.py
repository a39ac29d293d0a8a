"""Fixtures for the watcher tests: real folders and a real Watcher, stopped after each test."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from stemd.watch import InboxSpec, Watcher

from .watchkit import FAST, Run


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def start(inbox: Path) -> Iterator[Callable[..., Run]]:
    """``start(**InboxSpec fields)`` starts a Watcher on ``inbox`` (fast settings unless given)."""
    watchers: list[Watcher] = []

    def _start(**fields: object) -> Run:
        spec = InboxSpec(path=inbox, **{**FAST, **fields})  # type: ignore[arg-type]
        watcher = Watcher([spec])
        watchers.append(watcher)
        run = Run(watcher, inbox)
        watcher.start()
        return run

    yield _start
    for watcher in watchers:
        watcher.stop()
