"""Worker processes log in the supervisor's format, and every line about a job names it."""
from __future__ import annotations

import json
import re

from audio import make_track
from daemon_harness import DaemonProcess, base_config, env_for_tests, write_config


def test_json_log_covers_the_workers_and_every_line_about_a_job_carries_its_id(tmp_path,
                                                                                model_repo):
    config = write_config(tmp_path / "stemd.toml",
                          base_config(tmp_path, model_repo, daemon={"log_level": "debug"}))
    for folder in ("inbox", "outbox"):
        (tmp_path / folder).mkdir()
    daemon = DaemonProcess(config, tmp_path / "state", env_for_tests(), log_format="json")
    daemon.start()
    try:
        make_track(tmp_path / "inbox" / "song.wav", 1.0)
        job = daemon.wait_jobs(1, ("done",), timeout=120)[0]
    finally:
        daemon.stop()
    entries = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    about = {e["logger"] for e in entries if e.get("job") == job["id"]}
    assert "stemd.dispatch.dispatcher" in about                        # started, done
    assert any(name.startswith(("stemd.worker", "stemd.engine")) for name in about)
    assert any(e["logger"].startswith("stemd.worker") for e in entries)
    untagged = [e["msg"] for e in entries if "job" not in e and re.match(r"job \d+\b", e["msg"])]
    assert untagged == []
