"""Worker slots: one process each, started lazily, watched, killed and respawned.

A slot is changed by the dispatcher thread only; the main thread reads it (status,
health). Every access to the process and its pipe holds the slot's lock, so a read
never meets a process being closed.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Optional

import psutil

from stemd.worker import process as worker
from stemd.worker.process import WorkerSpec
from stemd.worker.protocol import Stop, Task, ToWorker

log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")


@dataclass
class Running:
    """The job a slot is working on. Intervals use the monotonic clock (``started``,
    ``deadline``, ``last_progress``); ``started_at`` is the wall-clock time, for display."""

    job_id: int
    key: str
    attempt: int
    task: Task
    started: float
    deadline: float
    last_progress: float
    estimate: int
    duration: float
    model: str
    started_at: float = 0.0
    progress: float = 0.0
    peak_rss: int = 0
    cancel: bool = False


@dataclass(eq=False)
class Slot:
    index: int
    kind: str                     # "gpu" | "cpu"
    device: str                   # "cuda:0", "mps", "cpu"
    spec: WorkerSpec
    process: Optional[BaseProcess] = None
    conn: Optional[Connection] = None
    running: Optional[Running] = None
    jobs_done: int = 0
    free_vram: Optional[int] = None
    retired: bool = False
    preloaded: Optional[str] = None          # the model a Preload asked for, until Unloaded
    ahead_of: Optional[int] = None           # the job whose worker was told what comes next
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    def alive(self) -> bool:
        with self._lock:
            return self.process is not None and self.process.is_alive()

    def pid(self) -> Optional[int]:
        with self._lock:
            return self.process.pid if self.process is not None else None

    def start(self) -> None:
        parent, child = _CTX.Pipe()
        process = _CTX.Process(target=worker.main, args=(child, self.spec),
                               name=f"stemd-worker-{self.name}", daemon=False)
        process.start()
        child.close()
        with self._lock:
            self.process, self.conn = process, parent
        self.jobs_done = 0
        self.preloaded = None
        log.info("slot %s: worker started (pid %s, device %s, %s threads)", self.name,
                 process.pid, self.device, self.spec.threads or "default")

    def ensure_started(self) -> None:
        if not self.alive():
            self.close()
            self.start()

    def send(self, message: ToWorker) -> bool:
        with self._lock:
            return send_on(self.conn, message)

    def close_pipe(self) -> None:
        """The worker's end is gone (EOF): stop listening to it."""
        with self._lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def rss(self) -> int:
        """Resident memory of the worker process and its children (ffmpeg).

        A child between fork and exec still shares the worker's pages, and psutil would
        report them twice: children still running the worker's own program are skipped.
        """
        pid = self.pid()
        if pid is None:
            return 0
        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            name = proc.name()
            return int(total + sum(_exec_child_rss(c, name) for c in proc.children(recursive=True)))
        except psutil.Error:
            return 0

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.alive() and self.send(Stop()):
            with self._lock:
                if self.process is not None:
                    self.process.join(timeout)
        self.kill()

    def kill(self, grace: float = 3.0) -> Optional[int]:
        """End the worker: SIGTERM, then SIGKILL. Returns its exit code."""
        with self._lock:
            process = self.process
            if process is None:
                return None
            if process.is_alive():
                _kill_children(process.pid)
                process.terminate()
                process.join(grace)
            if process.is_alive():
                process.kill()
                process.join(grace)
            code = process.exitcode
            self.close()
            return code

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                except OSError:
                    pass
            if self.process is not None:
                try:
                    self.process.close()
                except ValueError:
                    pass
            self.process, self.conn = None, None


def _kill_children(pid: Optional[int]) -> None:
    """Children of a worker (an ffmpeg decoder) go with it."""
    if pid is None:
        return
    try:
        for child in psutil.Process(pid).children(recursive=True):
            child.kill()
    except psutil.Error:
        pass


def describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _exec_child_rss(child: psutil.Process, worker_name: str) -> int:
    try:
        return 0 if child.name() == worker_name else int(child.memory_info().rss)
    except psutil.Error:     # it ended meanwhile
        return 0


def send_on(conn: Optional[Connection], message: Any) -> bool:
    """Send ``message`` to a worker; False when its pipe is gone (the caller fails the job)."""
    if conn is None:
        return False
    try:
        conn.send(message)
        return True
    except OSError:
        return False
