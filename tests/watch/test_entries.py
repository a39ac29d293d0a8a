"""Odd entries: folders named like audio, FIFOs, devices, sockets, symbolic links in and out."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from stemd.watch import InboxSpec, check_entry
from stemd.watch.entries import tail_is_zero

from .watchkit import audio_bytes

# watchdog's harmless "watched twice" warning after mkdir -p (stemd silences it outside pytest too)
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def test_a_regular_file_is_fine(inbox: Path) -> None:
    (inbox / "a.wav").write_bytes(b"\x01")
    assert check_entry(inbox / "a.wav", InboxSpec(path=inbox)) is None


@pytest.mark.parametrize(("make", "words"), [
    (os.mkdir, "folder"),
    (os.mkfifo, "named pipe"),
])
def test_folders_and_fifos_are_refused(inbox: Path, make, words: str) -> None:
    make(inbox / "x.wav")
    reason = check_entry(inbox / "x.wav", InboxSpec(path=inbox))
    assert reason and words in reason


def test_a_socket_is_refused(tmp_path: Path) -> None:
    short = Path(os.path.relpath(tmp_path))  # AF_UNIX paths are short
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(short / "s.wav"))
        reason = check_entry(tmp_path / "s.wav", InboxSpec(path=tmp_path))
    assert reason and "socket" in reason


def test_a_missing_entry(inbox: Path) -> None:
    assert check_entry(inbox / "nope.wav", InboxSpec(path=inbox)) == "it no longer exists"


def test_symbolic_links_inside_the_inbox_are_accepted(inbox: Path) -> None:
    (inbox / "real.wav").write_bytes(b"\x01")
    (inbox / "link.wav").symlink_to("real.wav")
    assert check_entry(inbox / "link.wav", InboxSpec(path=inbox)) is None


def test_symbolic_links_outside_the_inbox_are_refused_unless_configured(tmp_path: Path, inbox: Path) -> None:
    (tmp_path / "outside.wav").write_bytes(b"\x01")
    (inbox / "link.wav").symlink_to(tmp_path / "outside.wav")
    reason = check_entry(inbox / "link.wav", InboxSpec(path=inbox))
    assert reason and "outside the inbox" in reason and "follow_symlinks" in reason
    assert check_entry(inbox / "link.wav", InboxSpec(path=inbox, follow_symlinks=True)) is None


@pytest.mark.parametrize(("target", "words"), [
    ("missing.wav", "broken"),
    ("link.wav", "loops"),
    ("/dev/null", "device"),
    (".", "folder"),
])
def test_bad_link_targets_are_refused(inbox: Path, target: str, words: str) -> None:
    (inbox / "link.wav").symlink_to(target)
    reason = check_entry(inbox / "link.wav", InboxSpec(path=inbox, follow_symlinks=True))
    assert reason and words in reason


def test_the_tail_check_never_blocks_on_a_fifo(inbox: Path) -> None:
    os.mkfifo(inbox / "p.wav")
    assert tail_is_zero(inbox / "p.wav", 100, follow=False) is False


def test_the_tail_check_does_not_follow_links_unless_allowed(tmp_path: Path, inbox: Path) -> None:
    (tmp_path / "zeros.wav").write_bytes(bytes(1000))
    (inbox / "link.wav").symlink_to(tmp_path / "zeros.wav")
    assert tail_is_zero(inbox / "link.wav", 1000, follow=False) is False
    assert tail_is_zero(inbox / "link.wav", 1000, follow=True) is True


def test_the_watcher_skips_odd_entries_and_says_why_once(start, inbox: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stemd.watch")
    os.mkfifo(inbox / "before.wav")
    run = start(rescan_interval=0.3)
    os.mkfifo(inbox / "pipe.wav")
    (inbox / "folder.wav").mkdir()
    (inbox / "folder.wav" / "inside.mp3").write_bytes(audio_bytes())
    (tmp_path / "outside.wav").write_bytes(audio_bytes())
    (inbox / "out.wav").symlink_to(tmp_path / "outside.wav")
    (inbox / "real.wav").write_bytes(audio_bytes())
    (inbox / "in.wav").symlink_to("real.wav")
    run.until_taken(3)
    run.run(1.0)                              # several rescans
    assert run.names() == ["folder.wav/inside.mp3", "in.wav", "real.wav"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping")]
    assert len(skipped) == 3, skipped
    assert any("pipe.wav" in s and "named pipe" in s for s in skipped)
    assert any("out.wav" in s and "outside the inbox" in s for s in skipped)
    assert run.status()["skipped"] == 3


def test_links_to_files_outside_are_taken_when_configured(start, inbox: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.wav").write_bytes(audio_bytes())
    run = start(follow_symlinks=True)
    (inbox / "out.wav").symlink_to(tmp_path / "outside.wav")
    [candidate] = run.until_taken(1)
    assert candidate.path == inbox / "out.wav"
    assert candidate.size == len(audio_bytes())


def test_links_to_folders_are_never_entered(start, inbox: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.wav").write_bytes(audio_bytes())
    (inbox / "linked").symlink_to(tmp_path / "elsewhere")
    (inbox / "self").symlink_to(".")
    run = start(follow_symlinks=True)
    (inbox / "ok.wav").write_bytes(audio_bytes())
    run.until_taken(1)
    assert run.run(0.5) == []
    assert run.names() == ["ok.wav"]
