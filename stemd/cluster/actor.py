"""The worker actor: runs on a Ray node and wraps the same ``Worker`` as a local process.

The actor holds one end of a pipe and serves the worker on the other end in a thread,
so the worker's model stays loaded between jobs exactly as in a local worker. In
``object-store`` mode it writes the input it receives in chunks to a scratch folder
and hands the stems back as chunks; in ``shared`` mode paths travel unchanged.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import psutil

from stemd.cluster import messages
from stemd.cluster.transfer import get_file, put_file
from stemd.engine.types import SeparationResult
from stemd.worker import process as worker
from stemd.worker.process import WorkerSpec
from stemd.worker.protocol import Task

log = logging.getLogger(__name__)
SCRATCH_PREFIX = "stemd-actor-"


@dataclass(frozen=True)
class Stems:
    """A finished job as the actor returns it: the stem files as chunks in the object store."""

    job_id: int
    result: SeparationResult
    wall: float
    files: dict[str, tuple[str, list[Any]]]     # stem -> (path under the stage dir, chunks)


class WorkerActor:
    def __init__(self, spec: WorkerSpec, shared: bool, chunk_size: int) -> None:
        self.shared = shared
        self.chunk_size = chunk_size
        _remove_stale_scratch(Path(tempfile.gettempdir()))
        self.scratch = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{os.getpid()}"
        self.scratch.mkdir(exist_ok=True)
        self.conn, child = multiprocessing.Pipe()
        self.thread = threading.Thread(target=worker.serve, args=(child, spec), daemon=True,
                                       name="stemd-worker")
        self.thread.start()

    def describe(self) -> dict[str, Any]:
        import ray
        return {"node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def put(self, message: Any, chunks: Optional[list[Any]]) -> None:
        """A message for the worker; a task's input arrives as ``chunks`` (object store)."""
        if messages.kind(message) == "task":
            message = messages.with_task(message, self._localize(messages.task_of(message), chunks or []))
        self.conn.send(message)

    def take(self, timeout: float) -> tuple[list[Any], dict[str, int]]:
        """The worker's messages (waiting up to ``timeout`` for one) and this node's memory."""
        found = []
        if self.conn.poll(timeout):
            while self.conn.poll():
                found.append(self._outbound(self.conn.recv()))
        return found, _memory()

    def _localize(self, task: Task, chunks: list[Any]) -> Task:
        """Scratch space on this node; the input and the stems too unless paths are shared."""
        root = self._root(task.job_id)
        shutil.rmtree(root, ignore_errors=True)
        if self.shared:
            return replace(task, work_dir=str(root / "work"))
        local_input = root / "input" / Path(task.input).name
        get_file(chunks, local_input)
        return replace(task, input=str(local_input), stage_dir=str(root / "stage"),
                       work_dir=str(root / "work"))

    def _outbound(self, message: Any) -> Any:
        """A finished job's stems go back as chunks; its scratch folder goes."""
        if messages.kind(message) not in ("done", "failed"):
            return message
        root = self._root(messages.job_of(message))
        try:
            if messages.kind(message) == "done" and not self.shared:
                job_id, result, wall = messages.done_parts(message)
                stage = root / "stage"
                files = {name: (str(Path(path).relative_to(stage)),
                                put_file(Path(path), self.chunk_size))
                         for name, path in result.stems.items()}
                return Stems(job_id, result, wall, files)
            return message
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _root(self, job_id: int) -> Path:
        return self.scratch / str(job_id)


def _remove_stale_scratch(folder: Path) -> None:
    """Scratch folders of actors that were killed (cancel, deadline, lost head)."""
    for entry in folder.glob(f"{SCRATCH_PREFIX}*"):
        pid = entry.name[len(SCRATCH_PREFIX):]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _memory() -> dict[str, int]:
    memory = psutil.virtual_memory()
    return {"rss": int(psutil.Process().memory_info().rss), "available": int(memory.available),
            "total": int(memory.total)}
