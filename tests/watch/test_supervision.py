"""Modes and supervision: polling, rescans, inboxes that vanish or are replaced, observers that die."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from stemd.errors import ConfigError
from stemd.watch import InboxSpec, Watcher

from .watchkit import FAST, Run, audio_bytes

ROOT = Path(__file__).resolve().parents[2]

# watchdog's harmless "watched twice" warning after mkdir -p (stemd silences it outside pytest too)
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def stop_threads(inbox: Path, prefix: str) -> int:
    """Stop the watchdog threads of ``inbox`` (a real fault: the thread ends as if it had crashed)."""
    threads = [t for t in threading.enumerate() if t.name == f"{prefix} {inbox}"]
    for thread in threads:
        thread.stop()  # type: ignore[attr-defined]
    for thread in threads:
        thread.join(5)
    return len(threads)


def test_events_mode_and_status(start, inbox: Path) -> None:
    run = start()
    status = run.status()
    assert status["mode"] == ("inotify" if sys.platform.startswith("linux") else "native")
    assert (status["watched"], status["state"], status["problem"]) == (True, "watched", None)
    assert status["network"] is False
    assert status["settle_seconds"] == 0.3 and status["last_scan"] is not None
    assert run.watcher.healthy()
    run.watcher.stop()
    assert not run.watcher.healthy()
    assert run.watcher.loop() == []


def test_polling_forced_on_a_local_folder(start, inbox: Path) -> None:
    run = start(poll="always", poll_interval=0.2)
    assert run.status()["mode"] == "polling"
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.wav").write_bytes(audio_bytes())
    (inbox / ".syncthing.b.wav.tmp").write_bytes(audio_bytes())
    run.run(0.5)
    os.rename(inbox / ".syncthing.b.wav.tmp", inbox / "b.wav")
    run.until_taken(2)
    assert run.run(0.5) == []
    assert run.names() == ["b.wav", "sub/a.wav"]


def test_the_periodic_rescan_finds_what_events_did_not_report(start, inbox: Path) -> None:
    run = start(poll="always", poll_interval=3600.0, rescan_interval=0.3)   # no events at all
    (inbox / "missed.wav").write_bytes(audio_bytes())
    run.until_taken(1)
    assert run.status()["last_scan_files"] == 1


def test_an_inbox_removed_and_recreated_is_watched_again(start, inbox: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemd.watch")
    run = start()
    (inbox / "first.wav").write_bytes(audio_bytes())
    run.until_taken(1)
    shutil.rmtree(inbox)
    run.until(lambda: run.status()["state"] == "missing")
    assert run.status()["watched"] is False
    assert run.watcher.healthy()              # restarting stemd would not bring it back
    inbox.mkdir()
    run.until(lambda: run.status()["watched"] is True)
    (inbox / "first.wav").write_bytes(audio_bytes())     # a new file of the same name
    run.until_taken(2)
    assert "is missing" in messages(caplog) and "is back" in messages(caplog)


def test_an_inbox_that_is_there_only_later_is_watched_when_it_comes(start, inbox: Path) -> None:
    inbox.rmdir()
    run = start()
    assert run.status()["state"] == "missing"
    inbox.mkdir()
    (inbox / "late.wav").write_bytes(audio_bytes())
    run.until_taken(1)


def test_an_inbox_replaced_by_a_new_folder_is_watched_again(start, inbox: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemd.watch")
    run = start()
    os.rename(inbox, inbox.with_name("old"))
    inbox.mkdir()                             # the old watch still follows the moved folder
    run.until(lambda: "replaced" in messages(caplog))
    (inbox.with_name("old") / "stale.wav").write_bytes(audio_bytes())
    (inbox / "fresh.wav").write_bytes(audio_bytes())
    run.until_taken(1)
    assert run.run(0.6) == []
    assert run.names() == ["fresh.wav"]


@pytest.mark.parametrize("thread", ["stemd-watch", "stemd-watch-emitter"])
def test_a_dead_observer_or_emitter_is_restarted(start, inbox: Path, caplog: pytest.LogCaptureFixture,
                                                 thread: str) -> None:
    caplog.set_level(logging.INFO, logger="stemd.watch")
    run = start()
    assert stop_threads(inbox, thread) == 1
    assert not run.watcher.healthy()
    run.until(lambda: "observer stopped" in messages(caplog))
    run.until(lambda: run.watcher.healthy())
    assert run.status()["mode"] != "polling"
    (inbox / "after.wav").write_bytes(audio_bytes())
    run.until_taken(1)


def test_an_observer_that_keeps_dying_is_replaced_by_polling(start, inbox: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemd.watch")
    run = start(poll_interval=0.2)
    for _ in range(3):
        run.until(lambda: run.watcher.healthy())
        assert stop_threads(inbox, "stemd-watch") == 1
        run.until(lambda: not run.watcher.status()[0]["watched"] or run.status()["mode"] == "polling")
    run.until(lambda: run.status()["mode"] == "polling" and run.watcher.healthy())
    assert "polling it every 0.2 s instead" in messages(caplog)
    assert "stopped 3 times" in str(run.status()["problem"])
    (inbox / "after.wav").write_bytes(audio_bytes())
    run.until_taken(1)


def test_inotify_failure_falls_back_to_polling(tmp_path: Path) -> None:
    """Run out of file descriptors for real (in a child process): inotify cannot start."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    script = textwrap.dedent("""
        import logging, os, resource, sys, time
        from pathlib import Path
        from stemd.watch import InboxSpec, Watcher
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        inbox = Path(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        fds = []
        try:
            while True:
                fds.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        w = Watcher([InboxSpec(path=inbox, settle_seconds=0.2, poll_interval=0.2)])
        w.start()
        for fd in fds:
            os.close(fd)
        (inbox / "a.wav").write_bytes(b"\\x01" * 100)
        deadline = time.monotonic() + 10
        taken = []
        while not taken and time.monotonic() < deadline:
            taken = w.loop()
            time.sleep(0.05)
        print("MODE", w.status()[0]["mode"], "TAKEN", [c.path.name for c in taken])
        w.stop()
    """)
    out = subprocess.run([sys.executable, "-c", script, str(inbox)], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "inotify instance or open-file limit is reached" in out.stdout
    assert "MODE polling TAKEN ['a.wav']" in out.stdout


def test_subfolder_profiles_and_new_folders(start, inbox: Path) -> None:
    run = start(subfolder_profiles={"karaoke": "karaoke", "six": "6stems"})
    (inbox / "karaoke" / "deep" / "er").mkdir(parents=True)
    (inbox / "karaoke" / "deep" / "er" / "k.wav").write_bytes(audio_bytes())
    (inbox / "misc" / "six").mkdir(parents=True)
    (inbox / "misc" / "six" / "s.wav").write_bytes(audio_bytes())
    (inbox / "plain.wav").write_bytes(audio_bytes())
    run.until_taken(3)
    profiles = {c.path.name: c.profile for c in run.taken}
    assert profiles == {"k.wav": "karaoke", "s.wav": "6stems", "plain.wav": "default"}


def test_a_folder_moved_into_the_inbox(start, inbox: Path, tmp_path: Path) -> None:
    album = tmp_path / "album"
    (album / "cd2").mkdir(parents=True)
    for name in ("1.flac", "2.flac", "cd2/3.flac"):
        (album / name).write_bytes(audio_bytes())
    run = start()
    os.rename(album, inbox / "album")
    run.until_taken(3)
    assert run.names() == ["album/1.flac", "album/2.flac", "album/cd2/3.flac"]


def test_ignored_and_excluded_folders_names_and_extensions(start, inbox: Path) -> None:
    run = start(exclude_dirs=(inbox / "archive",), extra_ignore=("*.bak", "draft*"),
                extensions=frozenset({"wav", "flac"}), rescan_interval=0.3)
    for name in ("archive/a.wav", ".stversions/b.wav", "@eaDir/c.wav", "draft/d.wav", "e.wav.bak",
                 "f.mp3", "g.txt", "archive/deeper/h.wav", "ok/i.WAV", "j.flac"):
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(audio_bytes())
    run.until_taken(2)
    assert run.run(0.8) == []
    assert run.names() == ["j.flac", "ok/i.WAV"]


def test_nested_inboxes_each_take_their_own_files(tmp_path: Path) -> None:
    outer = InboxSpec(path=tmp_path / "in", profile="outer", **FAST)  # type: ignore[arg-type]
    inner = InboxSpec(path=tmp_path / "in" / "karaoke", profile="inner", **FAST)  # type: ignore[arg-type]
    inner.path.mkdir(parents=True)
    watcher = Watcher([outer, inner])
    run = Run(watcher, outer.path)
    try:
        watcher.start()
        (outer.path / "a.wav").write_bytes(audio_bytes())
        (inner.path / "b.wav").write_bytes(audio_bytes())
        run.until_taken(2)
        assert run.run(0.5) == []
        assert {c.path.name: (c.profile, c.inbox.profile) for c in run.taken} == {
            "a.wav": ("outer", "outer"), "b.wav": ("inner", "inner")}
        assert [s["mode"] for s in watcher.status()] == [run.status()["mode"]] * 2
    finally:
        watcher.stop()


def test_an_inbox_listed_twice_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Watcher([InboxSpec(path=tmp_path), InboxSpec(path=tmp_path / "." / "", profile="x")])


def test_an_inbox_path_that_is_a_symbolic_link_to_a_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    watcher = Watcher([InboxSpec(path=link, **FAST)])  # type: ignore[arg-type]
    run = Run(watcher, link)
    try:
        watcher.start()
        assert run.status()["mode"] != "polling"
        (real / "a.wav").write_bytes(audio_bytes())
        (real / "sub" / "b.wav").write_bytes(audio_bytes())
        run.until_taken(2)
        assert sorted(c.path for c in run.taken) == [link / "a.wav", link / "sub" / "b.wav"]
    finally:
        watcher.stop()
