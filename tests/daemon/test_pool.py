"""The slot pool and the dispatcher step with real worker processes: dead idle workers,
prewarming after an idle unload, wall-clock steps, and status reads from another thread."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from audio import make_track
from stemd.config import Config, parse_config
from stemd.dispatch.dispatcher import DispatchSettings, Dispatcher
from stemd.jobs.store import NewJob, Store


def _config(tmp_path: Path, model_repo: Path, **workers: Any) -> Config:
    return parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                         "outbox": {"path": str(tmp_path / "out")},
                         "models": {"repo": str(model_repo), "offline": True},
                         "workers": {"retry_backoff": 0, "threads": 1, **workers},
                         "profiles": {"default": {"model": "tiny"}}}, tmp_path / "x.toml")


def _dispatcher(config: Config) -> Dispatcher:
    return Dispatcher(Store(config.db_path), DispatchSettings.from_config(config), "boot", [], 1, 1)


def _step_until(dispatcher: Dispatcher, condition: Callable[[], bool], timeout: float,
                what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        dispatcher.loop(timeout=0.1)


def _add_job(store: Store, track: Path, model: str = "tiny") -> int:
    return store.add_job(NewJob(key=track.name, input=str(track), profile="default",
                                source="submit", options={"model": model, "device": "auto"},
                                duration=1.0))


def _wait_dead(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(") ")[-1].startswith("Z"):
                    return                      # a zombie: dead, not reaped yet
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not die")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_idle_worker_killed_does_not_make_the_dispatcher_spin(tmp_path, model_repo):
    config = _config(tmp_path, model_repo)
    dispatcher = _dispatcher(config)
    try:
        dispatcher.prewarm("tiny", "cpu")              # a worker starts and waits, idle
        slot = dispatcher.slots[0]
        pid = slot.process.pid
        os.kill(pid, signal.SIGKILL)                   # the OOM killer, say
        _wait_dead(pid)
        steps, end = 0, time.monotonic() + 1.0
        while time.monotonic() < end:
            dispatcher.loop(timeout=0.1)               # each step waits for messages
            steps += 1
        assert steps <= 20, f"{steps} dispatcher steps in one second: it spins"
        assert not dispatcher.slots[0].alive()
        job_id = _add_job(dispatcher.store, make_track(tmp_path / "in" / "a.wav", 1.0))
        _step_until(dispatcher, lambda: dispatcher.store.get(job_id).state.value == "done",
                    120, "the next job on a fresh worker")
    finally:
        dispatcher.stop_all("test over")


def test_prewarm_loads_the_model_again_after_an_idle_unload(tmp_path, model_repo, caplog,
                                                            capfd):
    caplog.set_level(logging.INFO)
    seen: list[str] = []

    def log_text() -> str:
        seen.append(capfd.readouterr().err)            # a worker writing to its own stderr
        return caplog.text + "".join(seen)

    config = _config(tmp_path, model_repo, idle_unload=1.0)
    dispatcher = _dispatcher(config)
    try:
        dispatcher.prewarm("tiny", "cpu")
        _step_until(dispatcher, lambda: "unloading model tiny" in log_text(), 90,
                    "the idle unload")
        deadline = time.monotonic() + 90               # another file settles: the daemon
        while log_text().count("loading model tiny on cpu") < 2:   # asks on every step
            assert time.monotonic() < deadline, "the model was not loaded again"
            dispatcher.prewarm("tiny", "cpu")
            dispatcher.loop(timeout=0.1)
    finally:
        dispatcher.stop_all("test over")


def test_a_wall_clock_step_does_not_stop_a_running_job(tmp_path, model_repo, monkeypatch):
    """An NTP step or a laptop waking up moves the wall clock by hours: intervals
    (deadline, stall) must not see it. The step is made to the process's clock."""
    monkeypatch.setenv("STEMD_TEST_SLOW", "0.3")
    config = _config(tmp_path, model_repo, stall_timeout=600, job_timeout=600, max_attempts=1)
    dispatcher = _dispatcher(config)
    store = dispatcher.store
    job_id = _add_job(store, make_track(tmp_path / "in" / "a.wav", 2.0), model="slow")
    try:
        _step_until(dispatcher, lambda: store.get(job_id).progress > 0, 120, "the job to run")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 2 * 86400)   # two days later
        _step_until(dispatcher, lambda: store.get(job_id).state.value != "running", 120,
                    "the job to end")
    finally:
        dispatcher.stop_all("test over")
    job = store.get(job_id)
    assert job.state.value == "done", job.error


def test_status_reads_from_another_thread_meet_no_closing_process(tmp_path):
    """The main thread writes the status (snapshot, health) while the dispatcher thread
    ends workers: no read may fail on a process being closed."""
    config = parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                           "outbox": {"path": str(tmp_path / "out")}}, tmp_path / "x.toml")
    dispatcher = _dispatcher(config)
    slot = dispatcher.slots[0]
    fork = multiprocessing.get_context("fork")
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_status() -> None:
        while not stop.is_set():
            try:
                dispatcher.snapshot()
                dispatcher.healthy()
                slot.alive()
            except Exception as exc:                   # what ended Daemon.run
                errors.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read_status)
    reader.start()
    try:
        for _ in range(300):
            if errors:
                break
            process = fork.Process(target=time.sleep, args=(30,))
            process.start()
            slot.process = process                     # what Slot.start does
            slot.kill(grace=5)                         # what the dispatcher thread does
    finally:
        stop.set()
        reader.join(10)
        sys.setswitchinterval(interval)
    assert errors == []
