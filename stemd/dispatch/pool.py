"""The slot pool: worker processes, one per slot, and what happens to them.

The pool spawns, retires, recycles and prewarms workers, reads their messages, notices
dead pipes and dead processes, watches deadlines and progress, and takes snapshots. It
knows nothing of the job database: it reports what happened to a slot's job as a typed
event (done, failed, progress, died, deadline passed, stalled, cancel asked), and the
dispatcher decides what becomes of the job. Intervals use the monotonic clock.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from typing import Any, Optional, Union
from pathlib import Path

from stemd import logs
from stemd.config import WorkersConfig
from stemd.dispatch.slots import Running, Slot, describe_exit
from stemd.engine.types import ModelSource, SeparationResult
from stemd.worker.process import WorkerSpec
from stemd.worker.protocol import (Done, Failed, FromWorker, LogLine, Preload, Progress, Ready, Unloaded)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobDone:
    slot: Slot
    run: Running
    result: SeparationResult
    wall: float


@dataclass(frozen=True)
class JobFailed:
    slot: Slot
    run: Running
    failure: Failed


@dataclass(frozen=True)
class JobProgress:
    slot: Slot
    run: Running
    percent: float


@dataclass(frozen=True)
class WorkerDied:
    slot: Slot
    run: Running
    exit: str                 # "killed by signal SIGKILL", "exit code 1"


@dataclass(frozen=True)
class DeadlinePassed:
    slot: Slot
    run: Running


@dataclass(frozen=True)
class Stalled:
    slot: Slot
    run: Running


@dataclass(frozen=True)
class CancelAsked:
    slot: Slot
    run: Running


PoolEvent = Union[JobDone, JobFailed, JobProgress, WorkerDied, DeadlinePassed, Stalled, CancelAsked]


class SlotPool:
    def __init__(self, workers: WorkersConfig, source: ModelSource, gpus: list[str],
                 cpu_slots: int, threads: int, backend: str = "torch",
                 export_dir: Optional[Path] = None) -> None:
        self.workers = workers
        self.source = source
        self.slots: list[Slot] = []
        self._retiring: list[Slot] = []
        self.cluster: Any = None                    # a ClusterPool: remote slots on Ray nodes
        self.resize(workers, source, gpus, cpu_slots, threads, backend, export_dir)

    # -- which slots --------------------------------------------------------------------
    def resize(self, workers: WorkersConfig, source: ModelSource, gpus: list[str],
               cpu_slots: int, threads: int, backend: str = "torch",
               export_dir: Optional[Path] = None) -> None:
        """One slot per GPU and ``cpu_slots`` CPU slots; a slot whose worker would differ
        is retired (a busy one finishes its job first). ``backend`` and ``export_dir``:
        what runs the model in the workers (``engine.backend``)."""
        self.workers, self.source = workers, source
        self.backend, self.export_dir = backend, export_dir
        wanted = [("gpu", device, 0) for device in gpus] + [("cpu", "cpu", threads)] * cpu_slots
        kept: list[Slot] = []
        remote = [s for s in self.slots if getattr(s, "node", None) is not None]
        for index, (kind, device, count) in enumerate(wanted):
            spec = self._spec(index, device, count)
            old = next((s for s in self.slots if s not in remote and s.kind == kind and s.device == device
                        and s not in kept and not s.retired), None)
            if old is not None and old.spec == spec:
                kept.append(old)
                continue
            if old is not None:
                old.retired = True
            kept.append(Slot(index, kind, device, spec))
        for slot in self.slots:
            if slot not in kept and slot not in remote:
                slot.retired = True
        self._retiring += [s for s in self.slots if s.retired and s not in kept]
        self.slots = kept + remote

    # -- remote slots (cluster mode) ----------------------------------------------------
    def attach_cluster(self, cluster: Any) -> None:
        """``cluster.loop(now)`` gives the slots of Ray nodes that join and leave."""
        self.cluster = cluster

    def scan_cluster(self, now: float) -> None:
        if self.cluster is None:
            return
        added, gone = self.cluster.loop(now)
        self.slots = self.slots + added
        for slot in gone:
            self.slots = [s for s in self.slots if s is not slot]
            if slot.running:
                self._retiring.append(slot)   # ``watch`` reports its job's worker dead

    def nodes(self) -> list[dict[str, Any]]:
        return self.cluster.snapshot() if self.cluster is not None else []

    def _spec(self, index: int, device: str, threads: int) -> WorkerSpec:
        return WorkerSpec(slot=index, device=device, threads=threads, source=self.source,
                          idle_unload=self.workers.idle_unload, parent_pid=os.getpid(),
                          log_level=logs.level_name(), backend=self.backend,
                          export_dir=self.export_dir)

    def all_slots(self) -> list[Slot]:
        """The current slots and retired ones still finishing a job."""
        return self.slots + [s for s in self._retiring if s.running]

    def free(self) -> list[Slot]:
        return [s for s in self.slots if s.running is None]

    def busy(self) -> bool:
        return any(s.running for s in self.all_slots())

    # -- messages -----------------------------------------------------------------------
    def read(self, timeout: float) -> list[PoolEvent]:
        """Wait up to ``timeout`` for worker messages; what they say about jobs."""
        conns = {slot.conn: slot for slot in self.all_slots() if slot.conn is not None}
        if not conns:
            if timeout:
                time.sleep(timeout)
            return []
        events: list[PoolEvent] = []
        for conn in wait_connections(list(conns), timeout):
            slot = conns[conn]  # type: ignore[index]
            events += self._drain(slot, conn)  # type: ignore[arg-type]
        return events

    def _drain(self, slot: Slot, conn: Connection) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        try:
            while conn.poll():
                event = self._on_message(slot, conn.recv())
                if event is not None:
                    events.append(event)
        except (EOFError, OSError):
            self._pipe_closed(slot)
        return events

    def _pipe_closed(self, slot: Slot) -> None:
        """The worker is gone: stop waiting on its pipe (else every wait returns at once).
        A busy slot's death is reported by ``watch``; an idle one is reaped here."""
        slot.close_pipe()
        if slot.running is None:
            code = slot.kill()
            log.warning("slot %s: its idle worker exited (%s); a new one starts when needed",
                        slot.name, describe_exit(code))

    def _on_message(self, slot: Slot, message: FromWorker) -> Optional[PoolEvent]:
        run = slot.running
        if isinstance(message, LogLine):
            logs.replay(message.name, message.levelno, message.message, message.created,
                        message.job, message.exc_text)
        elif isinstance(message, Ready):
            slot.free_vram = message.free_vram
            if run is not None:
                _clock_from(run, time.monotonic())
        elif isinstance(message, Unloaded):
            slot.preloaded = None
        elif run is None or getattr(message, "job_id", None) != run.job_id:
            return None                      # about a job this slot no longer runs
        elif isinstance(message, Progress):
            run.progress, run.last_progress = message.percent, time.monotonic()
            return JobProgress(slot, run, message.percent)
        elif isinstance(message, Done):
            return JobDone(slot, run, message.result, message.wall)
        elif isinstance(message, Failed):
            return JobFailed(slot, run, message)
        return None

    # -- watching -----------------------------------------------------------------------
    def watch(self, now: float) -> list[PoolEvent]:
        """What happened to running jobs by ``now`` (monotonic): died, cancel asked,
        deadline passed, stalled. A dead worker is reaped here."""
        events: list[PoolEvent] = []
        for slot in self.all_slots():
            event = self._watch(slot, now)
            if event is not None:
                events.append(event)
        return events

    def _watch(self, slot: Slot, now: float) -> Optional[PoolEvent]:
        run = slot.running
        if run is None:
            return None
        run.peak_rss = max(run.peak_rss, slot.rss())
        if not slot.alive():
            return WorkerDied(slot, run, describe_exit(slot.kill()))
        if run.cancel:
            return CancelAsked(slot, run)
        if now > run.deadline:
            return DeadlinePassed(slot, run)
        if now - run.last_progress > self.workers.stall_timeout:
            return Stalled(slot, run)
        return None

    def cancel(self, job_id: int) -> bool:
        for slot in self.all_slots():
            if slot.running and slot.running.job_id == job_id:
                slot.running.cancel = True
                return True
        return False

    # -- worker lifetimes ---------------------------------------------------------------
    def prewarm(self, model: str, device: str) -> None:
        """Start an idle slot's worker and have it load ``model`` before its job arrives."""
        free = self.free()
        gpu = [s for s in free if s.kind == "gpu"]
        cpu = [s for s in free if s.kind == "cpu"]
        order = {"gpu": gpu, "cpu": cpu}.get(device) or (gpu + cpu)
        if not order or (order[0].alive() and order[0].preloaded == model):
            return
        slot = order[0]
        slot.ensure_started()
        if slot.send(Preload(model)):
            slot.preloaded = model

    def recycle_if_due(self, slot: Slot) -> None:
        """After many jobs, or once its memory has grown, a worker is replaced."""
        rss = slot.rss()
        if slot.jobs_done >= self.workers.max_jobs_per_worker or rss > self.workers.max_worker_rss:
            log.info("slot %s: recycling its worker after %s jobs (%d MiB resident)", slot.name,
                     slot.jobs_done, rss >> 20)
            slot.stop()

    def retire_idle(self) -> None:
        for slot in list(self._retiring):
            if slot.running is None:
                slot.stop()
                self._retiring.remove(slot)

    # -- reading from other threads -----------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        slots = []
        for slot in self.slots:
            run = slot.running
            node = getattr(slot, "node", None)
            slots.append({"name": slot.name, "kind": slot.kind, "device": slot.device, "pid": slot.pid(),
                          "node": node.label() if node is not None else None,
                          "alive": slot.alive(), "job": run.job_id if run else None,
                          "progress": round(run.progress, 1) if run else None,
                          "started": run.started_at if run else None,
                          "rss": slot.rss(), "jobs_done": slot.jobs_done})
        return slots

    def healthy(self) -> bool:
        """Busy slots have a live worker (a dead one is replaced on the next step)."""
        return all(slot.alive() for slot in self.slots if slot.running)


def _clock_from(run: Running, now: float) -> None:
    """The job was handed to a worker still starting (importing torch can take seconds on
    a busy machine): its deadline and stall clock start when the worker is ready."""
    delta = max(0.0, now - run.started)
    run.started += delta
    run.deadline += delta
    run.last_progress = max(run.last_progress, now)
