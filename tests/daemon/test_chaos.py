"""Chaos: kill the daemon with SIGKILL at random moments; nothing is lost or doubled."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import psutil

from audio import make_track

STEMS = {"drums.wav", "bass.wav", "other.wav", "vocals.wav", "manifest.json"}


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


def test_sigkill_at_random_moments_loses_and_doubles_nothing(make_daemon, tmp_path: Path) -> None:
    os.environ["STEMD_TEST_SLOW"] = "0.2"
    rng = random.Random(1234)
    daemon = make_daemon(workers={"cpu": 2, "threads": 1, "max_attempts": 20, "retry_backoff": 0.1},
                         profiles={"default": {"model": "slow"}})
    names = [f"track {n:02d}.wav" for n in range(8)]
    for n, name in enumerate(names):
        make_track(tmp_path / "src" / name, rng.uniform(1.0, 3.0), seed=n)
        (tmp_path / "src" / name).rename(tmp_path / "inbox" / name)

    all_workers: set[int] = set()
    for _kill in range(4):
        time.sleep(rng.uniform(0.5, 4.0))
        all_workers.update(_descendants(daemon.pid))
        daemon.proc.kill()
        daemon.proc.wait(10)
        daemon.start()
    all_workers.update(_descendants(daemon.pid))
    daemon.wait_jobs(len(names), ("done",), timeout=300)

    jobs = daemon.jobs()
    assert sorted(j["state"] for j in jobs) == ["done"] * len(names), jobs   # one job each, all done
    outbox = tmp_path / "outbox"
    tracks = sorted(p.name for p in outbox.iterdir() if not p.name.startswith("."))
    assert tracks == sorted(n[:-4] for n in names)                           # no "(2)" duplicates
    for track in tracks:
        assert {p.name for p in (outbox / track).iterdir()} == STEMS         # complete sets
        assert json.loads((outbox / track / "manifest.json").read_text())["input"]["name"] == track + ".wav"
    daemon.wait_for(lambda: not (outbox / ".stemd-staging").exists(), 20, "staging to be removed")
    archived = sorted(p.name for p in (tmp_path / "state" / "archive").iterdir())
    assert archived == sorted(names)                                         # every input kept
    assert list((tmp_path / "inbox").iterdir()) == []
    daemon.stop()
    deadline = time.monotonic() + 15
    while _alive(list(all_workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(list(all_workers)) == []                                   # no orphans
