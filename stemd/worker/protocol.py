"""The messages between the dispatcher and a worker process, one frozen dataclass each.

Both ends send these values over a ``multiprocessing`` pipe (pickled). To the worker:
``TaskMsg`` (separate a job), ``Preload`` (load a model before its job arrives),
``Ahead`` (decode the next job's input while this one runs) and ``Stop``. From the
worker: ``Ready`` (started), ``Progress``, ``Done``, ``Failed``, ``Unloaded`` (the model
was freed after being idle) and ``LogLine`` (a log record, written by the supervisor in
its own format). A worker sends from several threads, so it wraps its end of the pipe
in a ``Channel``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Optional, Union

from stemd.engine.types import SeparationOptions, SeparationResult
from stemd.errors import StemdError
from stemd.links.download import LinkLimits


@dataclass(frozen=True)
class Task:
    """One attempt at one job, as the worker needs it."""

    job_id: int
    attempt: int
    input: str
    options: SeparationOptions
    stage_dir: str           # where the stems are written (on the outbox's filesystem)
    work_dir: str            # scratch space for this attempt
    template: str
    track: str
    profile: str
    folder: str = ""         # the input's folder relative to its inbox (template field {folder})
    url: Optional[str] = None            # a link job: download this first (its first phase)
    links: Optional[LinkLimits] = None


# -- to the worker ----------------------------------------------------------------------
@dataclass(frozen=True)
class TaskMsg:
    task: Task


@dataclass(frozen=True)
class Preload:
    model: str


@dataclass(frozen=True)
class Ahead:
    job_id: int
    input: str
    model: str
    folder: str


@dataclass(frozen=True)
class Stop:
    pass


# -- from the worker --------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    pid: int
    free_vram: Optional[int]


@dataclass(frozen=True)
class Progress:
    job_id: int
    percent: float           # 0-100


@dataclass(frozen=True)
class Done:
    job_id: int
    result: SeparationResult
    wall: float              # seconds the attempt took in the worker


@dataclass(frozen=True)
class Failed:
    job_id: int
    kind: str                # StemdError.kind: "input", "oom", "device", "engine", ...
    message: str
    hint: str
    permanent: bool

    @classmethod
    def of(cls, job_id: int, error: StemdError) -> "Failed":
        return cls(job_id, error.kind, error.message, error.hint, error.permanent)


@dataclass(frozen=True)
class Unloaded:
    pid: int


@dataclass(frozen=True)
class LogLine:
    """A worker's log record, already formatted into one message."""

    name: str
    levelno: int
    message: str
    created: float
    job: Optional[int] = None
    exc_text: Optional[str] = None


ToWorker = Union[TaskMsg, Preload, Ahead, Stop]
FromWorker = Union[Ready, Progress, Done, Failed, Unloaded, LogLine]


class Channel:
    """A worker's end of the pipe; ``send`` may be called from any thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: FromWorker) -> None:
        with self._lock:
            self.conn.send(message)

    def poll(self, timeout: float = 0.0) -> bool:
        return self.conn.poll(timeout)

    def recv(self) -> ToWorker:
        message: ToWorker = self.conn.recv()
        return message
