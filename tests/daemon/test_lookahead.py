"""A busy worker decodes the next queued input while its model works on the current one."""
from __future__ import annotations

import re

from audio import make_track


def test_worker_decodes_the_next_input_while_the_current_job_runs(make_daemon, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("STEMD_TEST_SLOW", "0.5")       # each segment of the tiny model: 0.5 s
    daemon = make_daemon(profiles={"default": {"model": "slow"}})
    for n in range(3):
        make_track(tmp_path / "inbox" / f"t{n}.wav", 10.0, seed=n)
    jobs = daemon.wait_jobs(3, ("done",), timeout=180)
    ahead = [int(i) for i in re.findall(r"job=(\d+) using the input decoded while the previous",
                                        daemon.log())]
    first = min(j["id"] for j in jobs)
    assert ahead and set(ahead) <= {j["id"] for j in jobs} - {first}
    for n in range(3):
        stems = sorted(p.name for p in (tmp_path / "outbox" / f"t{n}").glob("*.wav"))
        assert stems == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert list((tmp_path / "state" / "work").iterdir()) == []
