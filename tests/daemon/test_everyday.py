"""The everyday commands against a real daemon: logs, reload, dismiss, status, stop."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from audio import make_track
from daemon_harness import ROOT, DaemonProcess, base_config, env_for_tests, stemd, write_config


def _env() -> dict[str, str]:
    env = env_for_tests()
    for name in ("INVOCATION_ID", "JOURNAL_STREAM", "XPC_SERVICE_NAME"):
        env.pop(name, None)                  # not under systemd or launchd: the log file
    return env


def _read_until(proc: "subprocess.Popen[str]", words: str, timeout: float) -> str:
    """What ``proc`` printed until a line holds ``words`` (or the time is up)."""
    import select
    seen, deadline = "", time.monotonic() + timeout
    assert proc.stdout is not None
    while words not in seen and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            seen += proc.stdout.readline()
    return seen


def _daemon(tmp_path: Path, model_repo: Path, **overrides: object) -> DaemonProcess:
    config = write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo, **overrides))
    for folder in ("inbox", "outbox"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return DaemonProcess(config, tmp_path / "state", _env()).start()


def test_logs_reload_dismiss_and_stop(tmp_path: Path, model_repo: Path) -> None:
    daemon = _daemon(tmp_path, model_repo)
    config, env = daemon.config, _env()
    try:
        shutil.copy(make_track(tmp_path / "src" / "a.wav", 1.0), tmp_path / "inbox" / "a.wav")
        (tmp_path / "inbox" / "bad.wav").write_bytes(b"RIFF not really a wav file" * 10)
        daemon.wait_jobs(1, ("done",), timeout=120)
        failed = daemon.wait_jobs(1, ("failed",), timeout=60)[0]

        log = stemd(config, "logs", env=env)
        assert log.returncode == 0 and "config read from" in log.stdout
        done = next(j for j in daemon.jobs() if j["state"] == "done")
        only = stemd(config, "logs", "--job", str(done["id"]), env=env).stdout.splitlines()
        assert only and all(f"job {done['id']}" in l or f"job={done['id']}" in l for l in only), only

        follow = subprocess.Popen([sys.executable, "-m", "stemd", "--config", str(config), "logs",
                                   "-f", "-n", "0"], stdout=subprocess.PIPE, text=True, env=env,
                                  cwd=str(ROOT))
        try:
            time.sleep(2)
            reloaded = stemd(config, "reload", env=env)
            assert reloaded.returncode == 0 and str(config) in reloaded.stdout
            assert "config reloaded from" in _read_until(follow, "config reloaded from", 30)
        finally:
            follow.kill()
            follow.wait()

        status = stemd(config, "status", env=env).stdout
        assert f"job {failed['id']:>5} bad.wav" in status and "stemd dismiss" in status
        assert f"inbox {tmp_path / 'inbox'}: watched" in status
        assert stemd(config, "dismiss", str(failed["id"]), env=env).returncode == 0
        assert "bad.wav" not in stemd(config, "status", env=env).stdout
        assert stemd(config, "dismiss", "--all-failed", env=env).returncode == 0

        stopped = stemd(config, "stop", env=env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert daemon.wait_exit(10) == 0
        assert "not running" in stemd(config, "stop", env=env).stdout
    finally:
        daemon.stop()


def test_status_shows_the_track_and_time_left_and_what_a_second_ctrl_c_does(
        tmp_path: Path, model_repo: Path) -> None:
    daemon = _daemon(tmp_path, model_repo, profiles={"default": {"model": "slow"}},
                     daemon={"state_dir": str(tmp_path / "state"), "shutdown_grace": 120})
    daemon.env["STEMD_TEST_SLOW"] = "0.5"
    try:
        shutil.copy(make_track(tmp_path / "src" / "a.wav", 8.0), tmp_path / "inbox" / "Long Song.wav")

        def eta_shown() -> str:
            text = stemd(daemon.config, "status", env=_env()).stdout
            return text if "Long Song.wav" in text and "ETA" in text else ""
        shown = daemon.wait_for(eta_shown, 120, "the track and its ETA in stemd status")
        assert "job" in shown and "%" in shown

        daemon.signal(signal.SIGINT)
        daemon.wait_for(lambda: "Ctrl-C again" in daemon.log(), 30, "the second Ctrl-C note")
        stopping = daemon.wait_for(lambda: "STOPPING" in stemd(daemon.config, "status", env=_env()).stdout
                                   and stemd(daemon.config, "status", env=_env()).stdout, 30, "STOPPING")
        assert "second Ctrl-C" in stopping
        daemon.signal(signal.SIGINT)
        assert daemon.wait_exit(30) == 0
        assert "second stop signal" in daemon.log()
    finally:
        daemon.stop()
