"""A disk that fills up mid-job: the job fails cleanly, the input is kept, and it runs
again by itself once space returns. Needs root to mount a small tmpfs as the outbox."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from audio import make_track


@pytest.fixture
def small_outbox(tmp_path: Path, mount_tmpfs):
    return mount_tmpfs(tmp_path / "outbox", "48m")


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass
    return filler


def test_disk_full_mid_job_keeps_the_input_and_recovers(make_daemon, tmp_path, small_outbox):
    os.environ["STEMD_TEST_SLOW"] = "1.0"
    daemon = make_daemon(profiles={"default": {"model": "slow"}},
                         maintenance={"min_free": "1MiB"},
                         workers={"retry_backoff": 0.5, "max_attempts": 5})
    make_track(tmp_path / "inbox" / "song.wav", 5.0)
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "the job to run")
    filler = _fill(small_outbox)                         # another program fills the disk
    job = daemon.wait_for(lambda: next((j for j in daemon.jobs()
                                        if any(h["kind"] == "disk" for h in json.loads(j["history"]))), None),
                          60, "the write to fail for lack of space")
    assert "space" in job["error"].lower()
    assert (tmp_path / "inbox" / "song.wav").exists()     # the input is kept
    assert not (small_outbox / "song").exists()           # nothing partial published
    daemon.wait_for(lambda: (daemon.status() or {}).get("dispatcher", {}).get("paused"), 30,
                    "dispatch to pause for lack of space")
    filler.unlink()                                       # space returns
    daemon.wait_jobs(1, ("done",), timeout=90)
    assert sorted(p.name for p in (small_outbox / "song").iterdir()) == \
        ["bass.wav", "drums.wav", "manifest.json", "other.wav", "vocals.wav"]
