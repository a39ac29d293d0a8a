"""The worker process: runs separations, keeps its model loaded between jobs.

It is started by the supervisor (``multiprocessing`` spawn context), receives the
messages of ``stemd.worker.protocol`` over a pipe (``TaskMsg``, ``Preload``, ``Ahead``,
``Stop``) and answers with ``Ready``, ``Progress``, ``Done``, ``Failed``, ``Unloaded``
and ``LogLine`` (its log records, written by the supervisor in its format). It never
touches the job database. It exits when its parent dies (Linux ``PR_SET_PDEATHSIG``
plus a parent-pid check), so no orphan holds a GPU.
"""
from __future__ import annotations

import dataclasses
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

from stemd import logs
from stemd.worker import allocator
from stemd.engine.types import ModelSource
from stemd.worker.lookahead import Lookahead
from stemd.worker.protocol import (Ahead, Channel, Done, Failed, LogLine, Preload, Progress, Ready, Stop, Task, TaskMsg, ToWorker, Unloaded)
from stemd.errors import EngineError, InputChanged, InputError, OutOfMemory, StemdError
from stemd.jobs.identity import InputIdentity
from stemd.output.naming import render_stem_path

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5   # seconds between progress messages
LOOKAHEAD_KEEP = 30.0     # an input decoded ahead is dropped after this long without a job
DOWNLOAD_SHARE = 0.1      # of a link job's progress


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




def main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of the worker process."""
    _die_with_parent(spec.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the supervisor decides when we stop
    channel = Channel(conn)
    logs.install(_Forward(channel), spec.log_level)
    _configure_torch(spec)
    log.debug("slot %s: malloc: %s", spec.slot, allocator.in_use())
    Worker(channel, spec).serve()


def serve(conn: Connection, spec: WorkerSpec) -> None:
    """Serve tasks on ``conn`` inside a process stemd does not own (a cluster worker
    actor): no parent watch or signal handling; log records go back like a worker's."""
    channel = Channel(conn)
    logs.install(_Forward(channel), spec.log_level)
    _configure_torch(spec)
    Worker(channel, spec).serve()


class Worker:
    def __init__(self, channel: Channel, spec: WorkerSpec) -> None:
        self.conn = channel
        self.spec = spec
        self.model: Any = None
        self.model_name: Optional[str] = None
        self.last_job = time.monotonic()
        self.lookahead = Lookahead()
        self.pending: deque[ToWorker] = deque()   # received while a job ran

    def serve(self) -> None:
        self.conn.send(Ready(os.getpid(), _free_vram(self.spec.device)))
        while True:
            if not self.pending and not self.conn.poll(1.0):
                self._on_idle()
                continue
            try:
                message = self.pending.popleft() if self.pending else self.conn.recv()
            except EOFError:
                return
            if isinstance(message, Stop):
                return
            if isinstance(message, Preload):
                self._preload(message.model)
            elif isinstance(message, TaskMsg):
                with logs.job_context(message.task.job_id):
                    self._run(message.task)
                self.last_job = time.monotonic()
                _trim_heap()

    def check_messages(self) -> None:
        """While a job runs: start decoding ahead when told, keep the rest for later."""
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                return
            if not isinstance(message, Ahead):
                self.pending.append(message)
            elif message.model == self.model_name:
                self.lookahead.start(self.model, message.model, message.job_id,
                                     message.input, message.folder)

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
            self.conn.send(Done(task.job_id, result, time.monotonic() - started))

    def _separate(self, task: Task) -> Any:
        from stemd import engine
        model = self._model_for(task.options.model)
        stage = Path(task.stage_dir)
        work = Path(task.work_dir)
        stage.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)

        reporter = _ProgressReporter(self.conn, task.job_id, self.check_messages)
        if task.url is not None:
            return self._separate_link(task, model, stage, work, reporter)
        opened = verify_input(task)
        prepared = self.lookahead.take(task.job_id, task.input, task.options.model)
        result = engine.separate(model, Path(task.input), task.options, stage,
                                 _filename(task, task.track), reporter, work, prepared)
        if opened is not None and not _same_file(opened, task.input):
            raise InputChanged("The input was replaced while it was being separated.",
                               "stemd separates the new content as a new job.")
        return result

    def _separate_link(self, task: Task, model: Any, stage: Path, work: Path,
                       reporter: "_ProgressReporter") -> Any:
        """A link job: download (the first DOWNLOAD_SHARE of its progress), then separate the
        downloaded file, in the attempt's work folder; the title names the track."""
        from stemd import engine
        from stemd.links.download import download
        assert task.url is not None and task.links is not None
        got = download(task.url, work / "download", task.links,
                       lambda f: reporter(DOWNLOAD_SHARE * f),
                       lambda path: engine.probe(path).duration)
        log.info("job %s: downloaded %r (%s)", task.job_id, got.title, got.path.name)
        result = engine.separate(model, got.path, task.options, stage, _filename(task, got.title),
                                 lambda f: reporter(DOWNLOAD_SHARE + (1 - DOWNLOAD_SHARE) * f),
                                 work)
        return dataclasses.replace(result, title=got.title)

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
        self.conn.send(Unloaded(os.getpid()))

    def _send_failure(self, task: Task, exc: StemdError) -> None:
        failed = Failed.of(task.job_id, exc)
        if exc.kind == "model":      # name the profile: which one needs the missing model
            failed = dataclasses.replace(failed, message=f"Profile {task.profile}: {exc.message}")
        log.warning("job %s: %s", task.job_id, exc)
        self.conn.send(failed)


class _Forward(logging.Handler):
    """Sends each record to the supervisor, which writes it in its own format."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = logging.Formatter().formatException(record.exc_info) \
                if record.exc_info else None
            self.channel.send(LogLine(record.name, record.levelno, record.getMessage(),
                                      record.created, getattr(record, "job", None), exc_text))
        except Exception:   # the pipe is gone: the supervisor is stopping us anyway
            pass


def _filename(task: Task, track: str) -> Callable[[str], str]:
    def filename(stem: str) -> str:
        return render_stem_path(task.template, track=track, stem=stem,
                                ext=task.options.format.ext, model=task.options.model,
                                profile=task.profile, folder=task.folder)
    return filename


def verify_input(task: Task) -> Optional[InputIdentity]:
    """Before decoding: the file is the content its job recorded (its hash), or the job is
    superseded (``InputChanged``); the stems are never labelled or cached under another
    content's hash. Returns the file's identity as opened (None: nothing was recorded)."""
    expected = task.identity
    if expected is None or expected.sha256 is None:
        return None
    try:
        opened = InputIdentity.read(task.input)
    except FileNotFoundError:
        raise InputError("The input file is gone: it was moved or deleted before it was "
                         "separated.", "Drop the file into the inbox again.") from None
    except OSError as exc:
        raise InputError(f"The input file cannot be read: {exc.strerror}.",
                         "Check the file's permissions and that the disk is healthy.") from None
    if opened.sha256 != expected.sha256:
        raise InputChanged("The input was replaced after its job was queued (its content "
                           "is not the one recorded).", "stemd separates the new content as a new job.")
    return opened


def _same_file(opened: InputIdentity, path: str) -> bool:
    try:
        return InputIdentity.stat(path).same_file(opened)
    except OSError:
        return False


class _ProgressReporter:
    """Sends progress (0-100) at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, conn: Channel, job_id: int, on_tick: Callable[[], None]) -> None:
        self.conn = conn
        self.job_id = job_id
        self.on_tick = on_tick
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        self.on_tick()
        if now - self.last >= PROGRESS_INTERVAL or fraction >= 1.0:
            self.last = now
            self.conn.send(Progress(self.job_id, max(0.0, min(100.0, fraction * 100.0))))


def _configure_torch(spec: WorkerSpec) -> None:
    if spec.threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(spec.threads)
        os.environ["MKL_NUM_THREADS"] = str(spec.threads)
    if spec.source.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if spec.device == "mps":     # operators MPS lacks run on the CPU instead of failing
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
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
