"""A real Server-Sent Events reader (httpx streaming) that collects events in a thread."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Optional


class EventReader:
    def __init__(self, client: Any, headers: Optional[dict[str, str]] = None) -> None:
        self.client = client
        self.headers = headers or {}
        self.events: list[tuple[Optional[int], str, dict[str, Any], float]] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "EventReader":
        self.thread.start()
        assert self.connected.wait(30), "the event stream did not open"
        return self

    def _run(self) -> None:
        with self.client.stream("GET", "/api/events", headers=self.headers,
                                timeout=None) as response:
            assert response.status_code == 200
            self.connected.set()
            event_id, kind, data = None, None, None
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and kind:
                    self.events.append((event_id, kind, data or {}, time.monotonic()))
                    event_id, kind, data = None, None, None

    def of_job(self, job_id: int, progress: bool = False) -> list[tuple[Optional[int], str, dict[str, Any], float]]:
        return [e for e in self.events if e[2].get("id") == job_id and (progress or e[1] != "progress")]

    def wait(self, condition: Callable[[], Any], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out; events so far: {[(e[0], e[1], e[2].get('id')) for e in self.events]}")
