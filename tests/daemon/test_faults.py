"""Faults through real mechanisms: models that hang, crash or run out of memory,
and the daemon killed or signalled mid-job."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil

from audio import make_track
from daemon_harness import stemd


def _only_job(daemon) -> dict:
    jobs = daemon.jobs()
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_hanging_model_hits_its_deadline_and_a_fresh_worker_serves_the_next_job(make_daemon, tmp_path):
    daemon = make_daemon(
        workers={"job_timeout": 4, "max_attempts": 1},
        profiles={"default": {"model": "tiny"}, "hang": {"model": "hang"}},
        inbox=[{"path": str(tmp_path / "inbox"), "profile": "default",
                "subfolders": {"hang": "hang"}}])
    make_track(tmp_path / "inbox" / "hang" / "stuck.wav", 1.0)
    failed = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    assert "deadline" in failed["error"]
    history = json.loads(failed["history"])
    assert history[-1]["kind"] == "timeout"
    make_track(tmp_path / "inbox" / "fine.wav", 1.0)
    daemon.wait_jobs(1, ("done",), timeout=60)
    assert (tmp_path / "outbox" / "fine" / "vocals.wav").exists()
    assert (tmp_path / "state" / "failed" / "hang" / "stuck.wav.error.txt").exists()


def test_crashing_worker_fails_after_max_attempts_with_each_reason(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_attempts": 2, "retry_backoff": 0.2},
                         profiles={"default": {"model": "crash"}})
    make_track(tmp_path / "inbox" / "boom.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=90)[0]
    history = [h for h in json.loads(job["history"]) if h["kind"] == "crash"]
    assert len(history) == 2 and job["attempts"] == 2
    assert all("SIGKILL" in h["reason"] for h in history)
    assert daemon.proc.poll() is None            # the daemon itself is fine


def test_out_of_memory_in_a_batch_shrinks_the_batch_and_finishes(make_daemon, tmp_path):
    daemon = make_daemon(profiles={"default": {"model": "oom", "batch_size": 4}})
    make_track(tmp_path / "inbox" / "big.wav", 5.0)     # several segments: a batch of 2+
    job = daemon.wait_jobs(1, ("done",), timeout=90)[0]
    assert job["attempts"] == 1                          # recovered inside the worker
    assert "batch size lowered to 1" in daemon.log()
    assert (tmp_path / "outbox" / "big" / "drums.wav").exists()


def test_memory_error_every_time_fails_for_good(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_attempts": 2, "retry_backoff": 0.2},
                         profiles={"default": {"model": "alwaysoom"}})
    make_track(tmp_path / "inbox" / "x.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=90)[0]
    assert [h["kind"] for h in json.loads(job["history"])] == ["oom", "oom"]
    assert json.loads(job["options"])["batch_size"] == 1     # the retry used a batch of one
    assert (tmp_path / "state" / "failed" / "x.wav.error.txt").exists()


def test_sigkill_mid_job_then_restart_finishes_it_once(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "1.0"
    daemon = make_daemon(profiles={"default": {"model": "slow"}})
    make_track(tmp_path / "inbox" / "song.wav", 4.0)
    daemon.wait_for(lambda: any(j["state"] == "running" and j["progress"] > 0 for j in daemon.jobs()),
                    timeout=60, what="the job to run")
    workers = [p.pid for p in psutil.Process(daemon.pid).children(recursive=True)]
    assert workers
    os.killpg(daemon.pid, 0)
    daemon.proc.kill()                                   # SIGKILL the supervisor only
    daemon.proc.wait(10)
    _wait_gone(workers)                                  # its workers die with it
    daemon.start()
    job = daemon.wait_jobs(1, ("done",), timeout=90)[0]
    history = json.loads(job["history"])
    assert [h["kind"] for h in history] == ["crash"]     # the lost attempt is recorded
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir() if p.name[0] != ".") == ["song"]
    daemon.wait_for(lambda: not (tmp_path / "outbox" / ".stemd-staging").exists(),
                    20, "staging to be removed")


def _wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"orphaned worker processes still alive: {alive}")


def test_sigterm_lets_the_running_job_finish_then_exits(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "0.3"
    daemon = make_daemon(profiles={"default": {"model": "slow"}})
    make_track(tmp_path / "inbox" / "a.wav", 3.0)
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "a running job")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(60) == 0
    assert _only_job(daemon)["state"] == "done"


def test_sigterm_past_grace_requeues_and_second_signal_stops_at_once(make_daemon, tmp_path):
    daemon = make_daemon(daemon={"state_dir": str(tmp_path / "state"), "shutdown_grace": 60},
                         profiles={"default": {"model": "hang"}})
    make_track(tmp_path / "inbox" / "a.wav", 1.0)
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "a running job")
    workers = [p.pid for p in psutil.Process(daemon.pid).children(recursive=True)]
    daemon.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert daemon.proc.poll() is None                    # waiting for the job (grace 60 s)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert time.monotonic() - started < 20
    job = _only_job(daemon)
    assert job["state"] == "queued" and job["attempts"] == 0   # left queued, attempt not counted
    _wait_gone(workers)


def test_sighup_reloads_config_and_refuses_a_broken_one(make_daemon, tmp_path):
    daemon = make_daemon()
    config = daemon.config
    text = config.read_text()
    second = tmp_path / "inbox2"
    second.mkdir()
    config.write_text(text + f'\n[[inbox]]\npath = "{second}"\nprofile = "flac"\n'
                      '[profiles.flac]\nmodel = "tiny"\nformat = "flac"\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: "config reloaded" in daemon.log(), 30, "the reload")
    make_track(second / "late.wav", 1.0)
    daemon.wait_jobs(1, ("done",), timeout=60)
    assert (tmp_path / "outbox" / "late" / "vocals.flac").exists()

    config.write_text(config.read_text() + "\n[workers]\nnot_a_key = 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: "reload refused" in daemon.log(), 30, "the refusal")
    assert daemon.proc.poll() is None
    make_track(second / "after.wav", 1.0)                # the old (valid) config still works
    daemon.wait_jobs(2, ("done",), timeout=60)

    config.write_text(text + f'\n[[inbox]]\npath = "{tmp_path / "inbox"}"\n')   # listed twice
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: daemon.log().count("reload refused") == 2, 30, "the second refusal")
    assert "listed twice" in daemon.log()
    make_track(second / "still.wav", 1.0)                # the second inbox is still watched
    daemon.wait_jobs(3, ("done",), timeout=60)


def test_memory_budget_too_small_fails_at_once_with_advice(make_daemon, tmp_path):
    daemon = make_daemon(workers={"memory_budget": "100MiB", "memory_estimate": "300MiB"})
    make_track(tmp_path / "inbox" / "a.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    assert "memory" in job["error"] and "memory_budget" in job["error"]
    assert job["attempts"] <= 1


def test_memory_budget_lets_one_job_run_at_a_time(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "0.3"
    daemon = make_daemon(workers={"cpu": 2, "memory_budget": "3GiB", "memory_estimate": "2GiB"},
                         profiles={"default": {"model": "slow"}})
    for n in range(2):
        make_track(tmp_path / "inbox" / f"t{n}.wav", 2.0, seed=n)
    seen_waiting = daemon.wait_for(
        lambda: any("waiting for memory" in str(v) for v in
                    (daemon.status() or {}).get("dispatcher", {}).get("waiting", {}).values()),
        timeout=60, what="status to say a job waits for memory")
    assert seen_waiting
    done = daemon.wait_jobs(2, ("done",), timeout=120)
    runs = sorted((j["started_at"], j["finished_at"]) for j in done)
    assert runs[1][0] >= runs[0][1] - 0.5                # never both at once


def test_two_cpu_slots_work_in_parallel(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "0.5"
    daemon = make_daemon(workers={"cpu": 2, "threads": 1}, profiles={"default": {"model": "slow"}})
    for n in range(2):
        make_track(tmp_path / "inbox" / f"p{n}.wav", 3.0, seed=n)
    done = daemon.wait_jobs(2, ("done",), timeout=120)
    (a_start, a_end), (b_start, b_end) = sorted((j["started_at"], j["finished_at"]) for j in done)
    assert b_start < a_end                               # they overlapped
    assert {j["lease_worker"] for j in done} == {None}


def test_cancel_running_and_retry_failed(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_attempts": 1, "job_timeout": 120},
                         profiles={"default": {"model": "hang"}, "ok": {"model": "tiny"}})
    make_track(tmp_path / "inbox" / "stuck.wav", 1.0)
    job = daemon.wait_for(lambda: next((j for j in daemon.jobs() if j["state"] == "running"), None),
                          60, "a running job")
    result = stemd(daemon.config, "cancel", str(job["id"]))
    assert result.returncode == 0, result.stderr
    daemon.wait_jobs(1, ("canceled",), timeout=30)
    result = stemd(daemon.config, "retry", str(job["id"]))
    assert result.returncode == 0, result.stderr
    daemon.wait_for(lambda: daemon.jobs()[0]["state"] in ("queued", "running"), 30, "the retry")
    assert stemd(daemon.config, "cancel", "999").returncode != 0


def test_priorities_order_the_queue(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "1.0"
    daemon = make_daemon(profiles={"default": {"model": "tiny"}, "slow": {"model": "slow"}},
                         intake={"settle_seconds": 0.5, "after_success": "delete"})
    songs = tmp_path / "songs"
    for name in ("blocker", "low", "high", "mid"):
        make_track(songs / f"{name}.wav", 1.0, seed=len(name))
    assert stemd(daemon.config, "submit", str(songs / "blocker.wav"), "--profile", "slow").returncode == 0
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "the blocker")
    for name, priority in (("low", 0), ("high", 9), ("mid", 5)):
        assert stemd(daemon.config, "submit", str(songs / f"{name}.wav"),
                     "--priority", str(priority)).returncode == 0
    done = daemon.wait_jobs(4, ("done",), timeout=120)
    order = [Path(j["input"]).stem for j in sorted(done, key=lambda j: j["started_at"])]
    assert order == ["blocker", "high", "mid", "low"]
    # submitted files are the user's own: kept even with after_success = "delete"
    assert all((songs / f"{n}.wav").exists() for n in ("blocker", "low", "high", "mid"))
