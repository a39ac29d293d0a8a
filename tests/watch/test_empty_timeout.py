"""A 0-byte placeholder waits; one that never fills is handed over after empty_timeout."""
from __future__ import annotations

from pathlib import Path

from stemd.watch.spec import InboxSpec
from stemd.watch.tracker import StabilityTracker


def _placeholder(tmp_path: Path) -> tuple[StabilityTracker, Path]:
    """A 0-byte file seen at time 0 by a tracker with a 30 s empty timeout."""
    inbox = InboxSpec(path=tmp_path, settle_seconds=1.0, empty_timeout=30.0)
    tracker = StabilityTracker(inbox, settle=1.0)
    path = tmp_path / "song.mp3"
    path.write_bytes(b"")
    tracker.touch(path, now=0.0)
    return tracker, path


def test_empty_file_waits_then_is_handed_over(tmp_path: Path) -> None:
    tracker, path = _placeholder(tmp_path)
    for now in (2.0, 10.0, 25.0):
        assert tracker.step(now).ready == ()
    ready = tracker.step(40.0).ready
    assert [c.path for c in ready] == [path] and ready[0].size == 0


def test_placeholder_filled_in_time_is_taken_with_its_content(tmp_path: Path) -> None:
    tracker, path = _placeholder(tmp_path)
    assert tracker.step(5.0).ready == ()
    path.write_bytes(b"\x01" * 5000)
    tracker.touch(path, now=6.0)
    assert tracker.step(6.5).ready == ()
    ready = tracker.step(8.0).ready
    assert [c.size for c in ready] == [5000]
