"""Intake through the real daemon: dedupe, the stem cache, bad inputs, bursts, disk space."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from audio import make_track, write_wav, synth
from daemon_harness import stemd


def test_same_file_twice_is_one_job_and_again_later_is_served_from_cache(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "0.5"
    daemon = make_daemon(profiles={"default": {"model": "slow"}})
    src = make_track(tmp_path / "src" / "song.wav", 2.0)
    inbox = tmp_path / "inbox"
    shutil.copy(src, inbox / "song.wav")
    daemon.wait_for(lambda: daemon.jobs(), 30, "the first job")
    os.utime(inbox / "song.wav")                    # touched again (a sync tool rewriting it)
    time.sleep(2.0)
    assert len(daemon.jobs()) == 1
    daemon.wait_jobs(1, ("done",), timeout=60)

    shutil.copy(src, inbox / "song.wav")             # the same song, dropped again
    jobs = daemon.wait_jobs(2, ("done",), timeout=60)
    second = max(jobs, key=lambda j: j["id"])
    assert second["cached"] == 1
    again = Path(second["output_dir"])
    assert again.name == "song (2)"
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["cached"] is True and manifest["cached_from"] == min(j["id"] for j in jobs)
    assert (again / "vocals.wav").read_bytes() == (tmp_path / "outbox" / "song" / "vocals.wav").read_bytes()
    assert "served from the stem cache" in daemon.log()


def _bad_corpus(inbox: Path) -> dict[str, str]:
    """name -> a word the failure reason must contain."""
    (inbox / "text.mp3").write_text("hello\n" * 200)
    (inbox / "random.flac").write_bytes(os.urandom(50_000))
    good = write_wav(inbox / ".tmp-trunc.wav", synth(2.0), 44100)
    data = good.read_bytes()
    good.unlink()
    (inbox / "truncated.wav").write_bytes(data[:60])   # a header and nothing else
    header = bytearray(write_wav(inbox / ".tmp-rate.wav", synth(0.5), 44100).read_bytes())
    (inbox / ".tmp-rate.wav").unlink()
    header[24:28] = (3_000_000).to_bytes(4, "little")  # an absurd sample rate
    (inbox / "absurd rate.wav").write_bytes(bytes(header))
    (inbox / "blip.wav").write_bytes(write_wav(inbox / ".tmp-blip.wav", synth(0.1), 44100).read_bytes())
    (inbox / ".tmp-blip.wav").unlink()
    return {"text.mp3": "audio", "random.flac": "",
            "truncated.wav": "truncated", "absurd rate.wav": "sample rate", "blip.wav": "too short"}


def test_bad_and_odd_inputs_fail_clearly_and_good_files_still_work(make_daemon, tmp_path):
    daemon = make_daemon(intake={"settle_seconds": 0.5, "rescan_interval": 1, "empty_timeout": 3})
    inbox = tmp_path / "inbox"
    expected = _bad_corpus(inbox)
    (inbox / "empty.wav").write_bytes(b"")             # a placeholder that never fills
    expected["empty.wav"] = "empty"
    (inbox / "folder.wav").mkdir()                     # a directory named like audio
    os.mkfifo(inbox / "pipe.wav")                      # a FIFO: never opened
    os.symlink("/etc/hostname", inbox / "outside.wav")  # points outside the inbox
    make_track(inbox / ("long name " + "x" * 180 + ".wav"), 1.0)
    make_track(inbox / "new\nline.wav", 1.0, seed=1)
    daemon.wait_jobs(len(expected) + 2, ("done", "failed"), timeout=120)
    time.sleep(2.0)                                     # a rescan passes: odd entries stay ignored
    jobs = {Path(j["input"]).name: j for j in daemon.jobs()}
    for name, word in expected.items():
        assert jobs[name]["state"] == "failed", name
        assert word in jobs[name]["error"].lower(), (name, jobs[name]["error"])
        assert (tmp_path / "state" / "failed" / f"{name}.error.txt").exists()
    assert jobs["new\nline.wav"]["state"] == "done"
    assert any(n.startswith("long name") and j["state"] == "done" for n, j in jobs.items())
    assert not {"folder.wav", "pipe.wav", "outside.wav"} & set(jobs)
    assert (inbox / "pipe.wav").exists() and (inbox / "folder.wav").is_dir()
    assert daemon.proc.poll() is None


def test_a_burst_of_1000_files_is_recorded_exactly_once(make_daemon, tmp_path):
    daemon = make_daemon(workers={"cpu": 0, "gpu": 0})   # no slots: jobs stay queued
    src = write_wav(tmp_path / "tiny.wav", synth(0.6), 8000)
    inbox = tmp_path / "inbox"
    for n in range(1000):
        data = bytearray(src.read_bytes())
        data[-2:] = n.to_bytes(2, "little")              # each file different
        (inbox / f"{n:04d}.wav").write_bytes(bytes(data))
    daemon.wait_for(lambda: len(daemon.jobs()) >= 1000, timeout=240, what="1000 jobs",
                    interval=1.0)
    time.sleep(3.0)                                      # a rescan must not add any more
    jobs = daemon.jobs()
    assert len(jobs) == 1000
    assert len({j["input"] for j in jobs}) == 1000
    assert {j["state"] for j in jobs} == {"queued"}


def test_low_disk_space_pauses_dispatch_and_resumes(make_daemon, tmp_path):
    daemon = make_daemon(maintenance={"min_free": "1000TB"})
    make_track(tmp_path / "inbox" / "a.wav", 1.0)
    daemon.wait_for(lambda: (daemon.status() or {}).get("dispatcher", {}).get("paused"), 30,
                    "dispatch to pause")
    paused = daemon.status()["dispatcher"]["paused"]
    assert "free" in paused and "min_free" in paused
    assert daemon.jobs()[0]["state"] == "queued"
    text = daemon.config.read_text().replace('min_free = "1000TB"', 'min_free = "1MiB"')
    daemon.config.write_text(text)
    daemon.signal(signal.SIGHUP)
    daemon.wait_jobs(1, ("done",), timeout=60)
    # the status file is rewritten once a second: the pause note must go with the next one
    daemon.wait_for(lambda: not daemon.status()["dispatcher"]["paused"], 5,
                    "the pause note to leave the status")


def test_pause_note_goes_when_no_job_waits_for_space(make_daemon, tmp_path):
    daemon = make_daemon(maintenance={"min_free": "1000TB"})
    make_track(tmp_path / "inbox" / "a.wav", 1.0)
    daemon.wait_for(lambda: (daemon.status() or {}).get("dispatcher", {}).get("paused"), 30,
                    "dispatch to pause")
    job = daemon.jobs()[0]
    assert stemd(daemon.config, "cancel", str(job["id"])).returncode == 0
    daemon.wait_for(lambda: not daemon.status()["dispatcher"]["paused"], 10,
                    "the pause note to leave the status once nothing waits")
