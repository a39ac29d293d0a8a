"""The ``deliveries`` table: one row per notification to send, kept until sent or given up."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from stemd.jobs.store import Store


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: Optional[int]
    url: str
    headers: dict[str, str]
    payload: dict[str, Any]
    attempts: int
    created_at: float


def enqueue(store: Store, event_id: Optional[int], url: str, headers: dict[str, str],
            payload: dict[str, Any], now: float) -> int:
    target = json.dumps({"url": url, "headers": headers})
    cur = store.db.conn.execute(
        "INSERT INTO deliveries (event_id, target, payload, next_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)", (event_id, target, json.dumps(payload, default=str), now, now, now))
    return int(cur.lastrowid or 0)


def due(store: Store, now: float, limit: int = 20) -> list[Delivery]:
    rows = store.db.conn.execute("SELECT * FROM deliveries WHERE state = 'pending' AND next_at <= ? "
                                 "ORDER BY next_at, id LIMIT ?", (now, limit))
    out = []
    for row in rows:
        target = json.loads(row["target"])
        out.append(Delivery(int(row["id"]), row["event_id"], target["url"], target.get("headers", {}),
                            json.loads(row["payload"]), int(row["attempts"]), float(row["created_at"])))
    return out


def record(store: Store, delivery_id: int, state: str, attempts: int, next_at: float,
           error: Optional[str], now: float) -> None:
    store.db.conn.execute("UPDATE deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?, "
                          "updated_at = ? WHERE id = ?",
                          (state, attempts, next_at, error, now, delivery_id))


def prune(store: Store, before: float) -> int:
    """Forget sent and abandoned deliveries older than ``before``."""
    cur = store.db.conn.execute("DELETE FROM deliveries WHERE state != 'pending' AND updated_at < ?",
                                (before,))
    return cur.rowcount
