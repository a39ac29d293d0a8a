"""Run the real ``stemd`` daemon as a subprocess against a config written by a test."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """Write a TOML config from nested dicts; ``inbox`` is a list of tables."""
    lines: list[str] = []
    for name, body in sections.items():
        if name == "inbox":
            for inbox in body:
                lines.append("[[inbox]]")
                subfolders = inbox.get("subfolders")
                lines += [f"{k} = {toml_value(v)}" for k, v in inbox.items() if k != "subfolders"]
                if subfolders:
                    lines.append("[inbox.subfolders]")
                    lines += [f"{k} = {toml_value(v)}" for k, v in subfolders.items()]
            continue
        if name == "notify":
            for entry in body:
                lines.append("[[notify]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in entry.items() if k != "headers"]
                if entry.get("headers"):
                    lines.append("[notify.headers]")
                    lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in entry["headers"].items()]
            continue
        if name == "profiles":
            for profile, options in body.items():
                lines.append(f"[profiles.{profile}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def env_for_tests(hf_cache: Optional[Path] = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if hf_cache is not None:
        env["HF_HUB_CACHE"] = str(hf_cache)
    env.pop("NOTIFY_SOCKET", None)
    for name in ("INVOCATION_ID", "JOURNAL_STREAM"):   # not under systemd: stemd keeps its log file
        env.pop(name, None)
    return env


def stemd(config: Path, *args: str, env: Optional[dict[str, str]] = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one ``stemd`` CLI command to completion."""
    return subprocess.run([sys.executable, "-m", "stemd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env or env_for_tests(), cwd=str(ROOT))


class DaemonProcess:
    """``stemd run`` in the background, with helpers to wait on the job database."""

    def __init__(self, config: Path, state_dir: Path, env: Optional[dict[str, str]] = None,
                 log: Optional[Path] = None, log_format: str = "text") -> None:
        self.config = config
        self.log_format = log_format
        self.state_dir = state_dir
        self.env = env or env_for_tests()
        self.log_path = log or state_dir.parent / "daemon.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, wait_ready: bool = True) -> "DaemonProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stemd", "--config", str(self.config), "run",
             "--log-format", self.log_format], stdout=handle, stderr=subprocess.STDOUT, env=self.env,
            cwd=str(ROOT), start_new_session=True)
        handle.close()
        if wait_ready:
            self.wait_for(lambda: self.status() is not None and self.status().get("pid") == self.proc.pid,
                          timeout=60, what="the daemon to start")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> Optional[dict[str, Any]]:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def jobs(self) -> list[dict[str, Any]]:
        db = self.state_dir / "stemd.sqlite3"
        if not db.exists():
            return []
        conn = sqlite3.connect(str(db), timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
            return [dict(row) for row in rows]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_for(self, condition: Callable[[], Any], timeout: float = 60, what: str = "a condition",
                 interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"stemd exited ({self.proc.returncode}) while waiting for "
                                     f"{what}.\n--- log ---\n{self.log()[-6000:]}")
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}.\n"
                             f"jobs: {self.jobs()}\n--- log ---\n{self.log()[-6000:]}")

    def wait_jobs(self, count: int, states: tuple[str, ...] = ("done",), timeout: float = 120) -> list[dict[str, Any]]:
        def ready() -> Optional[list[dict[str, Any]]]:
            jobs = [j for j in self.jobs() if j["state"] in states]
            return jobs if len(jobs) >= count else None
        return self.wait_for(ready, timeout, f"{count} job(s) in state {states}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def worker_pids(daemon_pid: int) -> list[int]:
    import psutil
    try:
        return [p.pid for p in psutil.Process(daemon_pid).children(recursive=True)]
    except psutil.Error:
        return []


def stemd_processes(config: Path) -> list[int]:
    """Every process (daemon or worker) started for this config."""
    import psutil
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if str(config) in cmd or "stemd.worker" in cmd and "multiprocessing" in cmd:
            found.append(proc.info["pid"])
    return found


def base_config(tmp: Path, model_repo: Path, **overrides: Any) -> dict[str, Any]:
    """A config for tests: one CPU slot, tiny model, short settle time."""
    config: dict[str, Any] = {
        "daemon": {"state_dir": str(tmp / "state"), "shutdown_grace": 20},
        "inbox": [{"path": str(tmp / "inbox"), "profile": "default"}],
        "outbox": {"path": str(tmp / "outbox")},
        "intake": {"settle_seconds": 0.5, "rescan_interval": 2, "poll_interval": 0.5},
        "models": {"repo": str(model_repo), "offline": True},
        "workers": {"gpu": 0, "cpu": 1, "threads": 1, "retry_backoff": 0.5,
                    "memory_reserve": "64MiB", "memory_estimate": "512MiB"},
        "maintenance": {"min_free": "10MiB"},
        "profiles": {"default": {"model": "tiny"}},
        # the web server is tested in tests/web; elsewhere it stays off (start-up time), and
        # when a test turns it on it takes any free port: daemons run side by side
        "web": {"enabled": False, "listen": "127.0.0.1:0"},
        # torch starts at once; tests/daemon/test_engine_backend.py runs auto (ONNX Runtime)
        "engine": {"backend": "torch"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def dispatcher_with_one_job(tmp_path: Path, model_repo: Path, model: str,
                            gpus: list[str]) -> tuple[Any, Any, int]:
    """The real dispatcher and its worker processes, without a daemon: slots for ``gpus``
    plus one CPU slot, and one queued job of a 1 s track separated with ``model``."""
    from audio import make_track
    from stemd.config import parse_config
    from stemd.dispatch.dispatcher import DispatchSettings, Dispatcher
    from stemd.jobs.store import NewJob, Store
    config = parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                           "outbox": {"path": str(tmp_path / "out")},
                           "models": {"repo": str(model_repo), "offline": True},
                           "workers": {"retry_backoff": 0, "max_attempts": 3, "threads": 1},
                           "profiles": {"default": {"model": model}}}, tmp_path / "x.toml")
    track = make_track(tmp_path / "in" / "song.wav", 1.0)
    store = Store(config.db_path)
    job_id = store.add_job(NewJob(key="k", input=str(track), profile="default", source="submit",
                                  options={"model": model, "device": "auto"}, duration=1.0))
    dispatcher = Dispatcher(store, DispatchSettings.from_config(config), "boot", gpus, 1, 1)
    return store, dispatcher, job_id


def step_until(dispatcher: Any, done: Callable[[], bool], timeout: float = 120.0) -> None:
    """Drive ``dispatcher.loop`` until ``done()`` or the timeout."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        dispatcher.loop(timeout=0.2)
