"""Worker slots: one process each, started lazily, watched, killed and respawned."""
from __future__ import annotations

import logging
import multiprocessing
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Optional

import psutil

from stemd.worker import process as worker
from stemd.worker.process import Task, WorkerSpec

log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")


@dataclass
class Running:
    """The job a slot is working on."""

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
    progress: float = 0.0
    peak_rss: int = 0
    cancel: bool = False


@dataclass
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self) -> None:
        parent, child = _CTX.Pipe()
        process = _CTX.Process(target=worker.main, args=(child, self.spec),
                               name=f"stemd-worker-{self.name}", daemon=False)
        process.start()
        child.close()
        self.process, self.conn = process, parent
        self.jobs_done = 0
        self.extra.pop("preloaded", None)
        log.info("slot %s: worker started (pid %s, device %s, %s threads)", self.name,
                 process.pid, self.device, self.spec.threads or "default")

    def ensure_started(self) -> None:
        if not self.alive():
            self.close()
            self.start()

    def send(self, message: tuple[Any, ...]) -> bool:
        try:
            assert self.conn is not None
            self.conn.send(message)
            return True
        except (OSError, AssertionError, BrokenPipeError):
            return False

    def rss(self) -> int:
        """Resident memory of the worker process and its children (ffmpeg).

        A child between fork and exec still shares the worker's pages, and psutil would
        report them twice: children still running the worker's own program are skipped.
        """
        if self.process is None or self.process.pid is None:
            return 0
        try:
            proc = psutil.Process(self.process.pid)
            total = proc.memory_info().rss
            name = proc.name()
            return int(total + sum(_exec_child_rss(c, name) for c in proc.children(recursive=True)))
        except psutil.Error:
            return 0

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to exit; kill it if it does not."""
        if self.alive():
            self.send(("stop",))
            assert self.process is not None
            self.process.join(timeout)
        self.kill()

    def kill(self, grace: float = 3.0) -> Optional[int]:
        """End the worker: SIGTERM, then SIGKILL. Returns its exit code."""
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
