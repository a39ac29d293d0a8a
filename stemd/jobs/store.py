"""The job store: SQLite through sqlite-utils, the single source of truth.

WAL, a busy timeout, the schema version in ``PRAGMA user_version`` with
migrations. The store owns the job state machine: ``TRANSITIONS`` names every
change of state with the states it may start from, and each one is a single
compare-and-set (``UPDATE ... WHERE state IN (...)``) whose row count says
whether it won. Only the lifecycle (``stemd.jobs.lifecycle``) calls the
transitions; the CLI reads through a read-only connection and files requests.
Every ``sqlite3`` error leaves as a ``StoreError``.
"""
from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import sqlite_utils

from stemd.errors import StoreError
from stemd.jobs.identity import InputIdentity
from stemd.jobs.options import JobOptions

SCHEMA_VERSION = 5                # = len(_MIGRATIONS)
BUSY_TIMEOUT_MS = 30000   # how long a statement waits for another connection's lock


class State(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = (State.DONE, State.FAILED, State.CANCELED)
ACTIVE_STATES = (State.QUEUED, State.RUNNING)


class Transition(str, enum.Enum):
    CLAIM = "claim"                # a slot (or the cache) takes the job
    FINISH = "finish"              # stems published
    RETRY_LATER = "retry_later"    # an attempt failed; tried again after a backoff
    REQUEUE = "requeue"            # stopped without counting the attempt (shutdown, memory)
    FAIL = "fail"                  # failed for good
    CANCEL = "cancel"              # canceled by request
    SUPERSEDE = "supersede"        # the input changed while the job waited
    RETRY = "retry"                # queued again by request


#: The state machine: each transition, the states it may start from, and where it ends.
TRANSITIONS: dict[Transition, tuple[tuple[State, ...], State]] = {
    Transition.CLAIM: ((State.QUEUED,), State.RUNNING),
    Transition.FINISH: ((State.RUNNING,), State.DONE),
    Transition.RETRY_LATER: ((State.RUNNING,), State.QUEUED),
    Transition.REQUEUE: ((State.RUNNING,), State.QUEUED),
    Transition.FAIL: ((State.QUEUED, State.RUNNING), State.FAILED),
    Transition.CANCEL: ((State.QUEUED, State.RUNNING), State.CANCELED),
    Transition.SUPERSEDE: ((State.QUEUED, State.RUNNING), State.CANCELED),
    Transition.RETRY: ((State.FAILED, State.CANCELED), State.QUEUED),
}

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
    # version 5: the input's identity and first location; one active job per input and key
    # (the column ``heartbeat`` stays, unused: SQLite before 3.35 cannot drop a column)
    """
    ALTER TABLE jobs ADD COLUMN input_mtime_ns INTEGER;
    ALTER TABLE jobs ADD COLUMN input_inode INTEGER;
    ALTER TABLE jobs ADD COLUMN origin TEXT;
    UPDATE jobs SET origin = input;
    UPDATE jobs SET state = 'canceled', error = 'canceled: a duplicate of an earlier job',
        finished_at = updated_at
        WHERE state IN ('queued', 'running') AND EXISTS (
            SELECT 1 FROM jobs AS older WHERE older.state IN ('queued', 'running')
            AND older.input = jobs.input AND older.key = jobs.key AND older.id < jobs.id);
    CREATE UNIQUE INDEX jobs_active_input ON jobs(input, key) WHERE state IN ('queued', 'running');
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
    options: JobOptions
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
    cancel_requested: bool
    cached: bool
    source: str
    created_at: float
    started_at: Optional[float]
    finished_at: Optional[float]
    updated_at: float
    input_mtime_ns: Optional[int] = None
    input_inode: Optional[int] = None
    origin: Optional[str] = None          # where the input was when it arrived
    url: Optional[str] = None          # a link job's address (source = 'link')
    title: Optional[str] = None        # a link job's title, once its metadata was read
    folder: str = ""                       # relative to the inbox ("" at its top, or submitted)
    dismissed_at: Optional[float] = None   # failures up to then are cleared from the status view

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        data = {k: v for k, v in dict(row).items() if k in _JOB_FIELDS}
        data["options"] = JobOptions.from_json(data["options"])
        data["history"] = json.loads(data["history"])
        data["state"] = State(data["state"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["cached"] = bool(data["cached"])
        return cls(**data)

    @property
    def identity(self) -> Optional[InputIdentity]:
        """The input as it was recorded; None when nothing was (a file rejected on arrival).
        Rows of schema 1 have only the hash: their file is hashed again when checked."""
        if self.sha256 is None:
            return None
        unknown = -1
        return InputIdentity(self.size if self.size is not None else unknown,
                             self.input_mtime_ns if self.input_mtime_ns is not None else unknown,
                             self.input_inode if self.input_inode is not None else unknown,
                             self.sha256)

    @property
    def first_location(self) -> str:
        return self.origin or self.input

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


_JOB_FIELDS = {f.name for f in fields(Job)}


@dataclass(frozen=True)
class NewJob:
    key: str
    input: str
    profile: str
    options: Union[JobOptions, dict[str, Any]]
    sha256: Optional[str] = None
    size: Optional[int] = None
    duration: Optional[float] = None
    inbox: Optional[str] = None
    priority: int = 0
    source: str = "watch"
    state: State = State.QUEUED
    error: Optional[str] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    identity: Optional[InputIdentity] = None
    url: Optional[str] = None
    folder: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.options, JobOptions):
            object.__setattr__(self, "options", JobOptions.from_dict(self.options))


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    job_id: Optional[int]
    payload: dict[str, Any]


def _iso(ts: Optional[float]) -> Optional[str]:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def history_entry(kind: str, reason: str, now: float, attempt: int,
                  device: Optional[str] = None) -> dict[str, Any]:
    return {"attempt": attempt, "kind": kind, "reason": reason, "at": _iso(now), "device": device}


_ANY = object()   # "whoever holds the lease" in a compare-and-set


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
            if self.readonly:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            else:
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
        version = self._execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"The job database {self.path} has schema version {version}, newer "
                             f"than this stemd understands ({SCHEMA_VERSION}).",
                             "Upgrade stemd, or point daemon.state_dir at a new folder.")
        if self.readonly:
            return
        for number in range(version, SCHEMA_VERSION):
            with self.transaction() as conn:
                for statement in _split_sql(_MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    def transaction(self) -> "_Tx":
        return _Tx(self.db.conn, self.path)

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.db.conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    # -- reading jobs ----------------------------------------------------------------
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

    def active_with_key(self, key: str, path: Optional[str] = None) -> Optional[Job]:
        """The queued or running job of this input (of any input when ``path`` is None)
        with these options, if any."""
        if path is None:
            row = self._execute("SELECT * FROM jobs WHERE key = ? AND state IN "
                                "('queued', 'running') LIMIT 1", (key,)).fetchone()
        else:
            row = self._execute("SELECT * FROM jobs WHERE key = ? AND input = ? AND state IN "
                                "('queued', 'running') LIMIT 1", (key, path)).fetchone()
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

    def stale_running(self, boot: str) -> list[Job]:
        """Running jobs whose lease belongs to another (dead) boot."""
        rows = self._execute("SELECT * FROM jobs WHERE state = 'running' AND "
                             "(lease_boot IS NULL OR lease_boot != ?)", (boot,))
        return [Job.from_row(dict(row)) for row in rows]

    def stranded_cancels(self) -> list[Job]:
        """Queued jobs with a cancel request (left by versions before the lifecycle)."""
        rows = self._execute("SELECT * FROM jobs WHERE state = 'queued' AND cancel_requested = 1")
        return [Job.from_row(dict(row)) for row in rows]

    def running(self) -> list[Job]:
        return self.jobs(State.RUNNING)

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

    def count_finished_before(self, cutoff: float) -> int:
        return int(self._execute("SELECT COUNT(*) FROM jobs WHERE state IN ('done', 'failed', "
                                 "'canceled') AND finished_at < ?", (cutoff,)).fetchone()[0])

    def delete_finished_before(self, cutoff: float) -> int:
        cur = self._execute("DELETE FROM jobs WHERE state IN ('done', 'failed', 'canceled') "
                            "AND finished_at < ?", (cutoff,))
        return cur.rowcount

    # -- writing jobs: only the lifecycle calls these ----------------------------------------
    def add_job(self, new: NewJob, now: Optional[float] = None) -> Optional[int]:
        """Record a job; None when the same input with the same key is already queued or
        running (the unique index settles concurrent offers of one file)."""
        now = time.time() if now is None else now
        finished = now if new.state in FINAL_STATES else None
        ident = new.identity
        row = {"key": new.key, "input": new.input, "input_name": Path(new.input).name,
               "origin": new.input, "sha256": new.sha256 or (ident.sha256 if ident else None),
               "size": ident.size if ident else new.size,
               "input_mtime_ns": ident.mtime_ns if ident else None,
               "input_inode": ident.inode if ident else None,
               "duration": new.duration, "inbox": new.inbox, "profile": new.profile,
               "options": new.options.to_json(), "priority": new.priority,  # type: ignore[union-attr]
               "state": new.state.value, "error": new.error, "source": new.source,
               "history": json.dumps(new.history), "created_at": now,
               "finished_at": finished, "updated_at": now, "folder": new.folder}
        if new.url is not None:
            row["url"] = new.url
        try:
            return int(self.db["jobs"].insert(row).last_pk)
        except sqlite3.IntegrityError:
            return None
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def _transition(self, name: Transition, job_id: int, values: dict[str, Any], now: float,
                    lease: Any = _ANY, attempts: Optional[int] = None,
                    not_canceling: bool = False, history: Optional[dict[str, Any]] = None) -> bool:
        """The one compare-and-set: ``name``'s from-states (and, when given, the lease, the
        attempt count, no pending cancel) or nothing changes."""
        sources, target = TRANSITIONS[name]
        values = {**values, "state": target.value, "updated_at": now}
        sets = [f"{column} = ?" for column in values]
        params: list[Any] = list(values.values())
        if history is not None:
            sets.append("history = json_insert(history, '$[#]', json(?))")
            params.append(json.dumps(history))
        where = ["id = ?", f"state IN ({', '.join('?' * len(sources))})"]
        params += [job_id, *(s.value for s in sources)]
        if lease is not _ANY:
            where.append("lease_boot IS ?")
            params.append(lease)
        if attempts is not None:
            where.append("attempts = ?")
            params.append(attempts)
        if not_canceling:
            where.append("cancel_requested = 0")
        cur = self._execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {' AND '.join(where)}", params)
        return cur.rowcount == 1

    def claim(self, job_id: int, boot: str, worker: int, device: str, now: float) -> bool:
        """queued -> running, with a lease for this boot and worker."""
        job = self.get(job_id)
        if job is None or job.cancel_requested:
            return False
        return self._transition(Transition.CLAIM, job_id, {
            "attempts": job.attempts + 1, "lease_boot": boot, "lease_worker": worker,
            "device": device, "started_at": now, "progress": 0}, now,
            attempts=job.attempts, not_canceling=True)

    def finish(self, job_id: int, boot: str, output_dir: Optional[str], now: float,
               cached: bool = False, note: Optional[str] = None) -> bool:
        """running -> done, by the lease holder."""
        return self._transition(Transition.FINISH, job_id, {
            "progress": 100, "output_dir": output_dir, "error": note, "cached": int(cached),
            "finished_at": now, "lease_boot": None, "lease_worker": None}, now, lease=boot)

    def fail_attempt(self, job_id: int, boot: Optional[str], reason: str, kind: str,
                     permanent: bool, now: float, max_attempts: int, backoff: float,
                     count_attempt: bool = False) -> Optional[State]:
        """A running job's attempt failed: queued again after a backoff, or failed for good
        (permanent, or out of attempts). None when the job is not this lease's, or has a
        cancel pending (the caller cancels it instead). Returns the new state."""
        job = self.get(job_id)
        if job is None or job.state != State.RUNNING:
            return None
        attempts = job.attempts + (1 if count_attempt else 0)
        final = permanent or attempts >= max_attempts
        delay = backoff * (2 ** max(0, attempts - 1))
        values = {"attempts": attempts, "error": reason, "not_before": now + delay,
                  "finished_at": now if final else None, "lease_boot": None,
                  "lease_worker": None, "progress": 0}
        name = Transition.FAIL if final else Transition.RETRY_LATER
        won = self._transition(name, job_id, values, now, lease=boot, attempts=job.attempts,
                               not_canceling=True,
                               history=history_entry(kind, reason, now, attempts, job.device))
        return TRANSITIONS[name][1] if won else None

    def fail(self, job_id: int, reason: str, kind: str, now: float) -> bool:
        """queued -> failed at once (the input is gone, or can never fit)."""
        job = self.get(job_id)
        if job is None:
            return False
        return self._transition(Transition.FAIL, job_id, {
            "error": reason, "finished_at": now, "lease_boot": None, "lease_worker": None,
            "progress": 0}, now, lease=job.lease_boot,
            history=history_entry(kind, reason, now, job.attempts, job.device))

    def requeue(self, job_id: int, boot: str, now: float, note: str, delay: float = 0.0) -> bool:
        """running -> queued without counting the attempt (shutdown, memory pressure, an
        unusable cache entry). False with a cancel pending: the caller cancels it instead."""
        job = self.get(job_id)
        if job is None:
            return False
        return self._transition(Transition.REQUEUE, job_id, {
            "attempts": max(job.attempts - 1, 0), "progress": 0, "lease_boot": None,
            "lease_worker": None, "not_before": now + delay}, now, lease=boot,
            attempts=job.attempts, not_canceling=True,
            history=history_entry("requeued", note, now, job.attempts, job.device))

    def request_cancel(self, job_id: int, now: float) -> bool:
        """Mark a running job for its supervisor to stop and cancel."""
        cur = self._execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? "
                            "WHERE id = ? AND state = 'running'", (now, job_id))
        return cur.rowcount == 1

    def cancel(self, job_id: int, now: float, reason: str = "canceled by request",
               boot: Any = _ANY) -> bool:
        """queued | running -> canceled (a running one by its lease holder, ``boot``)."""
        return self._transition(Transition.CANCEL, job_id, {
            "error": reason, "finished_at": now, "lease_boot": None, "lease_worker": None,
            "cancel_requested": 0, "progress": 0}, now, lease=boot,
            history=history_entry("canceled", reason, now, self._attempts(job_id)))

    def supersede(self, job_id: int, now: float, reason: str, boot: Any = _ANY) -> bool:
        """queued | running -> canceled: the input changed; its new content is a new job."""
        return self._transition(Transition.SUPERSEDE, job_id, {
            "error": reason, "finished_at": now, "lease_boot": None, "lease_worker": None,
            "progress": 0}, now, lease=boot,
            history=history_entry("superseded", reason, now, self._attempts(job_id)))

    def retry(self, job_id: int, now: float, options: Optional[JobOptions] = None,
              key: Optional[str] = None, identity: Optional[InputIdentity] = None,
              note: str = "retried by request", options_from: str = "kept") -> bool:
        """failed | canceled -> queued, attempts counted afresh; with new options, key and
        input identity when given (``options_from``: "profile" or "kept", for the record).
        False when not retryable, or when the same input with the same key is already
        queued or running."""
        job = self.get(job_id)
        if job is None:
            return False
        values: dict[str, Any] = {"attempts": 0, "error": None, "not_before": 0,
                                  "finished_at": None, "cancel_requested": 0, "progress": 0,
                                  "output_dir": None, "cached": 0, "lease_boot": None,
                                  "lease_worker": None}
        if options is not None:
            values["options"] = options.to_json()
        if key is not None:
            values["key"] = key
        if identity is not None:
            values.update(_identity_columns(identity))
        entry = {**history_entry("retry", note, now, job.attempts), "options": options_from}
        try:
            return self._transition(Transition.RETRY, job_id, values, now, history=entry)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                return False
            raise

    def _attempts(self, job_id: int) -> int:
        row = self._execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row[0]) if row else 0

    # -- writing job details (not states) ------------------------------------------------------
    def set_progress(self, job_id: int, boot: str, progress: float, now: float) -> bool:
        cur = self._execute("UPDATE jobs SET progress = ?, updated_at = ? "
                            "WHERE id = ? AND state = 'running' AND lease_boot = ?",
                            (progress, now, job_id, boot))
        return cur.rowcount == 1

    def set_output(self, job_id: int, boot: str, output_dir: str, now: float) -> bool:
        """Record where the stems are about to be published (before the rename)."""
        cur = self._execute("UPDATE jobs SET output_dir = ?, updated_at = ? WHERE id = ? AND "
                            "state = 'running' AND lease_boot = ?", (output_dir, now, job_id, boot))
        return cur.rowcount == 1

    def set_options(self, job_id: int, options: JobOptions) -> None:
        self._execute("UPDATE jobs SET options = ? WHERE id = ?", (options.to_json(), job_id))

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

    def link_jobs_on_input(self, path: str) -> list[Job]:
        """The jobs of one link file: one per URL, oldest first."""
        rows = self._execute("SELECT * FROM jobs WHERE input = ? AND source = 'link' ORDER BY id",
                             (path,))
        return [Job.from_row(dict(row)) for row in rows]

    def links_started_since(self, since: float) -> int:
        """Link jobs started (attempts included) since ``since``: the downloads rate."""
        row = self._execute("SELECT COUNT(*) FROM jobs WHERE source = 'link' AND "
                            "started_at >= ?", (since,)).fetchone()
        return int(row[0])

    def update_input(self, job_id: int, path: str, identity: Optional[InputIdentity] = None) -> None:
        """Where the input is now (moved by stemd), and its identity there."""
        values: dict[str, Any] = {"input": path}
        if identity is not None:
            values.update(_identity_columns(identity))
        sets = ", ".join(f"{column} = ?" for column in values)
        self._execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))

    # -- requests from the CLI --------------------------------------------------------
    def add_request(self, kind: str, job_id: Optional[int] = None,
                    payload: Optional[dict[str, Any]] = None) -> int:
        row = {"kind": kind, "job_id": job_id, "payload": json.dumps(payload or {}),
               "created_at": time.time()}
        try:
            return int(self.db["requests"].insert(row).last_pk)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

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
        try:
            self.db["measurements"].insert({
                "model": model, "device": device, "audio_seconds": audio_seconds,
                "wall_seconds": wall_seconds, "peak_rss": peak_rss, "peak_vram": peak_vram,
                "created_at": time.time()})
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

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
        try:
            target = sqlite3.connect(str(tmp))
            try:
                self.db.conn.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        tmp.replace(dest)

    def sqlite_version(self) -> str:
        return str(self._execute("SELECT sqlite_version()").fetchone()[0])


class _Tx:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from error
        if isinstance(exc, sqlite3.Error):
            raise _store_error(self.path, exc) from exc


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    hint = "Check free space and permissions of daemon.state_dir."
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        hint = "Another program holds the job database; try again."
    return StoreError(f"The job database {path} failed: {exc}.", hint)


def _identity_columns(identity: InputIdentity) -> dict[str, Any]:
    columns: dict[str, Any] = {"size": identity.size, "input_mtime_ns": identity.mtime_ns,
                               "input_inode": identity.inode}
    if identity.sha256 is not None:
        columns["sha256"] = identity.sha256
    return columns


def _split_sql(script: str) -> Iterator[str]:
    """Whole statements (a trigger's body holds semicolons of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
