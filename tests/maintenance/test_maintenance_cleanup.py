"""The cleanup pass on real files and a real job store, with a chosen ``now``."""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from maintkit import DAY, HOUR, NOW, make_entry, make_file, set_age

from stemd.config import Config, MaintenanceConfig
from stemd.maintenance.cleanup import (CleanupReport, MaintenancePaths, Removal, format_report, list_backups, maybe_backup, run_cleanup, scheduled_jobs, touch_cache_entry)
from stemd.jobs.store import NewJob, State, Store


def _cfg(**changes: object) -> MaintenanceConfig:
    return MaintenanceConfig.model_validate(changes)


def _add_job(store: Store, state: State = State.QUEUED, now: float = NOW) -> int:
    return store.add_job(NewJob(key=f"k{now}{state}", input="/in/song.flac", profile="default",
                                options={}, state=state), now=now)


def _removed(report: CleanupReport) -> set[Path]:
    return {removal.path for removal in report.removed}


# -- paths -------------------------------------------------------------------------------
def test_paths_from_config(config: Config) -> None:
    paths = MaintenancePaths.from_config(config)
    state = config.state_dir
    assert paths.cache_dir == state / "cache"
    assert paths.staging_dir == config.outbox.path / ".stemd-staging"
    assert paths.work_dir == state / "work"
    assert paths.archive_dir == state / "archive"
    assert paths.failed_dir == state / "failed"
    assert paths.backup_dir == state / "backups"


# -- stem cache ----------------------------------------------------------------------------
def test_cache_ttl_removes_expired_entries_and_keeps_fresh_ones(paths: MaintenancePaths,
                                                               store: Store) -> None:
    fresh = make_entry(paths.cache_dir / ("a" * 64), [1000, 500], age=2 * HOUR)
    expired = make_entry(paths.cache_dir / ("b" * 64), [3000], age=73 * HOUR)
    report = run_cleanup(_cfg(cache_ttl="72h"), paths, store, NOW)
    assert _removed(report) == {expired}
    assert not expired.exists() and (fresh / "stem0.wav").exists()
    assert report.freed == 3000 and report.errors == [] and not report.dry_run
    assert "maintenance.cache_ttl" in report.removed[0].reason


def test_cache_size_cap_evicts_least_recently_used_first(paths: MaintenancePaths,
                                                        store: Store) -> None:
    entries = {age: make_entry(paths.cache_dir / f"e{age}", [1000], age=age * HOUR)
               for age in (10, 20, 30, 40)}
    touch_cache_entry(entries[40], now=NOW - 1 * HOUR)      # served from cache an hour ago
    report = run_cleanup(_cfg(cache_max_size=2500), paths, store, NOW)
    assert _removed(report) == {entries[30], entries[20]}
    assert [r.path for r in report.removed] == [entries[30], entries[20]]   # oldest use first
    assert entries[40].exists() and entries[10].exists()
    assert all("maintenance.cache_max_size" in r.reason for r in report.removed)


def test_cache_entry_being_written_is_left_alone(paths: MaintenancePaths, store: Store) -> None:
    entry = make_entry(paths.cache_dir / "busy", [1000], age=100 * HOUR)
    make_file(entry / "stem1.wav", 1000, age=10)             # written ten seconds ago
    set_age(entry, 100 * HOUR)
    report = run_cleanup(_cfg(cache_ttl="1h", cache_max_size=1), paths, store, NOW)
    assert report.removed == [] and entry.exists()


def test_zero_ttl_and_cap_disable_cache_cleanup(paths: MaintenancePaths, store: Store) -> None:
    entry = make_entry(paths.cache_dir / "old", [1000], age=1000 * DAY)
    report = run_cleanup(_cfg(cache_ttl=0, cache_max_size=0), paths, store, NOW)
    assert report.removed == [] and entry.exists()


# -- staging and work leftovers ----------------------------------------------------------------
def test_staging_and_work_leftovers_of_jobs_no_longer_running(paths: MaintenancePaths,
                                                              store: Store) -> None:
    running, done, queued = _add_job(store), _add_job(store), _add_job(store)
    assert store.claim(running, "boot", 0, "cpu", NOW) and store.claim(done, "boot", 0, "cpu", NOW)
    assert store.finish(done, "boot", "/out/song", NOW)
    keep = [make_entry(paths.staging_dir / f"{running}-1", [100], age=DAY),
            make_entry(paths.work_dir / f"{running}-1", [100], age=DAY),
            make_entry(paths.staging_dir / "not-a-job-folder", [100], age=DAY),
            make_entry(paths.staging_dir / f"{done}-3", [100], age=60)]       # touched a minute ago
    gone = [make_entry(paths.staging_dir / f"{done}-1", [100], age=DAY),
            make_entry(paths.staging_dir / f"{queued}-2", [200], age=DAY),
            make_entry(paths.staging_dir / "999-1", [300], age=DAY),
            make_entry(paths.work_dir / f"{done}-1", [400], age=DAY)]
    report = run_cleanup(_cfg(), paths, store, NOW)
    assert _removed(report) == set(gone)
    assert all(path.exists() for path in keep) and not any(path.exists() for path in gone)
    reasons = {r.path.name: r.reason for r in report.removed}
    assert "job is done" in reasons[f"{done}-1"] and "no longer exists" in reasons["999-1"]
    assert report.freed == 1000


# -- archive and failed retention ------------------------------------------------------------
def test_archive_and_failed_retention(paths: MaintenancePaths, store: Store) -> None:
    old_archived = make_file(paths.archive_dir / "2024" / "old.flac", 5000, age=31 * DAY)
    new_archived = make_file(paths.archive_dir / "2024" / "new.flac", 5000, age=29 * DAY)
    lone = make_file(paths.archive_dir / "2023" / "deep" / "lone.mp3", 700, age=40 * DAY)
    set_age(lone.parent, 40 * DAY)
    set_age(lone.parent.parent, 40 * DAY)
    old_failed = make_file(paths.failed_dir / "bad.wav", 100, age=8 * DAY)
    old_error = make_file(paths.failed_dir / "bad.wav.error.txt", 10, age=8 * DAY)
    new_failed = make_file(paths.failed_dir / "worse.wav", 100, age=6 * DAY)
    report = run_cleanup(_cfg(archive_retention="30d", failed_retention="7d"), paths, store, NOW)
    assert _removed(report) == {old_archived, lone, lone.parent, lone.parent.parent,
                                old_failed, old_error}
    assert new_archived.exists() and new_failed.exists()
    assert paths.archive_dir.is_dir() and paths.failed_dir.is_dir()
    assert not (paths.archive_dir / "2023").exists()
    assert report.freed == 5000 + 700 + 100 + 10


def test_retention_never_sweeps_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = Config.model_validate({"daemon": {"state_dir": state}, "outbox": {"path": tmp_path / "out"},
                                    "intake": {"archive_dir": state}})
    store = Store(config.db_path)
    backup = make_file(state / "backups" / "stemd-20200101-000000.sqlite3", 100, age=400 * DAY)
    set_age(config.db_path, 400 * DAY)
    report = run_cleanup(_cfg(), MaintenancePaths.from_config(config), store, NOW)
    assert report.removed == [] and backup.exists() and config.db_path.exists()
    assert any("intake.archive_dir" in error for error in report.errors)
    store.close()


# -- history and database ----------------------------------------------------------------------
def test_old_job_history_is_deleted(paths: MaintenancePaths, store: Store) -> None:
    old = [_add_job(store, State.DONE, now=NOW - 100 * DAY),
           _add_job(store, State.FAILED, now=NOW - 95 * DAY)]
    recent = _add_job(store, State.DONE, now=NOW - 10 * DAY)
    ancient_queued = _add_job(store, State.QUEUED, now=NOW - 200 * DAY)
    report = run_cleanup(_cfg(history_retention="90d"), paths, store, NOW)
    assert [store.get(job_id) for job_id in old] == [None, None]
    assert store.get(recent) is not None and store.get(ancient_queued) is not None
    assert len(report.removed) == 1 and "2 finished job(s)" in report.removed[0].reason


def test_pass_checkpoints_the_wal(paths: MaintenancePaths, store: Store) -> None:
    for _ in range(50):
        _add_job(store)
    wal = Path(f"{store.path}-wal")
    before = wal.stat().st_size
    run_cleanup(_cfg(), paths, store, NOW)
    assert wal.stat().st_size < before / 4      # truncated (PRAGMA optimize may write a page or two)
    assert len(store.jobs()) == 50


# -- dry run ---------------------------------------------------------------------------------
def _populate(paths: MaintenancePaths, store: Store) -> None:
    make_entry(paths.cache_dir / "expired", [1000], age=100 * HOUR)
    make_entry(paths.cache_dir / "fresh", [1000], age=HOUR)
    make_entry(paths.staging_dir / "999-1", [100], age=DAY)
    make_file(paths.archive_dir / "x" / "old.flac", 10, age=40 * DAY)
    set_age(paths.archive_dir / "x", 40 * DAY)
    make_file(paths.failed_dir / "old.wav", 10, age=40 * DAY)
    _add_job(store, State.DONE, now=NOW - 100 * DAY)


def test_dry_run_lists_the_same_entries_and_removes_nothing(paths: MaintenancePaths,
                                                           store: Store,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    _populate(paths, store)
    caplog.set_level(logging.INFO, logger="stemd.maintenance")
    dry = run_cleanup(_cfg(), paths, store, NOW, dry_run=True)
    assert dry.dry_run and len(dry.removed) == 6 and all(r.path.exists() for r in dry.removed)
    assert len(store.jobs()) == 1
    assert sum("Would remove" in record.getMessage() for record in caplog.records) == 6
    real = run_cleanup(_cfg(), paths, store, NOW)
    assert real.removed == dry.removed and real.freed == dry.freed
    assert not any(r.path.exists() for r in real.removed if r.path != store.path)
    assert store.jobs() == []
    lines = format_report(dry)
    assert lines[0].startswith("would remove ") and "would be freed" in lines[-1]
    assert format_report(real)[-1] == f"6 item(s), {real.freed / 1024:.1f} KiB freed"


# -- errors ----------------------------------------------------------------------------------
def test_errors_are_collected_not_raised(paths: MaintenancePaths, store: Store) -> None:
    paths.cache_dir.parent.mkdir(parents=True, exist_ok=True)
    paths.cache_dir.write_text("not a folder")
    leftover = make_entry(paths.staging_dir / "999-1", [100], age=DAY)
    report = run_cleanup(_cfg(), paths, store, NOW)
    assert any(str(paths.cache_dir) in error for error in report.errors)
    assert _removed(report) == {leftover}


@contextmanager
def _undeletable(entry: Path) -> Iterator[None]:
    """Make ``entry``'s file undeletable: a read-only folder, or (as root) an immutable file."""
    if os.geteuid() != 0:
        os.chmod(entry, 0o500)
        try:
            yield
        finally:
            os.chmod(entry, 0o700)
        return
    chattr, target = shutil.which("chattr"), str(entry / "stem0.wav")
    if chattr is None or subprocess.run([chattr, "+i", target], capture_output=True).returncode:
        pytest.skip("cannot make a file undeletable here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", target], check=True)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permission_denied_is_collected(paths: MaintenancePaths, store: Store) -> None:
    locked = make_entry(paths.cache_dir / "locked", [100], age=100 * HOUR)
    other = make_entry(paths.cache_dir / "other", [100], age=100 * HOUR)
    with _undeletable(locked):
        report = run_cleanup(_cfg(), paths, store, NOW)
    assert _removed(report) == {other} and (locked / "stem0.wav").exists()
    assert len(report.errors) == 1 and report.errors[0].startswith(f"cannot remove {locked}")


# -- backup -----------------------------------------------------------------------------------
def test_backup_every_interval_keeping_the_last_three(paths: MaintenancePaths, store: Store) -> None:
    _add_job(store)
    cfg = _cfg(backup_interval="1d")
    first = maybe_backup(store, paths, cfg, NOW)
    assert first is not None and first.name == "stemd-20250615-150640.sqlite3"
    with sqlite3.connect(first) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    assert maybe_backup(store, paths, cfg, NOW + HOUR) is None
    made = [maybe_backup(store, paths, cfg, NOW + day * DAY) for day in (1, 2, 3, 4)]
    assert [path for _, path in list_backups(paths.backup_dir)] == made[1:]
    assert maybe_backup(store, paths, _cfg(backup_interval=0), NOW + 10 * DAY) is None


def test_scheduled_jobs_list(paths: MaintenancePaths, store: Store,
                             caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[float] = []
    with caplog.at_level("INFO"):
        jobs = scheduled_jobs(_cfg(interval="1h", backup_interval="1d"), paths, store,
                              on_tick=ticks.append, tick_interval=15)
    assert [(name, interval) for name, interval, _ in jobs] == [
        ("cleanup", 3600.0), ("backup-check", 3600.0), ("idle-unload", 15.0)]
    # the log says how often a backup is made, not how often it is looked for
    assert "Database backup every 24h" in caplog.text and "checked every 1h" in caplog.text
    jobs[2][2]()
    assert len(ticks) == 1 and isinstance(ticks[0], float)
    assert scheduled_jobs(_cfg(interval=0, backup_interval=0), paths, store) == []


def test_removal_is_a_value() -> None:
    removal = Removal(Path("x"), "why", 1)
    with pytest.raises(AttributeError):
        removal.size = 2  # type: ignore[misc]
