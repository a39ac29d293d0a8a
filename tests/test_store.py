"""The job store on real SQLite files: compare-and-set transitions, schema versions."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from stemd.errors import StoreError
from stemd.jobs.store import SCHEMA_VERSION, NewJob, State, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "jobs.sqlite3")


def _job(store: Store, name: str = "a.wav", **kw) -> int:
    return store.add_job(NewJob(key=f"key-{name}", input=f"/in/{name}", profile="default",
                                options={"model": "tiny"}, **kw))


def test_wal_busy_timeout_and_schema_version(store: Store) -> None:
    conn = sqlite3.connect(str(store.path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.db.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_reopening_keeps_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = Store(path)
    job = _job(first)
    assert Store(path).get(job).state == State.QUEUED


def test_claim_is_compare_and_set_even_across_threads(store: Store) -> None:
    job = _job(store)
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda n=n: wins.append(store.claim(job, f"boot{n}", n, "cpu", 1.0)))
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    claimed = store.get(job)
    assert claimed.state == State.RUNNING and claimed.attempts == 1


def test_only_the_lease_holder_can_finish(store: Store) -> None:
    job = _job(store)
    assert store.claim(job, "boot-a", 0, "cpu", 1.0)
    assert not store.finish(job, "boot-b", "/out/a", 2.0)
    assert store.finish(job, "boot-a", "/out/a", 2.0)
    assert not store.finish(job, "boot-a", "/out/a", 3.0)          # already done
    assert store.get(job).state == State.DONE


def test_failed_attempts_back_off_then_fail_for_good_with_each_reason(store: Store) -> None:
    job = _job(store)
    for attempt in (1, 2, 3):
        assert store.claim(job, "b", 0, "cpu", 100.0 * attempt)
        state = store.fail_attempt(job, "b", f"reason {attempt}", "crash", False, 100.0 * attempt,
                                   max_attempts=3, backoff=10.0)
        if attempt < 3:
            assert state == State.QUEUED
            assert store.get(job).not_before == 100.0 * attempt + 10.0 * 2 ** (attempt - 1)
    final = store.get(job)
    assert final.state == State.FAILED and final.attempts == 3
    assert [h["reason"] for h in final.history] == ["reason 1", "reason 2", "reason 3"]


def test_permanent_failure_fails_at_once(store: Store) -> None:
    job = _job(store)
    store.claim(job, "b", 0, "cpu", 1.0)
    assert store.fail_attempt(job, "b", "not audio", "input", True, 1.0, 5, 1.0) == State.FAILED


def test_stale_leases_and_requeue_without_counting(store: Store) -> None:
    job = _job(store)
    store.claim(job, "old-boot", 0, "cpu", 1.0)
    assert [j.id for j in store.stale_running("new-boot")] == [job]
    assert store.stale_running("old-boot") == []
    assert store.requeue(job, "old-boot", 2.0, "shutting down")
    requeued = store.get(job)
    assert requeued.state == State.QUEUED and requeued.attempts == 0


def test_cancel_and_retry(store: Store) -> None:
    queued, running = _job(store, "q.wav"), _job(store, "r.wav")
    store.claim(running, "b", 0, "cpu", 1.0)
    assert store.cancel(queued, 2.0, boot=None) and store.get(queued).state == State.CANCELED
    assert not store.cancel(running, 2.0, boot=None)         # running: by its lease holder only
    assert store.request_cancel(running, 2.0) and store.get(running).cancel_requested
    assert store.retry(queued, 3.0) and store.get(queued).state == State.QUEUED
    assert not store.retry(running, 3.0)                              # only failed/canceled


def test_runnable_orders_by_priority_then_age_and_respects_not_before(store: Store) -> None:
    low = _job(store, "low.wav", priority=0)
    high = _job(store, "high.wav", priority=5)
    later = _job(store, "later.wav", priority=9)
    store.claim(later, "b", 0, "cpu", 1.0)
    store.fail_attempt(later, "b", "x", "crash", False, 10.0, 3, 100.0)   # not before 110
    assert [j.id for j in store.runnable(50.0)] == [high, low]
    assert [j.id for j in store.runnable(200.0)] == [later, high, low]


def test_requests_are_taken_once(store: Store) -> None:
    store.add_request("cancel", 3)
    store.add_request("submit", None, {"path": "/x.wav"})
    taken = store.take_requests()
    assert [(r.kind, r.job_id) for r in taken] == [("cancel", 3), ("submit", None)]
    assert store.take_requests() == []


def test_backup_is_a_readable_copy(store: Store, tmp_path: Path) -> None:
    job = _job(store)
    store.backup(tmp_path / "backup.sqlite3")
    assert Store(tmp_path / "backup.sqlite3").get(job).input == "/in/a.wav"
