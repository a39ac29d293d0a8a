"""The job event log: one row per state change, written by triggers on ``jobs``.

Readers (the web server's live updates, the notifier) follow it by id. The ids
only grow, so a reader that remembers the last id it saw misses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from stemd.jobs.store import Store

@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: int
    kind: str
    created_at: float


def last_event_id(store: Store) -> int:
    row = store.db.conn.execute("SELECT MAX(id) FROM events").fetchone()
    return int(row[0] or 0)


def events_after(store: Store, after: int, limit: int = 500) -> list[JobEvent]:
    rows = store.db.conn.execute("SELECT id, job_id, kind, created_at FROM events WHERE id > ? "
                                 "ORDER BY id LIMIT ?", (after, limit))
    return [JobEvent(int(r[0]), int(r[1]), str(r[2]), float(r[3])) for r in rows]


def get_value(store: Store, key: str) -> Optional[str]:
    row = store.db.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_value(store: Store, key: str, value: str) -> None:
    store.db.conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) "
                          "DO UPDATE SET value = excluded.value", (key, value))
