"""The dispatcher: which job runs where, memory admission, and what becomes of a job.

Huey-style: ``loop(now)`` is one step (read worker messages, watch running jobs,
start new ones); the daemon's dispatcher thread calls it a few times a second and
tests can drive it directly, with ``now`` on the monotonic clock. The worker
processes live in the slot pool (``stemd/dispatch/pool.py``), which reports what
happened to each job as an event; the dispatcher decides what to do with the job.
"""
from __future__ import annotations

import logging
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import psutil

from stemd.dispatch import admission
from stemd.dispatch.admission import Budget
from stemd.jobs.lifecycle import (Lifecycle, LifecycleSettings, PublishSettings, job_track,
                                  remove_attempt_dirs, stage_dir, work_dir)
from stemd.config import Config, WorkersConfig
from stemd.engine.backends import device_key, expected_backend
from stemd.engine.precision import choose_precision
from stemd.engine.types import ModelSource, SeparationResult
from stemd.output.publish import remove_empty_staging
from stemd.dispatch.pool import (CancelAsked, DeadlinePassed, JobDone, JobFailed, JobProgress, PoolEvent, SlotPool, Stalled, WorkerDied)
from stemd.dispatch.slots import Running, Slot
from stemd.jobs.store import Job, Store
from stemd.worker.protocol import Ahead, Failed, Task, TaskMsg
from stemd.links.download import LinkLimits

log = logging.getLogger(__name__)
LOOKAHEAD_AT = 50.0   # percent of a job done when its worker starts decoding the next input

SpaceCheckFn = Callable[[Job], Optional[str]]   # None = enough space, else why not
PRESSURE_BACKOFF = 30.0                          # seconds before a job stopped for memory may start again
RECHECK_WAITING = 2.0   # seconds between checks while the first job waits for memory or disk space


@dataclass(frozen=True)
class DispatchSettings:
    workers: WorkersConfig
    lifecycle: LifecycleSettings
    source: ModelSource
    links: Optional[LinkLimits] = None
    links_per_hour: int = 0          # link downloads started per hour; 0 = no limit
    backend: str = "torch"           # engine.backend
    export_dir: Optional[Path] = None

    @classmethod
    def from_config(cls, config: Config) -> "DispatchSettings":
        source = ModelSource(repo=config.models.repo, offline=config.models.offline,
                             allow_pickle=config.models.allow_pickle)
        links = config.links
        limits = LinkLimits(links.max_duration, links.max_filesize, links.download_timeout,
                            links.allow_private, tuple(links.allowed_hosts))
        return cls(config.workers, LifecycleSettings.from_config(config), source, limits,
                   links.rate_limit, config.engine.backend, config.export_dir)

    @property
    def publish(self) -> PublishSettings:
        return self.lifecycle.publish


class Dispatcher:
    def __init__(self, store: Store, settings: DispatchSettings, boot: str,
                 gpus: list[str], cpu_slots: int, threads: int,
                 space_check: Optional[SpaceCheckFn] = None,
                 lifecycle: Optional[Lifecycle] = None) -> None:
        self.store = store
        self.settings = settings
        self.boot = boot
        self.lifecycle = lifecycle or Lifecycle(store, settings.lifecycle, boot)
        self.space_check = space_check
        self.claiming = True
        self.waiting: dict[int, str] = {}
        self.paused_reason: Optional[str] = None
        self.model_stems: dict[str, int] = {}     # model -> stems it produces, once seen
        self._estimates: dict[int, int] = {}
        self._hold: tuple[float, int] = (0.0, 0)   # (until, free slots) while a job waits
        self._staging_touched = True               # staging may hold an empty folder
        self.backends: dict[int, str] = {}         # slot -> engine backend its last job ran on
        self.precisions: dict[tuple[int, str], str] = {}   # (slot, asked) -> what it ran at
        self.pool = SlotPool(settings.workers, settings.source, gpus, cpu_slots, threads,
                             settings.backend, settings.export_dir)

    @property
    def slots(self) -> list[Slot]:
        return self.pool.slots

    def _device_key(self, slot: Slot, asked: str) -> str:
        """Measurements are kept per device kind, backend and precision ("cpu", "cpu-ort",
        "cpu-bf16", "gpu"): what the slot's last job asking for ``asked`` ran at, else
        what it is expected to run at (a cluster node's CPU may differ from this one's)."""
        backend = self.backends.get(slot.index) or expected_backend(self.settings.backend,
                                                                    slot.device)
        precision = (self.precisions.get((slot.index, asked))
                     or choose_precision(slot.device, asked, backend))
        return device_key(computes_on(slot), backend, precision)

    def reconfigure(self, settings: DispatchSettings, gpus: list[str], cpu_slots: int,
                    threads: int) -> None:
        """Apply a reloaded config; busy slots that go away finish their job first."""
        self.settings = settings
        self.lifecycle.reconfigure(settings.lifecycle)
        self._hold = (0.0, 0)
        self.pool.resize(settings.workers, settings.source, gpus, cpu_slots, threads,
                         settings.backend, settings.export_dir)

    # -- the step ------------------------------------------------------------------------
    def loop(self, now: Optional[float] = None, timeout: float = 0.0) -> None:
        """One step; ``now`` is monotonic time (deadlines, stalls, re-checks)."""
        for event in self.pool.read(timeout):
            self._on_event(event)
        now = time.monotonic() if now is None else now
        self.pool.scan_cluster(now)
        for event in self.pool.watch(now):
            self._on_event(event)
        self.pool.retire_idle()
        if self.claiming:
            self._dispatch(now)
            self._look_ahead()
        self._tidy_staging()

    def _tidy_staging(self) -> None:
        """When nothing is being written, no empty staging folder stays in the outbox."""
        if self._staging_touched and not self.busy():
            remove_empty_staging(self.settings.publish.staging_dir)
            self._staging_touched = False

    def _all_slots(self) -> list[Slot]:
        return self.pool.all_slots()

    def _on_event(self, event: PoolEvent) -> None:
        """What becomes of a job after what happened to its slot."""
        slot = event.slot
        if slot.running is not event.run:
            return                              # already handled (stale event)
        if isinstance(event, JobProgress):
            self.store.set_progress(event.run.job_id, self.boot, event.percent, time.time())
        elif isinstance(event, JobDone):
            self._on_done(slot, event.result, event.wall)
        elif isinstance(event, JobFailed):
            self._on_failed(slot, event.failure)
        elif isinstance(event, WorkerDied):
            death = getattr(slot, "death", None)       # a remote slot says why (node lost)
            kind, message = death() if death else ("crash", f"The worker process died ({event.exit}).")
            self._attempt_failed(slot, kind, message,
                                 "If this repeats, the input or the model may be at fault; "
                                 "see the log.", permanent=False)
        elif isinstance(event, CancelAsked):
            self._stop_job(slot, "canceled")
        elif isinstance(event, DeadlinePassed):
            self._stop_job(slot, "timeout")
        elif isinstance(event, Stalled):
            self._stop_job(slot, "hung")

    def _stop_job(self, slot: Slot, why: str) -> None:
        run = slot.running
        assert run is not None
        slot.kill()
        if why == "canceled":
            self.lifecycle.cancel(run.job_id)
            self._clear(slot)
            return
        if why == "timeout":
            limit = run.deadline - run.started
            message = f"The job ran past its deadline of {limit:.0f} s and was stopped."
            hint = "Raise workers.job_timeout (or workers.job_timeout_cap) for very long tracks."
        else:
            stall = self.settings.workers.stall_timeout
            message = f"The worker stopped reporting progress for {stall:.0f} s and was stopped (hung)."
            hint = "stemd retries it; if it repeats, check the model and the input."
        self._attempt_failed(slot, "timeout", message, hint, permanent=False)

    def prewarm(self, model: str, device: str) -> None:
        """A file is settling: start an idle slot's worker and load the model ahead of the job."""
        self.pool.prewarm(model, device)

    def cancel(self, job_id: int) -> bool:
        return self.pool.cancel(job_id)

    def relieve_memory_pressure(self, floor: int) -> Optional[int]:
        """Below the memory floor, stop the youngest job and requeue it. Returns its id."""
        if psutil.virtual_memory().available >= floor:
            return None
        busy = [s for s in self._all_slots() if s.running and getattr(s, "node", None) is None]
        if not busy:
            return None
        slot = max(busy, key=lambda s: s.running.started)  # type: ignore[union-attr]
        run = slot.running
        assert run is not None
        slot.kill()
        self.lifecycle.requeue(run.job_id, "stopped and requeued: the machine was running out of memory",
                               delay=PRESSURE_BACKOFF)
        log.warning("job %s: memory below the floor; stopped the youngest job and requeued it",
                    run.job_id)
        self._clear(slot)
        return run.job_id

    # -- completion ------------------------------------------------------------------------
    def _on_done(self, slot: Slot, result: SeparationResult, wall: float) -> None:
        run = slot.running
        assert run is not None
        node = getattr(slot, "node", None)            # a remote slot: the manifest names it
        extra = {"node": node.label()} if node is not None else None
        published = self.lifecycle.finish(run.job_id, run.attempt, result, wall, extra)
        if published is None:
            self._clear(slot)
            return
        self.backends[slot.index] = result.backend
        self.precisions[(slot.index, run.task.options.precision)] = result.precision
        ran_on = device_key(computes_on(slot), result.backend, result.precision)
        self.store.record_measurement(run.model, ran_on, result.input.duration, wall,
                                      run.peak_rss or None, None)
        self.model_stems[run.model] = len(result.model_sources)
        slot.jobs_done += 1
        self._clear(slot)
        self._maybe_recycle(slot)

    def _on_failed(self, slot: Slot, failure: Failed) -> None:
        run = slot.running
        assert run is not None
        if failure.kind == "oom":
            self._shrink_after_oom(slot, run)
        elif failure.kind == "device":
            self._cpu_after_device_error(run)
        self._attempt_failed(slot, failure.kind, failure.message, failure.hint,
                             failure.permanent, keep_worker=True)

    def _shrink_after_oom(self, slot: Slot, run: Running) -> None:
        """Next attempt: batch of one; if that already ran out of memory, the CPU."""
        job = self.store.get(run.job_id)
        if job is not None:
            self.store.set_options(job.id, job.options.after_oom(on_gpu=slot.kind == "gpu"))

    def _cpu_after_device_error(self, run: Running) -> None:
        """A GPU or MPS device failed: the next attempt runs on the CPU."""
        job = self.store.get(run.job_id)
        if job is not None:
            self.store.set_options(job.id, dataclasses.replace(job.options, force_device="cpu"))

    def _attempt_failed(self, slot: Slot, kind: str, message: str, hint: str, permanent: bool,
                        keep_worker: bool = False) -> None:
        run = slot.running
        assert run is not None
        self.lifecycle.fail_attempt(run.job_id, run.attempt, kind, message, hint, permanent)
        self._clear(slot)
        if not keep_worker:
            slot.kill()

    def _clear(self, slot: Slot) -> None:
        run = slot.running
        if run is not None:
            remove_attempt_dirs(self.settings.publish, run.job_id, run.attempt)
        slot.running = None

    def _maybe_recycle(self, slot: Slot) -> None:
        self.pool.recycle_if_due(slot)

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        """Start what can start; ``now`` (monotonic) paces the re-checks of a waiting job,
        the wall clock is what the job database stores."""
        free = self.pool.free()
        if not free or self._holding(now, len(free)):
            return
        self.waiting, self.paused_reason = {}, None
        busy_keys = self._busy_keys()
        wall = time.time()
        for job in self.store.runnable(wall):
            if not free:
                return
            self._staging_touched = True
            if job.key and job.key in busy_keys:
                self.waiting[job.id] = "waiting for an identical job to finish (served from cache)"
                continue
            if self._try_cache(job, wall):
                continue
            if job.url and self._links_rate_reached(wall):
                self.waiting[job.id] = (f"waiting: {self.settings.links_per_hour} downloads "
                                        "in the last hour (links.rate_limit)")
                continue
            slot = self._pick_slot(job, free)
            if slot is None:
                self.waiting[job.id] = self._no_slot_reason(job)
                continue
            if not self._admit(job, slot, wall):
                if job.id in self.waiting:          # not failed outright: it waits
                    self._hold = (now + RECHECK_WAITING, len(free))
                return   # first in, first out: later jobs wait behind this one
            if self._start(job, slot, now, wall):
                free.remove(slot)
                busy_keys.add(job.key)

    def _links_rate_reached(self, wall: float) -> bool:
        limit = self.settings.links_per_hour
        return limit > 0 and self.store.links_started_since(wall - 3600.0) >= limit

    def _holding(self, now: float, free: int) -> bool:
        """While the first job waits for memory or space, check again every few seconds,
        not on every step; at once when a slot has come free."""
        until, free_then = self._hold
        return now < until and free <= free_then

    def _look_ahead(self) -> None:
        """Halfway through a job, tell its worker which input to decode next."""
        for slot in self.slots:
            run = slot.running
            if run is None or run.progress < LOOKAHEAD_AT or slot.ahead_of == run.job_id:
                continue
            slot.ahead_of = run.job_id
            job = self._next_for(slot, run.model)
            if job is not None:
                folder = work_dir(self.settings.publish, job.id, job.attempts + 1) / f"ahead-{slot.name}"
                slot.send(Ahead(job.id, job.input, run.model, str(folder)))

    def _next_for(self, slot: Slot, model: str) -> Optional[Job]:
        """The job ``slot`` would run next, if it is for ``model`` and will be separated."""
        busy_keys = self._busy_keys()
        for job in self.store.runnable(time.time()):
            if (job.key and job.key in busy_keys) or self._cached(job) \
                    or self._pick_slot(job, [slot]) is None:
                continue
            return job if job.options.model == model and not job.url else None
        return None

    def _busy_keys(self) -> set[str]:
        return {s.running.key for s in self._all_slots() if s.running}

    def _cached(self, job: Job) -> bool:
        return bool(job.key) and (self.settings.publish.cache_dir / job.key / "manifest.json").is_file()

    def _try_cache(self, job: Job, now: float) -> bool:
        return self._cached(job) and self.lifecycle.serve_from_cache(job)

    def _pick_slot(self, job: Job, free: list[Slot]) -> Optional[Slot]:
        wanted = job.options.wanted_device
        gpu = [s for s in free if s.kind == "gpu"]
        cpu = [s for s in free if s.kind == "cpu"]
        if wanted == "gpu":
            return gpu[0] if gpu else None
        if wanted == "cpu":
            return cpu[0] if cpu else None
        return (gpu or cpu or [None])[0]

    def _no_slot_reason(self, job: Job) -> str:
        wanted = job.options.wanted_device
        if wanted == "gpu" and not any(s.kind == "gpu" for s in self.slots):
            return "waiting: the profile asks for a GPU and this machine has no GPU slot"
        if wanted == "cpu" and not any(s.kind == "cpu" for s in self.slots):
            return "waiting: the profile asks for the CPU and workers.cpu is 0"
        return f"waiting for a free {wanted if wanted != 'auto' else ''} slot".replace("  ", " ")

    def _admit(self, job: Job, slot: Slot, now: float) -> bool:
        if self.space_check is not None:
            reason = self.space_check(job)
            self.paused_reason = reason
            if reason:
                self.waiting[job.id] = reason
                return False
        workers = self.settings.workers
        measured = self.store.measurements(job.options.model,
                                           self._device_key(slot, job.options.precision))
        estimate = admission.estimate_peak(measured, job.duration or 0.0, workers.memory_estimate)
        node = getattr(slot, "node", None)            # remote slots: that node's memory
        committed = sum(s.running.estimate for s in self._all_slots()
                        if s.running and getattr(s, "node", None) == node)
        budget = Budget(workers.memory_reserve, workers.memory_budget, workers.memory_floor)
        available, total = slot.memory() if node is not None else (None, None)  # type: ignore[attr-defined]
        verdict = admission.admit(estimate, committed, budget, available, total)
        if verdict.ok and slot.kind == "gpu":
            verdict = admission.admit_vram(estimate, slot.free_vram)
        if verdict.never:
            self._fail_never_fits(job, verdict.reason, now)
        elif not verdict.ok:
            self.waiting[job.id] = verdict.reason
        self._estimates[job.id] = estimate
        return verdict.ok

    def _fail_never_fits(self, job: Job, reason: str, now: float) -> None:
        self.lifecycle.fail_at_once(job, "memory", reason)

    def _start(self, job: Job, slot: Slot, now: float, wall: float) -> bool:
        claimed = self.lifecycle.claim(job, slot.index, slot.device)
        if claimed is None:
            return False
        job = claimed
        attempt = job.attempts
        task = self._task(job, attempt)
        workers = self.settings.workers
        measured = self.store.measurements(job.options.model,
                                           self._device_key(slot, job.options.precision))
        links = self.settings.links if job.url else None
        duration = job.duration or (links.max_duration if links else 0.0)
        limit = admission.deadline_seconds(duration, admission.speed(measured, computes_on(slot)),
                                           job.options.shifts, workers.job_timeout,
                                           workers.job_timeout_cap)
        limit += links.download_timeout if links else 0.0
        slot.running = Running(job.id, job.key, attempt, task, started=now, deadline=now + limit,
                               last_progress=now, estimate=self._estimates.pop(job.id, 0),
                               duration=job.duration or 0.0, model=job.options.model,
                               started_at=wall)
        slot.ensure_started()
        if not slot.send(TaskMsg(task)):
            self._attempt_failed(slot, "crash", "The worker could not be reached.", "", False)
            return False
        log.info("job %s: started on %s (attempt %s, deadline %.0f s)", job.id, slot.name,
                 attempt, limit)
        return True

    def _task(self, job: Job, attempt: int) -> Task:
        publish = self.settings.publish
        return Task(job_id=job.id, attempt=attempt, input=job.input,
                    options=job.options.separation(),
                    stage_dir=str(stage_dir(publish, job.id, attempt)),
                    work_dir=str(work_dir(publish, job.id, attempt)),
                    template=self.settings.lifecycle.template_for(job.profile),
                    track=job_track(job), profile=job.profile, folder=job.folder, url=job.url,
                    links=self.settings.links if job.url else None, identity=job.identity)

    # -- shutdown ---------------------------------------------------------------------------------
    def busy(self) -> bool:
        return self.pool.busy()

    def stop_all(self, requeue_note: str) -> None:
        """Kill every worker; running jobs go back to the queue (attempt not counted)."""
        for slot in self._all_slots():
            run = slot.running
            slot.kill()
            if run is not None:
                self.lifecycle.requeue(run.job_id, requeue_note)
                remove_attempt_dirs(self.settings.publish, run.job_id, run.attempt)
                slot.running = None

    def snapshot(self) -> dict[str, Any]:
        """For the status file; safe to call from another thread."""
        waiting = dict(self.waiting)            # one copy: the dispatcher thread changes it
        return {"slots": self.pool.snapshot(), "nodes": self.pool.nodes(),
                "waiting": {str(k): v for k, v in waiting.items()},
                "paused": self.paused_reason, "claiming": self.claiming}

    def healthy(self) -> bool:
        """Busy slots have a live worker (a dead one is respawned on the next step)."""
        return self.pool.healthy()


def computes_on(slot: Slot) -> str:
    """``gpu`` or ``cpu``: what the slot's worker computes on (a cluster node's GPU slot
    runs on the CPU where torch sees no CUDA device), for its speed and measurements."""
    return "cpu" if slot.device == "cpu" else slot.kind
