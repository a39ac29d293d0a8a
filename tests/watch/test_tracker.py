"""The stability tracker stepped with chosen times (huey-style), over real files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from stemd.watch import InboxSpec
from stemd.watch.entries import Signature, inspect
from stemd.watch.tracker import StabilityTracker


def tracker(inbox: Path, settle: float = 1.0, zero_tail: float = 10.0) -> StabilityTracker:
    return StabilityTracker(InboxSpec(path=inbox, zero_tail_seconds=zero_tail), settle)


def sig(path: Path, inbox: Path) -> Signature:
    look = inspect(path, InboxSpec(path=inbox))
    assert isinstance(look, Signature)
    return look


def test_finished_after_settle_then_never_again(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01" * 100)
    t = tracker(tmp_path)
    assert t.touch(f, now=0.0) is None
    assert t.step(0.9).ready == ()
    [c] = t.step(1.0).ready
    assert (c.path, c.size, c.profile) == (f, 100, "default")
    assert t.step(50.0).ready == ()
    t.touch(f, now=60.0)                     # an event without a change: still finished
    t.seen(f, sig(f, tmp_path), now=60.0)    # a rescan: still finished
    assert t.step(100.0).ready == ()
    assert (t.pending_count, t.done_count) == (0, 1)


def test_any_change_restarts_the_wait(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01" * 100)
    t = tracker(tmp_path)
    t.touch(f, now=0.0)
    with open(f, "ab") as fh:                # grows without an event (events are only hints)
        fh.write(b"\x01")
    assert t.step(1.0).ready == ()
    assert t.step(1.9).ready == ()
    [c] = t.step(2.0).ready
    assert c.size == 101


def test_an_event_restarts_the_wait_even_without_a_change(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01" * 100)
    t = tracker(tmp_path)
    t.touch(f, now=0.0)
    t.touch(f, now=0.8)
    assert t.step(1.5).ready == ()
    assert len(t.step(1.8).ready) == 1


def test_a_rescan_does_not_postpone_a_pending_file(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01" * 100)
    t = tracker(tmp_path)
    t.seen(f, sig(f, tmp_path), now=0.0)
    t.seen(f, sig(f, tmp_path), now=0.9)
    assert len(t.step(1.0).ready) == 1


def test_a_zero_byte_file_is_never_finished(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.touch()
    t = tracker(tmp_path)
    t.touch(f, now=0.0)
    for now in (1.0, 10.0, 1000.0):
        assert t.step(now).ready == ()
    assert t.pending_count == 1


def test_a_zero_tail_holds_the_file_for_the_extra_time(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    with open(f, "wb") as fh:
        fh.write(b"\x01" * 10)
        fh.truncate(200_000)                 # pre-sized: the rest is zeros
    t = tracker(tmp_path, settle=1.0, zero_tail=10.0)
    t.touch(f, now=0.0)
    assert all(t.step(now).ready == () for now in (1.0, 2.0, 5.0, 10.9))
    assert len(t.step(11.0).ready) == 1


def test_a_non_zero_tail_is_not_held(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(bytes(100_000) + b"\x01")
    t = tracker(tmp_path, zero_tail=100.0)
    t.touch(f, now=0.0)
    assert len(t.step(1.0).ready) == 1


def test_a_downloader_control_file_holds_the_file(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01" * 100)
    (tmp_path / "a.wav.aria2").write_bytes(b"x")
    t = tracker(tmp_path)
    t.touch(f, now=0.0)
    assert t.step(100.0).ready == ()
    (tmp_path / "a.wav.aria2").unlink()
    assert len(t.step(101.0).ready) == 1


def test_a_file_replaced_by_a_fifo_or_a_folder_is_dropped_with_a_reason(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    for name, make in (("p.wav", os.mkfifo), ("d.wav", os.mkdir)):
        f = tmp_path / name
        f.write_bytes(b"\x01")
        t.touch(f, now=0.0)
        f.unlink()
        make(f)
    settled = t.step(1.0)
    assert settled.ready == ()
    assert sorted(p.name for p, _ in settled.odd) == ["d.wav", "p.wav"]
    assert t.pending_count == 0


def test_gone_files_and_trees_are_forgotten(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    a, b = tmp_path / "a.wav", tmp_path / "sub" / "b.wav"
    for f in (a, b):
        f.write_bytes(b"\x01")
    t = tracker(tmp_path)
    t.touch(a, 0.0)
    t.touch(b, 0.0)
    t.gone_tree(tmp_path / "sub")
    assert [c.path for c in t.step(1.0).ready] == [a]
    t.gone(a)
    assert t.done_count == 0


def test_reconcile_forgets_only_paths_that_are_really_gone(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for f in (a, b):
        f.write_bytes(b"\x01")
    t = tracker(tmp_path)
    t.touch(a, 0.0)
    t.touch(b, 0.0)
    b.unlink()
    t.reconcile(found=set())                 # a scan that missed a (a race) and b (gone)
    assert t.pending_count == 1
    assert [c.path for c in t.step(1.0).ready] == [a]


@pytest.mark.parametrize("settle", [0.0, 2.5])
def test_settle_time_is_respected(tmp_path: Path, settle: float) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"\x01")
    t = tracker(tmp_path, settle=settle)
    t.touch(f, now=10.0)
    if settle:
        assert t.step(10.0 + settle - 0.01).ready == ()
    assert len(t.step(10.0 + settle).ready) == 1
