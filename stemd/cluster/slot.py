"""A remote slot: a worker actor on a Ray node, behind the same interface as a local ``Slot``.

The dispatcher reads ``conn`` (a real pipe end) and calls ``send``, ``alive``, ``kill``,
``rss`` and ``ensure_started`` as for a local worker process. Two threads link the
other end of the pipe to the actor: the uplink forwards messages (a task's input in
chunks through the object store), the downlink long-polls the actor and writes the
stems it returns into the head's staging folder before passing on ``done``.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

from stemd.cluster import messages
from stemd.cluster.actor import Stems
from stemd.dispatch.slots import send_on
from stemd.cluster.plan import NodeInfo, actor_resources
from stemd.cluster.settings import ClusterSettings
from stemd.cluster.transfer import get_file, put_file
from stemd.worker.process import WorkerSpec

log = logging.getLogger(__name__)
POLL = 0.5          # seconds the actor waits for a message per downlink call
CALL_TIMEOUT = 60.0
NODE_GRACE = 10.0   # seconds to wait for Ray to report a node dead after its actor failed


@dataclass(eq=False)
class RemoteSlot:
    index: int
    kind: str                     # "gpu" | "cpu"
    device: str
    spec: WorkerSpec
    node: NodeInfo
    settings: ClusterSettings
    node_memory: tuple[int, int] = (0, 0)      # (available, total) measured on the node
    running: Any = None
    jobs_done: int = 0
    free_vram: Optional[int] = None
    retired: bool = False
    preloaded: Optional[str] = None          # the model a Preload asked for, until Unloaded
    ahead_of: Optional[int] = None
    process: None = None          # no local process: the worker lives on the node
    conn: Optional[Connection] = None
    link: Optional["Link"] = None
    lost: bool = False            # the node left the cluster
    last_failure: Optional[tuple[str, str]] = None

    @property
    def name(self) -> str:
        return f"{self.node.host}/{self.kind}{self.index}"

    def pid(self) -> Optional[int]:
        """The actor's process id on its node (from its worker's Ready)."""
        link = self.link
        return link.pid if link else None

    def alive(self) -> bool:
        return not self.lost and self.link is not None and self.link.failure is None

    def start(self) -> None:
        parent, child = multiprocessing.Pipe()
        self.conn = parent
        self.link = Link(self, child)
        self.jobs_done = 0
        self.preloaded = None
        log.info("slot %s: worker actor started on node %s (%s)", self.name, self.node.host,
                 self.node.node_id[:12])

    def ensure_started(self) -> None:
        if not self.alive():
            self.close()
            self.last_failure = None
            self.start()

    def send(self, message: Any) -> bool:
        return self.alive() and send_on(self.conn, message)

    def rss(self) -> int:
        return self.link.rss if self.link else 0

    def memory(self) -> tuple[Optional[int], Optional[int]]:
        """(available, total) bytes of the node's memory, as last measured there."""
        measured = self.link.memory if self.link and self.link.memory[1] else self.node_memory
        return measured if measured[1] else (None, None)

    def node_lost(self) -> bool:
        failure = self.link.failure if self.link else None
        return self.lost or (failure is not None and failure[0] == "node_lost")

    def death(self) -> tuple[str, str]:
        """Why the worker is gone: (failure kind, message) for the job's attempt."""
        node = f"{self.node.host} ({self.node.node_id[:12]})"
        failure = self.link.failure if self.link else self.last_failure
        if self.lost or (failure is not None and failure[0] == "node_lost"):
            return "node_lost", f"Node lost: the node {node} running this job left the cluster."
        detail = failure[1] if failure else "no worker actor"
        return "crash", f"The worker actor on node {node} died ({detail})."

    def stop(self, timeout: float = 10.0) -> None:
        self.send(("stop",))
        self.kill()

    def kill(self, grace: float = 3.0) -> Optional[int]:
        """End the actor; why it failed, if it did, is kept for ``death``."""
        if self.link is not None:
            self.last_failure = self.link.failure
            self.link.close()
        self.close()
        return None

    def close_pipe(self) -> None:
        """The link's end of the pipe is gone: the actor failed (see ``death``)."""
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn, self.link = None, None


class Link:
    """The two threads between a remote slot's pipe and its actor."""

    def __init__(self, slot: RemoteSlot, end: Connection) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        self.node = slot.node
        self.settings = slot.settings
        self.end = end
        self.failure: Optional[tuple[str, str]] = None
        self.pid: Optional[int] = None
        self.rss = 0
        self.memory = (0, 0)
        self.stages: dict[int, Path] = {}
        self.closed = threading.Event()
        options: dict[str, Any] = {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(slot.node.node_id, soft=False),
            "max_concurrency": 3, "max_restarts": 0,
            **actor_resources(slot.kind, slot.spec.threads, slot.node, slot.settings)}
        self.actor = _actor_class().options(**options).remote(
            slot.spec, slot.settings.shared, slot.settings.chunk_size)
        for target, name in ((self._up, "up"), (self._down, "down")):
            threading.Thread(target=target, daemon=True, name=f"stemd-{slot.name}-{name}").start()

    def close(self) -> None:
        """End the actor (its process goes, as a killed local worker) and both threads."""
        import ray
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception as exc:   # already gone with its node
            log.debug("killing the actor on %s: %s", self.node.host, exc)
        try:
            self.end.close()
        except OSError:
            pass

    # -- head -> actor ---------------------------------------------------------------
    def _up(self) -> None:
        while not self.closed.is_set():
            try:
                message = self.end.recv()
            except (EOFError, OSError):
                return
            try:
                self._forward(message)
            except Exception as exc:
                self._failed(exc)
                return

    def _forward(self, message: Any) -> None:
        import ray
        chunks = None
        if messages.kind(message) == "ahead":
            return                    # decoding ahead is for local workers (a head path)
        if messages.kind(message) == "task":
            task = messages.task_of(message)
            self.stages[task.job_id] = Path(task.stage_dir)
            if not self.settings.shared:
                chunks = put_file(Path(task.input), self.settings.chunk_size)
        ray.get(self.actor.put.remote(message, chunks), timeout=CALL_TIMEOUT)

    # -- actor -> head ---------------------------------------------------------------
    def _down(self) -> None:
        import ray
        from ray.exceptions import GetTimeoutError
        while not self.closed.is_set():
            try:
                found, memory = ray.get(self.actor.take.remote(POLL), timeout=CALL_TIMEOUT)
            except GetTimeoutError:
                continue
            except Exception as exc:
                self._failed(exc)
                return
            self.rss = memory["rss"]
            self.memory = (memory["available"], memory["total"])
            for message in found:
                self._deliver(message)

    def _deliver(self, message: Any) -> None:
        if isinstance(message, Stems):
            message = self._receive_stems(message)
        elif messages.kind(message) == "ready":
            self.pid = messages.ready_pid(message)
        try:
            self.end.send(message)
        except OSError:
            self.closed.set()

    def _receive_stems(self, message: Stems) -> Any:
        stage = self.stages.pop(message.job_id)
        try:
            for rel, refs in message.files.values():
                get_file(refs, stage / rel)
        except OSError as exc:
            return messages.failed(message.job_id, "disk", f"The stems from node {self.node.host} "
                                   f"could not be written: {exc}.",
                                   "Check free space of the outbox.", False)
        stems = {name: stage / rel for name, (rel, _refs) in message.files.items()}
        return messages.done(message.job_id, replace(message.result, stems=stems), message.wall)

    def _failed(self, exc: Exception) -> None:
        if self.closed.is_set():
            return
        lost = not node_alive(self.node.node_id, NODE_GRACE)
        self.failure = ("node_lost" if lost else "crash", f"{type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}")
        log.warning("worker actor on node %s failed (%s): %s", self.node.host,
                    self.failure[0], self.failure[1])


@functools.lru_cache(maxsize=1)
def _actor_class() -> Any:
    """The worker actor class, registered with Ray once per head process."""
    import ray
    from stemd.cluster.actor import WorkerActor
    return ray.remote(WorkerActor)


def node_alive(node_id: str, grace: float) -> bool:
    """Whether Ray still counts the node in; waits up to ``grace`` for a node death to show."""
    import ray
    deadline = time.monotonic() + grace
    while True:
        alive = any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(1.0)
