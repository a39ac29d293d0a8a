"""``stemd status`` as a person reads it."""
from __future__ import annotations

import time

from stemd.daemon.status import render_status


def test_status_shows_slots_progress_waits_disk_and_failures() -> None:
    data = {
        "running": True,
        "daemon": {"version": "0.1.0", "pid": 42, "started": time.time() - 3600, "healthy": True,
                   "dispatcher": {"paused": None,
                                  "slots": [{"name": "cpu0", "device": "cpu", "job": 7, "progress": 50.0,
                                             "rss": 900 << 20, "alive": True},
                                            {"name": "gpu0", "device": "cuda:0", "job": None,
                                             "progress": None, "rss": 0, "alive": False}],
                                  "waiting": {"8": "waiting for memory: needs 1.5 GiB, 0.9 GiB free"}}},
        "queue": {"queued": 1, "running": 1, "done": 3, "failed": 1, "canceled": 0},
        "waiting": [{"id": 8, "input": "/in/next.flac"}],
        "failures": [{"id": 5, "input": "/in/bad.mp3", "error": "The file is empty (0 bytes)."}],
        "disk": {"outbox_free": 50 << 30, "state_free": 50 << 30, "cache_used": 1 << 30,
                 "cache_max": 20 << 30},
    }
    text = render_status(data)
    assert "running (pid 42" in text and "healthy" in text
    assert "job 7 [##########----------]  50.0%" in text
    assert "gpu0" in text and "idle" in text
    assert "next.flac: waiting for memory" in text
    assert "cache 1.0 GiB of 20.0 GiB" in text
    assert "bad.mp3: The file is empty" in text
    data["daemon"]["dispatcher"]["paused"] = "Low disk space on /out"
    assert "PAUSED: Low disk space on /out" in render_status(data)
