"""Real deliveries into a real inbox, with real timing: what is taken, when, and how often."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .watchkit import audio_bytes, write_slowly

# watchdog's harmless "watched twice" warning after mkdir -p (stemd silences it outside pytest too)
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def test_a_file_is_taken_once_with_its_size_and_mtime(start, inbox: Path) -> None:
    run = start()
    (inbox / "song.wav").write_bytes(audio_bytes(8192))
    [candidate] = run.until_taken(1)
    assert run.run(0.8) == []
    st = os.stat(inbox / "song.wav")
    assert (candidate.path, candidate.size, candidate.profile) == (inbox / "song.wav", 8192, "default")
    assert candidate.mtime == pytest.approx(st.st_mtime)
    assert candidate.inbox.path == inbox


def test_files_dropped_while_down_are_found_by_the_first_scan(start, inbox: Path) -> None:
    (inbox / "a.flac").write_bytes(audio_bytes())
    (inbox / "sub").mkdir()
    (inbox / "sub" / "b.mp3").write_bytes(audio_bytes())
    run = start()
    run.until_taken(2)
    assert run.names() == ["a.flac", "sub/b.mp3"]


def test_a_file_written_in_pieces_for_longer_than_the_settle_time(start, inbox: Path) -> None:
    run = start(settle_seconds=0.6)          # pieces come 0.1 s apart: a wide margin on a busy machine
    target = inbox / "long.wav"
    assert run.during(lambda: write_slowly(target, chunks=14, pause=0.1)) == []
    [candidate] = run.until_taken(1)
    assert candidate.size == 14 * 4096
    assert run.run(0.5) == []


TEMP_NAMES = [
    ".syncthing.song0.flac.tmp",         # Syncthing on Unix
    "~syncthing~song1.flac.tmp",         # Syncthing on Windows
    ".song2.flac.~3f2a1b",               # Nextcloud / ownCloud desktop client
    ".~song3.flac",                      # Nextcloud chunk
    "song4.flac.part",                   # Nextcloud web, Firefox
    ".ocTransferId5.part",               # ownCloud
    ".song6.flac.Ab12Cd",                # rsync
    "song7.flac.crdownload",             # Chrome, Edge
    "song8.flac.filepart",               # WinSCP
    ".dropbox.cache9",                   # Dropbox
]


def test_temp_files_renamed_into_place_are_taken_under_their_new_names(start, inbox: Path) -> None:
    run = start()

    def deliver() -> None:
        for _ in range(6):                   # every program writes its temp file slowly
            for name in TEMP_NAMES:
                with open(inbox / name, "ab") as f:
                    f.write(audio_bytes(4096))
            time.sleep(0.08)
        time.sleep(0.5)                      # the temp files sit quiet for longer than settle
        for i, name in enumerate(TEMP_NAMES):
            os.rename(inbox / name, inbox / f"song{i}.flac")

    assert run.during(deliver) == []
    run.until_taken(len(TEMP_NAMES))
    assert run.run(0.5) == []
    assert run.names() == [f"song{i}.flac" for i in range(len(TEMP_NAMES))]


def test_a_presized_file_is_not_taken_while_it_is_filled(start, inbox: Path) -> None:
    run = start(zero_tail_seconds=5.0)
    target = inbox / "copy.wav"
    size = 16 * 65536

    def smb_copy() -> None:
        with open(target, "wb") as f:
            f.truncate(size)                 # full length at once, zeros not yet written
            f.flush()
            for i in range(16):
                if i == 8:
                    time.sleep(0.8)          # the copy stalls for longer than settle
                f.seek(i * 65536)
                f.write(b"\x01" * 65536)
                f.flush()
                time.sleep(0.05)

    assert run.during(smb_copy) == []
    [candidate] = run.until_taken(1)
    assert candidate.size == size


def test_a_file_ending_in_zeros_is_taken_after_the_extra_wait(start, inbox: Path) -> None:
    run = start(zero_tail_seconds=0.6)
    (inbox / "silence.wav").write_bytes(audio_bytes(1000) + bytes(70000))
    began = time.monotonic()
    run.until_taken(1)
    assert time.monotonic() - began >= 0.3 + 0.6


def test_a_zero_byte_placeholder_replaced_by_a_part_rename(start, inbox: Path) -> None:
    run = start()
    final = inbox / "track.mp3"

    def browser() -> None:
        final.touch()                        # the placeholder
        part = inbox / "track.mp3.part"
        write_slowly(part, chunks=8, pause=0.1)
        os.replace(part, final)

    assert run.during(browser) == []
    [candidate] = run.until_taken(1)
    assert candidate.size == 8 * 4096
    assert run.run(0.5) == []


def test_a_zero_byte_file_waits(start, inbox: Path) -> None:
    run = start()
    (inbox / "empty.wav").touch()
    assert run.run(1.0) == []
    assert run.status()["pending"] == 1
    (inbox / "empty.wav").write_bytes(audio_bytes())
    run.until_taken(1)


def test_a_safari_download_folder_is_ignored_until_the_file_moves_out(start, inbox: Path) -> None:
    run = start()
    bundle = inbox / "mix.m4a.download"

    def safari() -> None:
        bundle.mkdir()
        write_slowly(bundle / "mix.m4a", chunks=5, pause=0.1)
        time.sleep(0.4)
        os.rename(bundle / "mix.m4a", inbox / "mix.m4a")
        bundle.rmdir()

    assert run.during(safari) == []
    run.until_taken(1)
    assert run.names() == ["mix.m4a"]


def test_a_file_with_a_downloader_control_file_waits_for_it_to_go(start, inbox: Path) -> None:
    run = start()
    (inbox / "get.mp3").write_bytes(audio_bytes())
    (inbox / "get.mp3.aria2").write_bytes(b"state")
    assert run.run(0.9) == []
    (inbox / "get.mp3.aria2").unlink()
    run.until_taken(1)


def test_a_file_changed_after_it_was_taken_is_taken_again(start, inbox: Path) -> None:
    run = start()
    target = inbox / "song.ogg"
    target.write_bytes(audio_bytes(4000))
    run.until_taken(1)
    with open(target, "ab") as f:
        f.write(b"\x02" * 1000)
    run.until_taken(2)
    assert [c.size for c in run.taken] == [4000, 5000]


def test_a_file_taken_removed_and_dropped_again_is_new(start, inbox: Path) -> None:
    run = start()
    target = inbox / "again.wav"
    target.write_bytes(audio_bytes())
    run.until_taken(1)
    old = os.stat(target)
    target.unlink()                          # the daemon archived it
    run.run(0.2)
    target.write_bytes(audio_bytes())        # same name, size and mtime
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    run.until_taken(2)


ODD_BUT_VALID = [
    "with some spaces.wav",
    "Ünïcødé – 東京 🎵.flac",
    "line\nbreak.mp3",
    "a" * 196 + ".wav",                      # 200 characters
    "'quotes\" and $dollar;.opus",
    "-starts with a dash.m4a",
]


def test_odd_but_valid_names_work(start, inbox: Path) -> None:
    run = start()
    for name in ODD_BUT_VALID:
        (inbox / name).write_bytes(audio_bytes())
    run.until_taken(len(ODD_BUT_VALID))
    assert sorted(c.path for c in run.taken) == sorted(inbox / name for name in ODD_BUT_VALID)
    assert len(max(ODD_BUT_VALID, key=len)) == 200


def test_a_burst_of_1000_files_is_taken_each_exactly_once(start, inbox: Path) -> None:
    run = start()
    slowest = 0.0

    def burst() -> None:
        for i in range(1000):
            (inbox / f"burst {i:04d}.wav").write_bytes(b"\x01" * 512)

    run.during(burst)
    began = time.monotonic()
    while len(run.taken) < 1000:
        assert time.monotonic() - began < 15, f"only {len(run.taken)} taken"
        t0 = time.monotonic()
        run.step()
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.02)
    assert run.run(0.5) == []
    paths = [c.path for c in run.taken]
    assert len(paths) == 1000 and len(set(paths)) == 1000
    assert slowest < 1.0                     # no step blocks the watcher's thread for long
