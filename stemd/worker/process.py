"""The worker process: runs separations, keeps its model loaded between jobs.

It is started by the supervisor (``multiprocessing`` spawn context), receives
``Task`` values over a pipe and answers with ``("progress"|"done"|"failed", ...)``
messages. It never touches the job database. It exits when its parent dies
(Linux ``PR_SET_PDEATHSIG`` plus a parent-pid check), so no orphan holds a GPU.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Optional

from stemd.worker import allocator
from stemd.engine.types import ModelSource, SeparationOptions
from stemd.worker.lookahead import Lookahead
from stemd.errors import EngineError, OutOfMemory, StemdError
from stemd.output.naming import render_stem_path

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5   # seconds between progress messages
LOOKAHEAD_KEEP = 30.0     # an input decoded ahead is dropped after this long without a job


@dataclass(frozen=True)
class WorkerSpec:
    slot: int
    device: str              # "cpu", "cuda:0", "mps"
    threads: int             # torch intra-op threads; 0 leaves torch's default
    source: ModelSource
    idle_unload: float       # seconds without a job before the model is freed
    parent_pid: int
    log_level: str = "info"
    backend: str = "torch"   # engine.backend: auto | torch | onnxruntime
    export_dir: Optional[Path] = None   # where the engine caches exported networks


@dataclass(frozen=True)
class Task:
    job_id: int
    attempt: int
    input: str
    options: SeparationOptions
    stage_dir: str           # where the stems are written (on the outbox's filesystem)
    work_dir: str            # scratch space for this attempt
    template: str
    track: str
    profile: str


def main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of the worker process."""
    _die_with_parent(spec.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides when we stop
    logging.basicConfig(level=spec.log_level.upper(), stream=sys.stderr,
                        format=f"worker[{spec.slot}] %(levelname)s %(name)s: %(message)s")
    _configure_torch(spec)
    log.debug("malloc: %s", allocator.in_use())
    Worker(conn, spec).serve()


class Worker:
    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.model: Any = None
        self.model_name: Optional[str] = None
        self.last_job = time.monotonic()
        self.lookahead = Lookahead()
        self.pending: deque[tuple[Any, ...]] = deque()   # received while a job ran

    def serve(self) -> None:
        self.conn.send(("ready", os.getpid(), _free_vram(self.spec.device)))
        while True:
            if not self.pending and not self.conn.poll(1.0):
                self._on_idle()
                continue
            try:
                message = self.pending.popleft() if self.pending else self.conn.recv()
            except EOFError:
                return
            if message[0] == "stop":
                return
            if message[0] == "unload":
                self._unload()
            elif message[0] == "preload":
                self._preload(message[1])
            elif message[0] == "task":
                self._run(message[1])
                self.last_job = time.monotonic()
                _trim_heap()

    def check_messages(self) -> None:
        """While a job runs: start decoding ahead when told, keep the rest for later."""
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                return
            if message[0] != "ahead":
                self.pending.append(message)
                continue
            _, job_id, input, model_name, folder = message
            if model_name == self.model_name:
                self.lookahead.start(self.model, model_name, job_id, input, folder)

    def _on_idle(self) -> None:
        if time.monotonic() - self.last_job > LOOKAHEAD_KEEP:
            self.lookahead.discard()
        self._maybe_unload()

    def _run(self, task: Task) -> None:
        started = time.monotonic()
        try:
            result = self._separate(task)
        except StemdError as exc:
            self._send_failure(task, exc)
        except MemoryError:
            self._send_failure(task, OutOfMemory("The worker ran out of memory.",
                                                 "stemd retries with smaller batches."))
        except Exception as exc:  # a bug or a library surprise: report, keep serving
            log.error("job %s: unexpected error\n%s", task.job_id, traceback.format_exc())
            self._send_failure(task, EngineError(f"Separation failed: {type(exc).__name__}: {exc}",
                                                 "stemd will retry; see the log for details."))
        else:
            self.conn.send(("done", task.job_id, result, time.monotonic() - started))

    def _separate(self, task: Task) -> Any:
        from stemd import engine
        model = self._model_for(task.options.model)
        stage = Path(task.stage_dir)
        work = Path(task.work_dir)
        stage.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)

        def filename(stem: str) -> str:
            return render_stem_path(task.template, track=task.track, stem=stem,
                                    ext=task.options.format.ext, model=task.options.model,
                                    profile=task.profile)

        reporter = _ProgressReporter(self.conn, task.job_id, self.check_messages)
        prepared = self.lookahead.take(task.job_id, task.input, task.options.model)
        return engine.separate(model, Path(task.input), task.options, stage, filename,
                               reporter, work, prepared)

    def _model_for(self, name: str) -> Any:
        if self.model is not None and self.model_name == name:
            return self.model
        self._unload()
        from stemd import engine
        log.info("loading model %s on %s", name, self.spec.device)
        self.model = engine.load_model(name, self.spec.source, self.spec.device,
                                       self.spec.backend, self.spec.export_dir)
        self.model_name = name
        return self.model

    def _preload(self, name: str) -> None:
        """Load a model before its job arrives (a file is settling in an inbox)."""
        try:
            self._model_for(name)
        except StemdError as exc:
            log.info("could not preload model %s: %s", name, exc)
        self.last_job = time.monotonic()

    def _maybe_unload(self) -> None:
        idle = time.monotonic() - self.last_job
        if self.model is not None and idle >= self.spec.idle_unload:
            log.info("idle for %.0f s: unloading model %s", idle, self.model_name)
            self._unload()

    def _unload(self) -> None:
        if self.model is None:
            return
        self.model = None
        self.model_name = None
        gc.collect()
        if self.spec.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()
        self.conn.send(("unloaded", os.getpid()))

    def _send_failure(self, task: Task, exc: StemdError) -> None:
        payload = {"kind": exc.kind, "message": exc.message, "hint": exc.hint,
                   "permanent": exc.permanent}
        log.warning("job %s: %s", task.job_id, exc)
        self.conn.send(("failed", task.job_id, payload))


class _ProgressReporter:
    """Sends progress (0-100) at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, conn: Connection, job_id: int, on_tick: Callable[[], None]) -> None:
        self.conn = conn
        self.job_id = job_id
        self.on_tick = on_tick
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        self.on_tick()
        if now - self.last >= PROGRESS_INTERVAL or fraction >= 1.0:
            self.last = now
            self.conn.send(("progress", self.job_id, max(0.0, min(100.0, fraction * 100.0))))


def _configure_torch(spec: WorkerSpec) -> None:
    if spec.threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(spec.threads)
        os.environ["MKL_NUM_THREADS"] = str(spec.threads)
    if spec.source.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
        torch.set_num_interop_threads(1)


def _trim_heap() -> None:
    from stemd.engine import trim_heap
    trim_heap()


def _free_vram(device: str) -> Optional[int]:
    if not device.startswith("cuda"):
        return None
    import torch
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the supervisor dies, even if it was SIGKILLed."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent_pid:
        os._exit(0)
    thread = threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True)
    thread.start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)
