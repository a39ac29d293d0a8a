"""The maintenance scheduler: a real APScheduler with short intervals."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest
from maintkit import HOUR, make_entry

from stemd.config import MaintenanceConfig
from stemd.maintenance.cleanup import MaintenancePaths, list_backups, scheduled_jobs
from stemd.maintenance.scheduler import MaintenanceScheduler
from stemd.jobs.store import Store


class Recorder:
    """A job function that records when it ran and how many copies ran at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.times: list[float] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.times.append(time.monotonic())
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.seconds)
        with self._lock:
            self.active -= 1


Jobs = list[tuple[str, float, Callable[[], None]]]
MakeScheduler = Callable[[Jobs], MaintenanceScheduler]


@pytest.fixture
def make_scheduler() -> Iterator[MakeScheduler]:
    """Schedulers that are shut down after the test, whatever happens."""
    made: list[MaintenanceScheduler] = []

    def make(jobs: Jobs) -> MaintenanceScheduler:
        scheduler = MaintenanceScheduler(jobs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown(wait=True)


def _wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_runs_once_at_start_up_then_at_its_interval(make_scheduler: MakeScheduler) -> None:
    hourly = Recorder()
    scheduler = make_scheduler([("cleanup", HOUR, hourly)])
    assert not scheduler.running() and scheduler.next_runs() == {}
    scheduler.start()
    assert scheduler.running()
    assert _wait_for(lambda: len(hourly.times) == 1)
    assert _wait_for(lambda: "cleanup" in scheduler.last_runs())
    next_run = scheduler.next_runs()["cleanup"]
    expected = datetime.now(timezone.utc) + timedelta(hours=1)
    assert abs((next_run - expected).total_seconds()) < 5
    time.sleep(0.3)
    assert len(hourly.times) == 1
    scheduler.shutdown()
    assert not scheduler.running()


def test_short_interval_repeats(make_scheduler: MakeScheduler) -> None:
    fast = Recorder()
    make_scheduler([("tick", 0.2, fast)]).start()
    time.sleep(1.0)
    assert 3 <= len(fast.times) <= 7
    gaps = [b - a for a, b in zip(fast.times, fast.times[1:])]
    assert all(gap > 0.1 for gap in gaps)


def test_one_instance_at_a_time(make_scheduler: MakeScheduler) -> None:
    slow = Recorder(seconds=0.5)
    make_scheduler([("slow", 0.1, slow)]).start()
    time.sleep(1.3)
    assert slow.most_active == 1
    assert 2 <= len(slow.times) <= 3


def test_missed_runs_are_coalesced_into_one(make_scheduler: MakeScheduler,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    job = Recorder()
    scheduler = make_scheduler([("cleanup", 0.3, job)])
    scheduler.start()
    assert _wait_for(lambda: len(job.times) == 1)
    scheduler.pause()                           # as a suspended machine: about 5 runs are missed
    time.sleep(1.6)
    count, resumed = len(job.times), time.monotonic()
    assert count == 1
    scheduler.resume()
    assert _wait_for(lambda: len(job.times) >= 2)
    assert job.times[1] - resumed < 0.2         # the missed runs: once, at once
    time.sleep(0.5)
    gaps = [b - a for a, b in zip(job.times[1:], job.times[2:])]
    assert all(gap > 0.1 for gap in gaps)       # not five runs back to back
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]


def test_a_failing_job_is_logged_and_runs_again(make_scheduler: MakeScheduler,
                                                caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    def broken() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("disk on fire")

    other = Recorder()
    make_scheduler([("broken", 0.2, broken), ("other", 0.2, other)]).start()
    assert _wait_for(lambda: len(calls) >= 2 and len(other.times) >= 2)
    failures = [r for r in caplog.records if r.name == "stemd.maintenance.scheduler" and r.levelno == logging.ERROR]
    assert failures and "broken" in failures[0].getMessage() and failures[0].exc_info


def test_bad_job_lists_are_refused() -> None:
    with pytest.raises(ValueError):
        MaintenanceScheduler([("a", 0, lambda: None)])
    with pytest.raises(ValueError):
        MaintenanceScheduler([("a", 1, lambda: None), ("a", 2, lambda: None)])


def test_maintenance_jobs_run_at_start_up(make_scheduler: MakeScheduler, paths: MaintenancePaths,
                                          store: Store) -> None:
    """The daemon's wiring: cleanup, backup and the idle-unload hook, on a real scheduler."""
    now = time.time()
    expired = make_entry(paths.cache_dir / "expired", [100], age=100 * HOUR, now=now)
    fresh = make_entry(paths.cache_dir / "fresh", [100], age=HOUR, now=now)
    ticks: list[float] = []
    cfg = MaintenanceConfig.model_validate({"interval": "1h", "backup_interval": "1d"})
    jobs = scheduled_jobs(cfg, paths, store, on_tick=ticks.append, tick_interval=0.2)
    make_scheduler(jobs).start()
    assert _wait_for(lambda: not expired.exists() and len(list_backups(paths.backup_dir)) == 1)
    assert fresh.exists()
    assert _wait_for(lambda: len(ticks) >= 3)
    assert all(abs(tick - time.time()) < 5 for tick in ticks)
