"""The life of a job through the real daemon: replaced inputs, the stem cache, retry, failed/
and cancel. Each test names the defect of issue 10 it pins down."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import modelkit
from audio import make_track
from daemon_harness import stemd


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _by_name(daemon, name: str) -> list[dict]:
    return [j for j in daemon.jobs() if j["input_name"] == name]


def test_an_input_replaced_while_its_job_waits_is_separated_as_it_is_now(make_daemon, tmp_path):
    """Defect 2: the new content was separated but published and cached under the old
    content's hash, so the old content delivered later got the new content's stems."""
    os.environ["STEMD_TEST_SLOW"] = "1.0"
    inbox, outbox, src = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "src"
    daemon = make_daemon(profiles={"default": {"model": "tiny"}, "slow": {"model": "slow"}},
                         inbox=[{"path": str(inbox), "profile": "default",
                                 "subfolders": {"slow": "slow"}}])
    make_track(inbox / "slow" / "blocker.wav", 4.0)             # keeps the only slot busy
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "the blocker")
    old, new = make_track(src / "old.wav", 1.0, seed=1), make_track(src / "new.wav", 1.0, seed=2)
    shutil.copy(old, inbox / "song.wav")
    daemon.wait_for(lambda: _by_name(daemon, "song.wav"), 30, "the song's job")
    shutil.copy(new, inbox / ".song.partial")                    # a sync tool replaces it
    os.replace(inbox / ".song.partial", inbox / "song.wav")

    def settled() -> bool:
        jobs = daemon.jobs()
        return bool(jobs) and all(j["state"] in ("done", "failed", "canceled") for j in jobs) \
            and sum(j["state"] == "done" for j in jobs) == 2
    daemon.wait_for(settled, 90, "the blocker and the song to finish")
    song_jobs = _by_name(daemon, "song.wav")
    done = [j for j in song_jobs if j["state"] == "done"]
    assert len(done) == 1 and done[0]["sha256"] == _sha(new)
    assert all(j["state"] == "canceled" and "Superseded" in j["error"]
               for j in song_jobs if j["state"] != "done")
    manifest = json.loads((outbox / "song" / "manifest.json").read_text())
    assert manifest["input"]["sha256"] == _sha(new)               # the content separated
    assert not (outbox / "song (2)").exists()

    shutil.copy(old, inbox / "again.wav")                         # the old content, later
    daemon.wait_jobs(3, ("done",), timeout=60)
    assert (outbox / "again" / "vocals.wav").read_bytes() != (outbox / "song" / "vocals.wav").read_bytes()
    again = json.loads((outbox / "again" / "manifest.json").read_text())
    assert again["input"]["sha256"] == _sha(old)


def test_a_cache_entry_that_breaks_serving_is_dropped_and_the_job_separated(make_daemon, tmp_path):
    """Defect 9: anything but OSError while serving from the cache left the job running, with
    no slot, until a restart."""
    daemon = make_daemon()
    src = make_track(tmp_path / "src" / "song.wav", 1.0)
    shutil.copy(src, tmp_path / "inbox" / "song.wav")
    daemon.wait_jobs(1, ("done",), timeout=60)
    [entry] = [p for p in (tmp_path / "state" / "cache").iterdir() if p.is_dir()]
    (entry / "manifest.json").unlink()                            # a hardlink: replace, not edit
    (entry / "manifest.json").write_text(json.dumps({"job_id": 1, "input": "not a table"}))
    shutil.copy(src, tmp_path / "inbox" / "again.wav")
    jobs = daemon.wait_jobs(2, ("done",), timeout=60)
    again = max(jobs, key=lambda j: j["id"])
    assert again["cached"] == 0 and (tmp_path / "outbox" / "again" / "vocals.wav").exists()
    assert "could not be used" in daemon.log()


def test_a_failed_input_has_one_place_and_one_note_until_it_succeeds(make_daemon, tmp_path):
    """Defect 16: each failed retry renamed the input inside failed/ again, the notes outlived
    a later success, and the new note named failed/ as the original location."""
    repo = tmp_path / "models"
    modelkit.make_repo(repo, "tiny")
    inbox, failed = tmp_path / "inbox", tmp_path / "state" / "failed"
    daemon = make_daemon(models={"repo": str(repo), "offline": True},
                         profiles={"default": {"model": "late"}})      # not installed yet
    make_track(inbox / "sub" / "song.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    for attempt in (2, 3):
        assert stemd(daemon.config, "retry", str(job["id"])).returncode == 0
        daemon.wait_for(lambda: daemon.jobs()[0]["state"] == "failed"
                        and len(json.loads(daemon.jobs()[0]["history"])) >= 2 * attempt - 1,
                        60, f"failure {attempt}")
    assert sorted(p.name for p in (failed / "sub").iterdir()) == ["song.wav", "song.wav.error.txt"]
    note = (failed / "sub" / "song.wav.error.txt").read_text()
    assert f"Original location: {inbox / 'sub' / 'song.wav'}" in note

    modelkit.make_repo(repo, "late")                               # the model arrives
    assert stemd(daemon.config, "retry", str(job["id"])).returncode == 0
    daemon.wait_jobs(1, ("done",), timeout=60)
    assert list((failed / "sub").iterdir()) == []                  # no orphan note
    assert (tmp_path / "state" / "archive" / "sub" / "song.wav").exists()
    assert (tmp_path / "outbox" / "sub" / "song" / "vocals.wav").exists()


def _failed_then_fixed(make_daemon, tmp_path):
    """A job failed for a missing model; the profile is then fixed and the config reloaded."""
    daemon = make_daemon(profiles={"default": {"model": "missing"}})
    make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    assert "stemd retry" in (tmp_path / "state" / "failed" / "song.wav.error.txt").read_text()
    daemon.config.write_text(daemon.config.read_text().replace('model = "missing"', 'model = "tiny"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: "config reloaded" in daemon.log(), 30, "the reload")
    return daemon, job


def test_retry_takes_the_profile_as_it_is_now(make_daemon, tmp_path):
    """Defect 15: a retry reused the options from the job's arrival, so fixing the profile
    (as the .error.txt suggests) and retrying failed again."""
    daemon, job = _failed_then_fixed(make_daemon, tmp_path)
    assert stemd(daemon.config, "retry", str(job["id"])).returncode == 0
    done = daemon.wait_jobs(1, ("done",), timeout=60)[0]
    assert json.loads(done["options"])["model"] == "tiny"
    manifest = json.loads((tmp_path / "outbox" / "song" / "manifest.json").read_text())
    assert manifest["model"] == "tiny" and manifest["options_from"] == "profile at retry"


def test_retry_keep_options_keeps_the_options_the_job_had(make_daemon, tmp_path):
    daemon, job = _failed_then_fixed(make_daemon, tmp_path)
    result = stemd(daemon.config, "retry", str(job["id"]), "--keep-options")
    assert result.returncode == 0, result.stderr
    daemon.wait_for(lambda: len(json.loads(daemon.jobs()[0]["history"])) >= 3
                    and daemon.jobs()[0]["state"] == "failed", 60, "the retry with the old options")
    assert json.loads(daemon.jobs()[0]["options"])["model"] == "missing"


def test_a_canceled_input_is_set_aside_and_not_queued_again_at_the_next_start(make_daemon, tmp_path):
    """Defect 17: the canceled file stayed in the inbox and became a new job at the next start."""
    daemon = make_daemon(workers={"cpu": 0, "gpu": 0})            # no slots: jobs stay queued
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job = daemon.wait_for(lambda: next(iter(daemon.jobs()), None), 30, "the job")
    assert stemd(daemon.config, "cancel", str(job["id"])).returncode == 0
    daemon.wait_jobs(1, ("canceled",), timeout=30)
    daemon.wait_for(lambda: not song.exists(), 10, "the input to be set aside")
    note = (tmp_path / "state" / "failed" / "song.wav.error.txt").read_text()
    assert "canceled" in note and f"stemd retry {job['id']}" in note
    daemon.stop()
    daemon.start()
    time.sleep(3.0)                                                # a rescan (every 2 s) passes
    assert [j["state"] for j in daemon.jobs()] == ["canceled"]
