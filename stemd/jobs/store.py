"""The job store: SQLite through sqlite-utils, the single source of truth.

WAL, a busy timeout, the schema version in ``PRAGMA user_version`` with
migrations, and every state change a compare-and-set (``UPDATE ... WHERE
state = ?``) whose row count says whether it won. Each thread gets its own
connection. The supervisor writes jobs; the CLI reads them and files requests.
"""
from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import sqlite_utils

from stemd.errors import StoreError

SCHEMA_VERSION = 4                # = len(_MIGRATIONS)
BUSY_TIMEOUT_MS = 30000   # how long a statement waits for another connection's lock


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = (State.DONE, State.FAILED, State.CANCELED)

_MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        input TEXT NOT NULL,
        input_name TEXT NOT NULL,
        sha256 TEXT,
        size INTEGER,
        duration REAL,
        inbox TEXT,
        profile TEXT NOT NULL,
        options TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        history TEXT NOT NULL DEFAULT '[]',
        not_before REAL NOT NULL DEFAULT 0,
        progress REAL NOT NULL DEFAULT 0,
        error TEXT,
        output_dir TEXT,
        device TEXT,
        lease_boot TEXT,
        lease_worker INTEGER,
        heartbeat REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        cached INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'watch',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_state ON jobs(state, priority DESC, id);
    CREATE INDEX jobs_key ON jobs(key);
    CREATE INDEX jobs_input ON jobs(input);
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        job_id INTEGER,
        payload TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE TABLE measurements (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model TEXT NOT NULL,
        device TEXT NOT NULL,
        audio_seconds REAL NOT NULL,
        wall_seconds REAL NOT NULL,
        peak_rss INTEGER,
        peak_vram INTEGER,
        created_at REAL NOT NULL
    );
    CREATE INDEX measurements_model ON measurements(model, device, id);
    """,
    # version 2: job events (for the web server's live updates and notifications), filled
    # by triggers so that every state change is recorded in order whoever makes it;
    # notification deliveries; one-time web login codes; small key-value state
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TRIGGER jobs_event_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO events (job_id, kind, created_at) VALUES (NEW.id, NEW.state, NEW.updated_at);
    END;
    CREATE TRIGGER jobs_event_state AFTER UPDATE OF state ON jobs
    WHEN NEW.state IS NOT OLD.state BEGIN
        INSERT INTO events (job_id, kind, created_at) VALUES (NEW.id,
            CASE NEW.state WHEN 'running' THEN 'started' ELSE NEW.state END, NEW.updated_at);
    END;
    CREATE TRIGGER events_prune AFTER INSERT ON events BEGIN
        DELETE FROM events WHERE id <= NEW.id - 20000;
    END;
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id INTEGER,
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries(state, next_at);
    CREATE TABLE web_logins (
        code_hash TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # version 3: link drops (the job's URL; the title its metadata gave)
    """
    ALTER TABLE jobs ADD COLUMN url TEXT;
    ALTER TABLE jobs ADD COLUMN title TEXT;
    """,
    # version 4: the input's folder relative to its inbox (kept in the outbox); failures
    # cleared from the status view (`stemd dismiss`)
    """
    ALTER TABLE jobs ADD COLUMN folder TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN dismissed_at REAL;
    """,
]


@dataclass(frozen=True)
class Job:
    id: int
    key: str
    input: str
    input_name: str
    sha256: Optional[str]
    size: Optional[int]
    duration: Optional[float]
    inbox: Optional[str]
    profile: str
    options: dict[str, Any]
    priority: int
    state: State
    attempts: int
    history: list[dict[str, Any]]
    not_before: float
    progress: float
    error: Optional[str]
    output_dir: Optional[str]
    device: Optional[str]
    lease_boot: Optional[str]
    lease_worker: Optional[int]
    heartbeat: Optional[float]
    cancel_requested: bool
    cached: bool
    source: str
    created_at: float
    started_at: Optional[float]
    finished_at: Optional[float]
    updated_at: float
    url: Optional[str] = None          # a link job's address (source = 'link')
    title: Optional[str] = None        # a link job's title, once its metadata was read
    folder: str = ""                       # relative to the inbox ("" at its top, or submitted)
    dismissed_at: Optional[float] = None   # failures up to then are cleared from the status view

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        data = dict(row)
        data["options"] = json.loads(data["options"])
        data["history"] = json.loads(data["history"])
        data["state"] = State(data["state"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["cached"] = bool(data["cached"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a job (``stemd jobs --json``)."""
        return {
            "id": self.id, "state": self.state.value, "input": self.input,
            "profile": self.profile, "attempts": self.attempts, "error": self.error,
            "output_dir": self.output_dir, "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "progress": round(self.progress, 1), "priority": self.priority,
            "device": self.device, "duration": self.duration, "sha256": self.sha256,
            "cached": self.cached, "history": self.history,
            **({"url": self.url, "title": self.title} if self.url else {}),
        }


@dataclass(frozen=True)
class NewJob:
    key: str
    input: str
    profile: str
    options: dict[str, Any]
    sha256: Optional[str] = None
    size: Optional[int] = None
    duration: Optional[float] = None
    inbox: Optional[str] = None
    priority: int = 0
    source: str = "watch"
    state: State = State.QUEUED
    error: Optional[str] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    url: Optional[str] = None
    folder: str = ""


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    job_id: Optional[int]
    payload: dict[str, Any]


def _iso(ts: Optional[float]) -> Optional[str]:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


class Store:
    """Thread-safe access to the stemd database (one connection per thread)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreError(f"No job database at {self.path}.",
                             "Start the daemon once (stemd run) or check daemon.state_dir.")
        self._migrate()

    # -- connections -------------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite_utils.Database(self._connect())
        return db

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the job database {self.path}: {exc}.",
                             "Check that daemon.state_dir is writable and not on a network share.") from None
        conn.row_factory = sqlite3.Row
        return conn

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def _migrate(self) -> None:
        conn = self.db.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"The job database {self.path} has schema version {version}, newer "
                             f"than this stemd understands ({SCHEMA_VERSION}).",
                             "Upgrade stemd, or point daemon.state_dir at a new folder.")
        if self.readonly:
            return
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in _split_sql(_MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    def transaction(self) -> "_Tx":
        return _Tx(self.db.conn)

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.db.conn.execute(sql, tuple(params))

    # -- jobs ----------------------------------------------------------------------
    def add_job(self, new: NewJob, now: Optional[float] = None) -> int:
        now = time.time() if now is None else now
        finished = now if new.state in FINAL_STATES else None
        row = {"key": new.key, "input": new.input, "input_name": Path(new.input).name,
               "sha256": new.sha256, "size": new.size, "duration": new.duration,
               "inbox": new.inbox, "profile": new.profile,
               "options": json.dumps(new.options, sort_keys=True), "priority": new.priority,
               "state": new.state.value, "error": new.error, "source": new.source,
               "history": json.dumps(new.history), "created_at": now,
               "finished_at": finished, "updated_at": now, "folder": new.folder}
        if new.url is not None:
            row["url"] = new.url
        return int(self.db["jobs"].insert(row).last_pk)

    def get(self, job_id: int) -> Optional[Job]:
        row = self._execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(dict(row)) if row else None

    def jobs(self, state: Optional[State] = None, limit: int = 1000) -> list[Job]:
        if state is None:
            rows = self._execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._execute("SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?",
                                 (State(state).value, limit))
        return [Job.from_row(dict(row)) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        counts = {state.value: 0 for state in State}
        counts.update({row[0]: row[1] for row in rows})
        return counts

    def active_with_key(self, key: str) -> Optional[Job]:
        row = self._execute("SELECT * FROM jobs WHERE key = ? AND state IN ('queued', 'running') "
                            "ORDER BY id LIMIT 1", (key,)).fetchone()
        return Job.from_row(dict(row)) if row else None

    def done_with_input(self, path: str, sha256: str) -> Optional[int]:
        """The id of a finished job of this very file (same path and content), if any."""
        row = self._execute("SELECT id FROM jobs WHERE input = ? AND sha256 = ? AND state = 'done' "
                            "ORDER BY id DESC LIMIT 1", (path, sha256)).fetchone()
        return int(row[0]) if row else None

    def runnable(self, now: float, limit: int = 50) -> list[Job]:
        """Queued jobs whose not-before time has passed: by priority, then first in."""
        rows = self._execute("SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
                             "ORDER BY priority DESC, id LIMIT ?", (now, limit))
        return [Job.from_row(dict(row)) for row in rows]

    def claim(self, job_id: int, boot: str, worker: int, device: str, now: float) -> bool:
        """queued -> running, with a lease for this boot and worker."""
        cur = self._execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_boot = ?, "
            "lease_worker = ?, heartbeat = ?, device = ?, started_at = ?, progress = 0, "
            "updated_at = ? WHERE id = ? AND state = 'queued' AND cancel_requested = 0",
            (boot, worker, now, device, now, now, job_id))
        return cur.rowcount == 1

    def heartbeat(self, job_id: int, boot: str, progress: float, now: float) -> bool:
        cur = self._execute("UPDATE jobs SET progress = ?, heartbeat = ?, updated_at = ? "
                            "WHERE id = ? AND state = 'running' AND lease_boot = ?",
                            (progress, now, now, job_id, boot))
        return cur.rowcount == 1

    def set_output(self, job_id: int, boot: str, output_dir: str, now: float) -> bool:
        """Record where the stems are about to be published (before the rename)."""
        cur = self._execute("UPDATE jobs SET output_dir = ?, updated_at = ? WHERE id = ? AND "
                            "state = 'running' AND lease_boot = ?", (output_dir, now, job_id, boot))
        return cur.rowcount == 1

    def finish(self, job_id: int, boot: str, output_dir: Optional[str], now: float,
               cached: bool = False, note: Optional[str] = None) -> bool:
        """running -> done."""
        cur = self._execute(
            "UPDATE jobs SET state = 'done', progress = 100, output_dir = ?, error = ?, "
            "cached = ?, finished_at = ?, updated_at = ?, lease_boot = NULL, lease_worker = NULL "
            "WHERE id = ? AND state = 'running' AND lease_boot = ?",
            (output_dir, note, int(cached), now, now, job_id, boot))
        return cur.rowcount == 1

    def fail_attempt(self, job_id: int, boot: Optional[str], reason: str, kind: str,
                     permanent: bool, now: float, max_attempts: int, backoff: float,
                     expected_state: State = State.RUNNING, count_attempt: bool = False) -> Optional[State]:
        """Record a failed attempt; requeue with backoff, or fail for good. Returns the new state."""
        job = self.get(job_id)
        if job is None or job.state != expected_state:
            return None
        attempts = job.attempts + (1 if count_attempt else 0)
        history = [*job.history, {"attempt": attempts, "kind": kind, "reason": reason,
                                  "at": _iso(now), "device": job.device}]
        final = permanent or attempts >= max_attempts
        new_state = State.FAILED if final else State.QUEUED
        delay = backoff * (2 ** max(0, attempts - 1))
        lease_clause = "AND lease_boot IS ?" if expected_state == State.RUNNING else ""
        params: list[Any] = [new_state.value, attempts, json.dumps(history), reason, now + delay,
                             now if final else None, now, job_id, expected_state.value]
        if lease_clause:
            params.append(boot)
        cur = self._execute(
            "UPDATE jobs SET state = ?, attempts = ?, history = ?, error = ?, not_before = ?, "
            "finished_at = ?, updated_at = ?, lease_boot = NULL, lease_worker = NULL, progress = 0 "
            f"WHERE id = ? AND state = ? {lease_clause}", params)
        return new_state if cur.rowcount == 1 else None

    def requeue(self, job_id: int, boot: str, now: float, note: str, delay: float = 0.0) -> bool:
        """running -> queued without counting the attempt (shutdown, memory pressure)."""
        job = self.get(job_id)
        if job is None:
            return False
        history = [*job.history, {"attempt": job.attempts, "kind": "requeued", "reason": note,
                                  "at": _iso(now), "device": job.device}]
        cur = self._execute(
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), history = ?, "
            "progress = 0, lease_boot = NULL, lease_worker = NULL, updated_at = ?, not_before = ? "
            "WHERE id = ? AND state = 'running' AND lease_boot = ?",
            (json.dumps(history), now, now + delay, job_id, boot))
        return cur.rowcount == 1

    def cancel(self, job_id: int, now: float) -> Optional[State]:
        """Cancel a queued job at once; mark a running one for its supervisor to stop."""
        cur = self._execute("UPDATE jobs SET state = 'canceled', finished_at = ?, updated_at = ?, "
                            "error = 'canceled by request' WHERE id = ? AND state = 'queued'",
                            (now, now, job_id))
        if cur.rowcount == 1:
            return State.CANCELED
        cur = self._execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? "
                            "WHERE id = ? AND state = 'running'", (now, job_id))
        return State.RUNNING if cur.rowcount == 1 else None

    def mark_canceled(self, job_id: int, boot: str, now: float) -> bool:
        cur = self._execute("UPDATE jobs SET state = 'canceled', finished_at = ?, updated_at = ?, "
                            "error = 'canceled by request', lease_boot = NULL WHERE id = ? AND "
                            "state = 'running' AND lease_boot = ?", (now, now, job_id, boot))
        return cur.rowcount == 1

    def retry(self, job_id: int, now: float) -> bool:
        """failed | canceled -> queued, attempts counted afresh."""
        job = self.get(job_id)
        if job is None:
            return False
        history = [*job.history, {"attempt": job.attempts, "kind": "retry",
                                  "reason": "retried by request", "at": _iso(now)}]
        cur = self._execute(
            "UPDATE jobs SET state = 'queued', attempts = 0, error = NULL, not_before = 0, "
            "finished_at = NULL, cancel_requested = 0, progress = 0, history = ?, "
            "output_dir = NULL, updated_at = ? WHERE id = ? AND state IN ('failed', 'canceled')",
            (json.dumps(history), now, job_id))
        return cur.rowcount == 1

    def set_options(self, job_id: int, options: dict[str, Any]) -> None:
        self._execute("UPDATE jobs SET options = ? WHERE id = ?",
                      (json.dumps(options, sort_keys=True), job_id))

    def adopt(self, job_id: int, old_boot: Optional[str], boot: str) -> bool:
        """Take over the lease of a running job left by a previous boot."""
        cur = self._execute("UPDATE jobs SET lease_boot = ? WHERE id = ? AND state = 'running' "
                            "AND lease_boot IS ?", (boot, job_id, old_boot))
        return cur.rowcount == 1

    def set_title(self, job_id: int, title: str) -> None:
        """A link job's title, from its metadata (names its track folder)."""
        self._execute("UPDATE jobs SET title = ? WHERE id = ?", (title, job_id))

    def others_active_on_input(self, job_id: int, path: str) -> bool:
        """Whether another queued or running job uses the same input (a link file's URLs)."""
        row = self._execute("SELECT 1 FROM jobs WHERE input = ? AND id != ? AND state IN "
                            "('queued', 'running') LIMIT 1", (path, job_id)).fetchone()
        return row is not None

    def links_started_since(self, since: float) -> int:
        """Link jobs started (attempts included) since ``since``: the downloads rate."""
        row = self._execute("SELECT COUNT(*) FROM jobs WHERE source = 'link' AND "
                            "started_at >= ?", (since,)).fetchone()
        return int(row[0])

    def update_input(self, job_id: int, path: str) -> None:
        self._execute("UPDATE jobs SET input = ? WHERE id = ?", (path, job_id))

    def stale_running(self, boot: str) -> list[Job]:
        """Running jobs whose lease belongs to another (dead) boot."""
        rows = self._execute("SELECT * FROM jobs WHERE state = 'running' AND "
                             "(lease_boot IS NULL OR lease_boot != ?)", (boot,))
        return [Job.from_row(dict(row)) for row in rows]

    def failures(self, limit: int = 5) -> list[Job]:
        """Failed jobs not dismissed since they last failed (``stemd status``)."""
        rows = self._execute("SELECT * FROM jobs WHERE state = 'failed' AND (dismissed_at IS NULL "
                             "OR dismissed_at < finished_at) ORDER BY id DESC LIMIT ?", (limit,))
        return [Job.from_row(dict(row)) for row in rows]

    def dismiss(self, job_id: Optional[int], now: float) -> int:
        """Clear one failed job (or, with None, every failed job) from the status view."""
        where = "state = 'failed'" + (" AND id = ?" if job_id is not None else "")
        params = (now, job_id) if job_id is not None else (now,)
        return self._execute(f"UPDATE jobs SET dismissed_at = ? WHERE {where}", params).rowcount

    def running(self) -> list[Job]:
        return self.jobs(State.RUNNING)

    def count_finished_before(self, cutoff: float) -> int:
        return int(self._execute("SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'failed', "
                                 "'canceled') AND finished_at < ?", (cutoff,)).fetchone()[0])

    def delete_finished_before(self, cutoff: float) -> int:
        cur = self._execute("DELETE FROM jobs WHERE state IN ('done', 'failed', 'canceled') "
                            "AND finished_at < ?", (cutoff,))
        return cur.rowcount

    # -- requests from the CLI --------------------------------------------------------
    def add_request(self, kind: str, job_id: Optional[int] = None,
                    payload: Optional[dict[str, Any]] = None) -> int:
        row = {"kind": kind, "job_id": job_id, "payload": json.dumps(payload or {}),
               "created_at": time.time()}
        return int(self.db["requests"].insert(row).last_pk)

    def take_requests(self, limit: int = 500) -> list[Request]:
        rows = list(self._execute("SELECT * FROM requests ORDER BY id LIMIT ?", (limit,)))
        if rows:
            self._execute("DELETE FROM requests WHERE id <= ?", (rows[-1]["id"],))
        return [Request(row["id"], row["kind"], row["job_id"], json.loads(row["payload"]))
                for row in rows]

    # -- measurements (memory and speed calibration) ------------------------------------
    def record_measurement(self, model: str, device: str, audio_seconds: float,
                           wall_seconds: float, peak_rss: Optional[int],
                           peak_vram: Optional[int] = None) -> None:
        self.db["measurements"].insert({
            "model": model, "device": device, "audio_seconds": audio_seconds,
            "wall_seconds": wall_seconds, "peak_rss": peak_rss, "peak_vram": peak_vram,
            "created_at": time.time()})

    def measurements(self, model: str, device: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._execute("SELECT * FROM measurements WHERE model = ? AND device = ? "
                             "ORDER BY id DESC LIMIT ?", (model, device, limit))
        return [dict(row) for row in rows]

    # -- maintenance ----------------------------------------------------------------------
    def checkpoint(self) -> bool:
        """``PRAGMA optimize``, then fold the WAL into the database and truncate it, without
        waiting: a TRUNCATE checkpoint holds the write lock while it waits for readers, which
        would stall intake. When anything is busy it checkpoints what it can (as PASSIVE)
        and the next pass finishes. True when the WAL was truncated."""
        self._execute("PRAGMA optimize")
        self._execute("PRAGMA busy_timeout = 0")
        try:
            busy = self._execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            self._execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return not busy

    def backup(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        target = sqlite3.connect(str(tmp))
        try:
            self.db.conn.backup(target)
        finally:
            target.close()
        tmp.replace(dest)

    def sqlite_version(self) -> str:
        return str(self._execute("SELECT sqlite_version()").fetchone()[0])


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _split_sql(script: str) -> Iterator[str]:
    """Whole statements (a trigger's body holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
