"""Maintenance: one cleanup pass, the database backup, and the jobs the scheduler runs.

A pass first plans what to remove, then removes it (or, in a dry run, only lists it):

- stem cache entries not used for ``maintenance.cache_ttl``, then the least recently used
  ones until the cache fits ``maintenance.cache_max_size``;
- staging and work folders (``<job_id>-<attempt>``) of jobs that are no longer running;
- archived and failed inputs older than ``archive_retention`` / ``failed_retention``, and
  the subfolders they leave empty;
- job history older than ``history_retention``; then a WAL checkpoint and ``PRAGMA optimize``.

Every removal is logged with its reason. Errors (permission denied, files that vanished)
are collected in the report, never raised. Passes take ``now`` so tests choose the time.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

from stemd.config import Config, MaintenanceConfig
from stemd.errors import StemdError
from stemd.jobs.store import State, Store
from stemd.units import duration_text, format_duration, format_size

log = logging.getLogger(__name__)

IN_USE_GRACE = 300.0        # seconds: anything touched this recently is left alone
BACKUPS_KEPT = 3
BACKUP_PREFIX = "stemd-"
BACKUP_SUFFIX = ".sqlite3"
_BACKUP_STAMP = "%Y%m%d-%H%M%S"
_ATTEMPT_DIR = re.compile(r"^(\d+)-(\d+)$")

ScheduledJob = tuple[str, float, Callable[[], None]]


@dataclass(frozen=True)
class Removal:
    path: Path
    reason: str
    size: int


@dataclass(frozen=True)
class CleanupReport:
    removed: list[Removal]
    freed: int
    dry_run: bool
    errors: list[str]


@dataclass(frozen=True)
class MaintenancePaths:
    cache_dir: Path
    staging_dir: Path
    work_dir: Path
    archive_dir: Path
    failed_dir: Path
    backup_dir: Path

    @classmethod
    def from_config(cls, config: Config) -> "MaintenancePaths":
        return cls(cache_dir=config.cache_dir, staging_dir=config.staging_dir,
                   work_dir=config.state_dir / "work", archive_dir=config.archive_dir,
                   failed_dir=config.failed_dir, backup_dir=config.state_dir / "backups")

    def protected(self) -> list[Path]:
        """Folders a retention pass must never sweep (state dir, outbox, their contents)."""
        return [self.cache_dir.parent, self.staging_dir.parent, self.work_dir, self.backup_dir]


@dataclass(frozen=True)
class _Planned:
    removal: Removal
    tree: bool = True                                   # False: only an empty folder or a file
    still_wanted: Optional[Callable[[], bool]] = None   # re-checked just before removing


@dataclass(frozen=True)
class _Retention:
    kind: str          # "archive" | "failed": names the config keys
    label: str         # what the files are, in words


@dataclass(frozen=True)
class _Entry:
    path: Path
    mtime: float      # of the entry itself (lstat)
    newest: float     # newest mtime anywhere inside it
    size: int
    is_dir: bool


# -- the pass ------------------------------------------------------------------------------
def run_cleanup(cfg: MaintenanceConfig, paths: MaintenancePaths, store: Store, now: float,
                dry_run: bool = False) -> CleanupReport:
    """One maintenance pass; with ``dry_run`` nothing is removed and the same entries listed."""
    errors: list[str] = []
    plan = [*plan_cache(cfg, paths.cache_dir, now, errors),
            *plan_leftovers(paths, store, now, errors),
            *plan_retention(paths.archive_dir, cfg.archive_retention, _ARCHIVE, paths, now, errors),
            *plan_retention(paths.failed_dir, cfg.failed_retention, _FAILED, paths, now, errors)]
    removed = [item.removal for item in plan if _apply(item, dry_run, errors)]
    removed += _history(cfg, store, now, dry_run, errors)
    if not dry_run:
        _checkpoint(store, errors)
    report = CleanupReport(removed=removed, freed=sum(r.size for r in removed),
                           dry_run=dry_run, errors=errors)
    log.log(logging.INFO if removed or errors else logging.DEBUG,
            "Cleanup%s: %d removed, %s freed, %d error(s).", " (dry run)" if dry_run else "",
            len(removed), format_size(report.freed), len(errors))
    return report


def format_report(report: CleanupReport) -> list[str]:
    """Lines for ``stemd cleanup``: each removal, the total, then each error."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [f"{verb} {r.path} ({format_size(r.size)}): {r.reason}" for r in report.removed]
    lines.append(f"{len(report.removed)} item(s), {format_size(report.freed)} "
                 f"{'would be ' if report.dry_run else ''}freed")
    lines += [f"error: {error}" for error in report.errors]
    return lines


# -- stem cache ------------------------------------------------------------------------------
def plan_cache(cfg: MaintenanceConfig, cache_dir: Path, now: float,
               errors: list[str]) -> list[_Planned]:
    """Expired entries (by last use = mtime), then least recently used ones over the cap."""
    entries = sorted(_entries(cache_dir, errors), key=lambda e: e.mtime)
    idle = [e for e in entries if e.newest < now - IN_USE_GRACE]
    expired = [e for e in idle if cfg.cache_ttl > 0 and e.mtime < now - cfg.cache_ttl]
    plan = [_planned(e, f"stem cache entry not used for {_age(now, e.mtime)} "
                        f"(maintenance.cache_ttl {_span(cfg.cache_ttl)})")
            for e in expired]
    total = sum(e.size for e in entries) - sum(e.size for e in expired)
    gone = {e.path for e in expired}
    for entry in (e for e in idle if e.path not in gone):
        if cfg.cache_max_size <= 0 or total <= cfg.cache_max_size:
            break
        plan.append(_planned(entry, f"stem cache over maintenance.cache_max_size "
                                    f"({format_size(total)} > {format_size(cfg.cache_max_size)}); "
                                    f"least recently used, {_age(now, entry.mtime)} ago"))
        total -= entry.size
    return plan


def touch_cache_entry(path: Path, now: Optional[float] = None) -> None:
    """Mark a cache entry as used now (its mtime is its last use)."""
    stamp = time.time() if now is None else now
    os.utime(path, (stamp, stamp))


# -- staging and work folders --------------------------------------------------------------
def plan_leftovers(paths: MaintenancePaths, store: Store, now: float,
                   errors: list[str]) -> list[_Planned]:
    """``<job_id>-<attempt>`` folders in staging and work whose job is not running."""
    try:
        running = {job.id for job in store.running()}
    except (sqlite3.Error, StemdError) as exc:
        errors.append(f"staging not checked: cannot read running jobs: {exc}")
        return []
    plan: list[_Planned] = []
    for root, what in ((paths.staging_dir, "staging"), (paths.work_dir, "work folder")):
        for entry in _entries(root, errors):
            try:
                item = _leftover(entry, what, running, store, now)
            except (sqlite3.Error, StemdError) as exc:
                errors.append(f"{entry.path} not checked: cannot read its job: {exc}")
                continue
            if item is not None:
                plan.append(item)
    return plan


def _leftover(entry: _Entry, what: str, running: set[int], store: Store,
              now: float) -> Optional[_Planned]:
    match = _ATTEMPT_DIR.match(entry.path.name)
    if match is None or int(match.group(1)) in running or entry.newest >= now - IN_USE_GRACE:
        return None
    job_id, attempt = int(match.group(1)), int(match.group(2))
    state = _job_state(store, job_id)
    why = "the job no longer exists" if state is None else f"the job is {state.value}"
    removal = Removal(entry.path, f"{what} leftover of job {job_id} attempt {attempt} ({why})",
                      entry.size)
    return _Planned(removal, still_wanted=lambda: _job_state(store, job_id) != State.RUNNING)


def _job_state(store: Store, job_id: int) -> Optional[State]:
    job = store.get(job_id)
    return None if job is None else job.state


# -- archive and failed retention ----------------------------------------------------------
_ARCHIVE = _Retention("archive", "archived input")
_FAILED = _Retention("failed", "failed input")


def plan_retention(root: Path, retention: float, spec: _Retention, paths: MaintenancePaths,
                   now: float, errors: list[str]) -> list[_Planned]:
    """Files older than ``retention`` under ``root``, then the subfolders that they empty."""
    if retention <= 0 or not root.exists():
        return []
    unsafe = [p for p in paths.protected() if _contains(root, p)]
    if unsafe:
        errors.append(f"{root} not cleaned: it holds {unsafe[0]}, which stemd needs; "
                      f"point intake.{spec.kind}_dir at a folder of its own")
        return []
    plan: list[_Planned] = []
    reason = (f"{spec.label} older than {_span(retention)} "
              f"(maintenance.{spec.kind}_retention)")
    _sweep(root, now - retention, now, reason, plan, errors)
    return plan


def _sweep(folder: Path, cutoff: float, now: float, reason: str, plan: list[_Planned],
           errors: list[str]) -> bool:
    """Plan removals under ``folder``; True when everything in it is planned for removal."""
    emptied = True
    for entry in _entries(folder, errors, deep=False):
        if entry.is_dir:
            if _sweep(entry.path, cutoff, now, reason, plan, errors) and entry.mtime < now - IN_USE_GRACE:
                plan.append(_Planned(Removal(entry.path, f"emptied folder ({reason})", 0), tree=False))
                continue
        elif entry.mtime < cutoff:
            plan.append(_Planned(Removal(entry.path, f"{reason}, {_age(now, entry.mtime)} old",
                                         entry.size), tree=False))
            continue
        emptied = False
    return emptied


def _contains(root: Path, path: Path) -> bool:
    root, path = root.resolve(), path.resolve()
    return root == path or root in path.parents


# -- history and database --------------------------------------------------------------------
def _history(cfg: MaintenanceConfig, store: Store, now: float, dry_run: bool,
             errors: list[str]) -> list[Removal]:
    if cfg.history_retention <= 0:
        return []
    cutoff = now - cfg.history_retention
    try:
        count = store.count_finished_before(cutoff) if dry_run else store.delete_finished_before(cutoff)
    except (sqlite3.Error, StemdError) as exc:
        errors.append(f"job history not pruned: {exc}")
        return []
    if not count:
        return []
    reason = (f"job history: {count} finished job(s) older than "
              f"{_span(cfg.history_retention)} (maintenance.history_retention)")
    log.info("%s %s: %s", "Would remove" if dry_run else "Removed", store.path, reason)
    return [Removal(store.path, reason, 0)]


def _checkpoint(store: Store, errors: list[str]) -> None:
    try:
        truncated = store.checkpoint()
    except (sqlite3.Error, StemdError) as exc:
        errors.append(f"database checkpoint failed: {exc}")
    else:
        log.debug("Database optimized; WAL %s.", "checkpointed and truncated" if truncated
                  else "in use, checkpointed as far as it could be (the next pass goes on)")


def maybe_backup(store: Store, paths: MaintenancePaths, cfg: MaintenanceConfig,
                 now: float) -> Optional[Path]:
    """An online backup when the newest one is ``backup_interval`` old; keeps the last 3."""
    if cfg.backup_interval <= 0:
        return None
    backups = list_backups(paths.backup_dir)
    slack = min(300.0, cfg.backup_interval / 10)
    if backups and 0 <= now - backups[-1][0] < cfg.backup_interval - slack:
        return None
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime(_BACKUP_STAMP)
    dest = paths.backup_dir / f"{BACKUP_PREFIX}{stamp}{BACKUP_SUFFIX}"
    try:
        store.backup(dest)
    except (OSError, sqlite3.Error) as exc:
        log.error("Database backup to %s failed: %s", dest, exc)
        dest.with_suffix(".tmp").unlink(missing_ok=True)
        return None
    log.info("Database backed up to %s.", dest)
    _prune_backups(paths.backup_dir, dest)
    return dest


def list_backups(backup_dir: Path) -> list[tuple[float, Path]]:
    """Backups as (time from the name, path), oldest first."""
    found = []
    for path in backup_dir.glob(f"{BACKUP_PREFIX}*{BACKUP_SUFFIX}"):
        text = path.name[len(BACKUP_PREFIX):-len(BACKUP_SUFFIX)]
        try:
            when = datetime.strptime(text, _BACKUP_STAMP).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        found.append((when.timestamp(), path))
    return sorted(found)


def _prune_backups(backup_dir: Path, keep: Path) -> None:
    others = [path for _, path in list_backups(backup_dir) if path != keep]
    for path in others[:max(0, len(others) - (BACKUPS_KEPT - 1))]:
        try:
            path.unlink()
            log.info("Removed old database backup %s (keeping the last %d).", path, BACKUPS_KEPT)
        except OSError as exc:
            log.warning("Cannot remove old database backup %s: %s", path, exc.strerror or exc)


# -- scheduled jobs ----------------------------------------------------------------------------
def scheduled_jobs(cfg: MaintenanceConfig, paths: MaintenancePaths, store: Store,
                   on_tick: Optional[Callable[[float], None]] = None,
                   tick_interval: float = 30.0) -> list[ScheduledJob]:
    """The (name, interval, fn) list for ``MaintenanceScheduler``; 0 disables an interval."""
    jobs: list[ScheduledJob] = []
    if cfg.interval > 0:
        jobs.append(("cleanup", cfg.interval, lambda: _scheduled_cleanup(cfg, paths, store)))
    if cfg.backup_interval > 0:
        every = min(cfg.backup_interval, cfg.interval) if cfg.interval > 0 else cfg.backup_interval
        jobs.append(("backup-check", every, lambda: _scheduled_backup(cfg, paths, store)))
        log.info("Database backup every %s into %s (whether one is due is checked every %s).",
                 duration_text(cfg.backup_interval), paths.backup_dir, duration_text(every))
    if on_tick is not None and tick_interval > 0:
        jobs.append(("idle-unload", tick_interval, lambda: on_tick(time.time())))
    return jobs


def _scheduled_cleanup(cfg: MaintenanceConfig, paths: MaintenancePaths, store: Store) -> None:
    report = run_cleanup(cfg, paths, store, time.time())
    for error in report.errors:
        log.warning("Cleanup: %s", error)


def _scheduled_backup(cfg: MaintenanceConfig, paths: MaintenancePaths, store: Store) -> None:
    maybe_backup(store, paths, cfg, time.time())


# -- files -------------------------------------------------------------------------------------
def _entries(folder: Path, errors: list[str], deep: bool = True) -> Iterator[_Entry]:
    """The direct children of ``folder``; ``deep`` adds each one's total size and newest mtime."""
    try:
        with os.scandir(folder) as scan:
            children = list(scan)
    except FileNotFoundError:
        return
    except OSError as exc:
        errors.append(f"cannot list {folder}: {exc.strerror or exc}")
        return
    for child in children:
        entry = _entry(Path(child.path), deep, errors)
        if entry is not None:
            yield entry


def _entry(path: Path, deep: bool, errors: list[str]) -> Optional[_Entry]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        errors.append(f"cannot read {path}: {exc.strerror or exc}")
        return None
    is_dir = os.path.isdir(path) and not path.is_symlink()
    size, newest = (st.st_size, st.st_mtime) if not (is_dir and deep) else _tree_stats(path, st.st_mtime)
    return _Entry(path, st.st_mtime, newest, size, is_dir)


def _tree_stats(folder: Path, mtime: float) -> tuple[int, float]:
    """Total file size and newest mtime under a folder (symlinks not followed)."""
    size, newest = 0, mtime
    for base, dirs, files in os.walk(folder):
        for name, is_file in [*((d, False) for d in dirs), *((f, True) for f in files)]:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            size += st.st_size if is_file else 0
    return size, newest


def _planned(entry: _Entry, reason: str) -> _Planned:
    return _Planned(Removal(entry.path, reason, entry.size))


def _apply(item: _Planned, dry_run: bool, errors: list[str]) -> bool:
    removal = item.removal
    if dry_run:
        log.info("Would remove %s (%s): %s", removal.path, format_size(removal.size), removal.reason)
        return True
    try:
        if item.still_wanted is not None and not item.still_wanted():
            log.info("Kept %s: it is in use again.", removal.path)
            return False
        _remove(removal.path, item.tree)
    except FileNotFoundError:
        errors.append(f"{removal.path}: vanished before it could be removed")
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            log.info("Kept %s: it is no longer empty.", removal.path)
        else:
            errors.append(f"cannot remove {removal.path}: {_os_error(exc, removal.path)}")
        return False
    except (sqlite3.Error, StemdError) as exc:
        errors.append(f"{removal.path} not removed: cannot read its job: {exc}")
        return False
    log.info("Removed %s (%s): %s", removal.path, format_size(removal.size), removal.reason)
    return True


def _remove(path: Path, tree: bool) -> None:
    """A file or link; a folder with its contents (``tree``), or else only while it is empty."""
    if not path.is_dir() or path.is_symlink():
        path.unlink()
    elif tree:
        _rmtree(path)
    else:
        path.rmdir()


def _rmtree(path: Path) -> None:
    """``shutil.rmtree``, where a file already gone is fine and anything else stops it."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_ignore_vanished)
    else:
        shutil.rmtree(path, onerror=lambda func, name, info: _ignore_vanished(func, name, info[1]))


def _ignore_vanished(func: Callable[..., object], name: str, exc: BaseException) -> None:
    if not isinstance(exc, FileNotFoundError):
        raise exc


def _os_error(exc: OSError, path: Path) -> str:
    """The error in words, naming the file inside ``path`` that caused it."""
    text = exc.strerror or str(exc)
    return text if exc.filename in (None, str(path)) else f"{text} ({exc.filename})"


def _age(now: float, then: float) -> str:
    return _span(max(0.0, now - then))


def _span(seconds: float) -> str:
    """A duration in words: days from two days up, else ``format_duration``."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f}d"
    return format_duration(seconds)
