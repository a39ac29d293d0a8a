"""An inbox's ``priority`` reaches the jobs of the files found in it."""
from __future__ import annotations

from audio import make_track


def test_jobs_from_an_inbox_carry_its_priority(make_daemon, tmp_path):
    urgent = tmp_path / "urgent"
    urgent.mkdir()
    daemon = make_daemon(inbox=[{"path": str(tmp_path / "inbox"), "profile": "default"},
                                {"path": str(urgent), "profile": "default", "priority": 5}])
    make_track(tmp_path / "inbox" / "plain.wav", 0.6)
    make_track(urgent / "rush.wav", 0.6, seed=1)
    jobs = daemon.wait_for(lambda: len(daemon.jobs()) >= 2 and daemon.jobs(), 60, "two jobs")
    priority = {job["input_name"]: job["priority"] for job in jobs}
    assert priority == {"plain.wav": 0, "rush.wav": 5}
