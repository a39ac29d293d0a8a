"""A half-copied mp3 in the inbox fails as permanent and is moved aside; nothing is published."""
from __future__ import annotations

import json

from audio import make_track


def test_a_truncated_mp3_fails_at_once_and_is_not_published(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_attempts": 3})
    whole = make_track(tmp_path / "src" / "song.mp3", 3.0)
    (tmp_path / "inbox" / "song.mp3").write_bytes(whole.read_bytes()[:700])
    job = daemon.wait_jobs(1, ("failed", "done"), timeout=90)[0]
    assert job["state"] == "failed" and job["attempts"] == 1       # permanent: not retried
    assert "looks cut off" in job["error"] and "deliver the file again" in job["error"]
    assert [h["kind"] for h in json.loads(job["history"])] == ["input"]
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir() if p.name[0] != ".") == []
    assert (tmp_path / "state" / "failed" / "song.mp3").is_file()
