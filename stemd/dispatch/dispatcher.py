"""The dispatcher: slots, memory admission, deadlines, retries, publishing.

Huey-style: ``loop(now)`` is one step (read worker messages, watch running
jobs, start new ones); the daemon's dispatcher thread calls it a few times a
second and tests can drive it directly.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_connections
from pathlib import Path
from typing import Any, Callable, Optional

import psutil

from stemd.dispatch import admission
from stemd.dispatch.admission import Budget
from stemd.jobs.lifecycle import (PublishSettings, build_manifest, finish_job, park_failed_input, rel_track_dir, remove_attempt_dirs, serve_from_cache, stage_dir, work_dir)
from stemd.config import Config, WorkersConfig
from stemd.engine.backends import device_key, expected_backend
from stemd.engine.types import ModelSource, OutputFormat, SeparationOptions, SeparationResult
from stemd.output.naming import track_name
from stemd.dispatch.slots import Running, Slot, describe_exit
from stemd.jobs.store import Job, State, Store
from stemd.worker.process import Task, WorkerSpec

log = logging.getLogger(__name__)
LOOKAHEAD_AT = 50.0   # percent of a job done when its worker starts decoding the next input

SpaceCheckFn = Callable[[Job], Optional[str]]   # None = enough space, else why not
PRESSURE_BACKOFF = 30.0                          # seconds before a job stopped for memory may start again
RECHECK_WAITING = 2.0   # seconds between checks while the first job waits for memory or disk space


@dataclass(frozen=True)
class DispatchSettings:
    workers: WorkersConfig
    publish: PublishSettings
    source: ModelSource
    templates: dict[str, str]        # profile -> template
    log_level: str = "info"
    backend: str = "torch"           # engine.backend
    export_dir: Optional[Path] = None

    @classmethod
    def from_config(cls, config: Config) -> "DispatchSettings":
        publish = PublishSettings(
            outbox=config.outbox.path, on_conflict=config.outbox.on_conflict,
            after_success=config.intake.after_success, archive_dir=config.archive_dir,
            failed_dir=config.failed_dir, cache_dir=config.cache_dir,
            staging_dir=config.staging_dir, work_dir=config.state_dir / "work")
        source = ModelSource(repo=config.models.repo, offline=config.models.offline,
                             allow_pickle=config.models.allow_pickle)
        templates = {name: config.template_for(name) for name in config.profiles}
        return cls(config.workers, publish, source, templates, config.daemon.log_level,
                   config.engine.backend, config.export_dir)


class Dispatcher:
    def __init__(self, store: Store, settings: DispatchSettings, boot: str,
                 gpus: list[str], cpu_slots: int, threads: int,
                 space_check: Optional[SpaceCheckFn] = None) -> None:
        self.store = store
        self.settings = settings
        self.boot = boot
        self.space_check = space_check
        self.slots: list[Slot] = []
        self.claiming = True
        self.waiting: dict[int, str] = {}
        self.paused_reason: Optional[str] = None
        self.model_stems: dict[str, int] = {}     # model -> stems it produces, once seen
        self._estimates: dict[int, int] = {}
        self._retiring: list[Slot] = []
        self._hold: tuple[float, int] = (0.0, 0)   # (until, free slots) while a job waits
        self.backends: dict[int, str] = {}         # slot -> engine backend its last job ran on
        self._resize(gpus, cpu_slots, threads)

    # -- slots -----------------------------------------------------------------------
    def _device_key(self, slot: Slot) -> str:
        """Measurements are kept per device kind and backend ("cpu", "cpu-ort", "gpu")."""
        backend = self.backends.get(slot.index) or expected_backend(self.settings.backend,
                                                                    slot.device)
        return device_key(slot.kind, backend)

    def _spec(self, index: int, device: str, threads: int) -> WorkerSpec:
        return WorkerSpec(slot=index, device=device, threads=threads, source=self.settings.source,
                          idle_unload=self.settings.workers.idle_unload, parent_pid=os.getpid(),
                          log_level=self.settings.log_level, backend=self.settings.backend,
                          export_dir=self.settings.export_dir)

    def _resize(self, gpus: list[str], cpu_slots: int, threads: int) -> None:
        wanted = [("gpu", device, 0) for device in gpus]
        wanted += [("cpu", "cpu", threads)] * cpu_slots
        kept: list[Slot] = []
        for index, (kind, device, count) in enumerate(wanted):
            spec = self._spec(index, device, count)
            old = next((s for s in self.slots if s.kind == kind and s.device == device
                        and s not in kept and not s.retired), None)
            if old is not None and old.spec == spec:
                kept.append(old)
            else:
                if old is not None:
                    old.retired = True
                kept.append(Slot(index, kind, device, spec))
        for slot in self.slots:
            if slot not in kept:
                slot.retired = True
        self._retiring = [s for s in self.slots if s.retired and s not in kept]
        self.slots = kept

    def reconfigure(self, settings: DispatchSettings, gpus: list[str], cpu_slots: int,
                    threads: int) -> None:
        """Apply a reloaded config; busy slots that go away finish their job first."""
        self.settings = settings
        self._hold = (0.0, 0)
        self._resize(gpus, cpu_slots, threads)

    # -- the step ------------------------------------------------------------------------
    def loop(self, now: Optional[float] = None, timeout: float = 0.0) -> None:
        self._read_messages(timeout)
        now = time.time() if now is None else now
        for slot in self._all_slots():
            self._watch(slot, now)
        self._retire_idle()
        if self.claiming:
            self._dispatch(now)
            self._look_ahead(now)

    def _all_slots(self) -> list[Slot]:
        return self.slots + [s for s in self._retiring if s.running]

    def _read_messages(self, timeout: float) -> None:
        conns = {slot.conn: slot for slot in self._all_slots() if slot.conn is not None}
        if not conns:
            if timeout:
                time.sleep(timeout)
            return
        for conn in wait_connections(list(conns), timeout):
            slot = conns[conn]  # type: ignore[index]
            while slot.conn is not None and slot.conn.poll():
                try:
                    message = slot.conn.recv()
                except (EOFError, OSError):
                    break
                self._handle(slot, message)

    def _handle(self, slot: Slot, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            slot.free_vram = message[2]
        elif kind == "progress" and slot.running and slot.running.job_id == message[1]:
            slot.running.progress = message[2]
            slot.running.last_progress = time.time()
            self.store.heartbeat(message[1], self.boot, message[2], time.time())
        elif kind == "done" and slot.running and slot.running.job_id == message[1]:
            self._on_done(slot, message[2], message[3])
        elif kind == "failed" and slot.running and slot.running.job_id == message[1]:
            self._on_failed(slot, message[2])

    # -- watching running jobs --------------------------------------------------------------
    def _watch(self, slot: Slot, now: float) -> None:
        run = slot.running
        if run is None:
            return
        run.peak_rss = max(run.peak_rss, slot.rss())
        if not slot.alive():
            code = slot.kill()
            self._attempt_failed(slot, "crash", f"The worker process died ({describe_exit(code)}).",
                                 "If this repeats, the input or the model may be at fault; "
                                 "see the log.", permanent=False)
        elif run.cancel:
            self._stop_job(slot, "canceled")
        elif now > run.deadline:
            self._stop_job(slot, "timeout")
        elif now - run.last_progress > self.settings.workers.stall_timeout:
            self._stop_job(slot, "hung")

    def _stop_job(self, slot: Slot, why: str) -> None:
        run = slot.running
        assert run is not None
        slot.kill()
        if why == "canceled":
            self.store.mark_canceled(run.job_id, self.boot, time.time())
            log.info("job %s: canceled; its worker was stopped", run.job_id)
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
        free = [s for s in self.slots if s.running is None]
        wanted = {"gpu": [s for s in free if s.kind == "gpu"], "cpu": [s for s in free if s.kind == "cpu"]}
        order = wanted.get(device) or (wanted["gpu"] + wanted["cpu"])
        slot = order[0] if order else None
        if slot is None or (slot.alive() and slot.extra.get("preloaded") == model):
            return
        slot.ensure_started()
        slot.extra["preloaded"] = model
        slot.send(("preload", model))

    def cancel(self, job_id: int) -> bool:
        for slot in self._all_slots():
            if slot.running and slot.running.job_id == job_id:
                slot.running.cancel = True
                return True
        return False

    def relieve_memory_pressure(self, floor: int) -> Optional[int]:
        """Below the memory floor, stop the youngest job and requeue it. Returns its id."""
        if psutil.virtual_memory().available >= floor:
            return None
        busy = [s for s in self._all_slots() if s.running]
        if not busy:
            return None
        slot = max(busy, key=lambda s: s.running.started)  # type: ignore[union-attr]
        run = slot.running
        assert run is not None
        slot.kill()
        self.store.requeue(run.job_id, self.boot, time.time(),
                           "stopped and requeued: the machine was running out of memory",
                           delay=PRESSURE_BACKOFF)
        log.warning("job %s: memory below the floor; stopped the youngest job and requeued it",
                    run.job_id)
        self._clear(slot)
        return run.job_id

    # -- completion ------------------------------------------------------------------------
    def _on_done(self, slot: Slot, result: SeparationResult, wall: float) -> None:
        run = slot.running
        assert run is not None
        job = self.store.get(run.job_id)
        if job is None or job.state != State.RUNNING:
            self._clear(slot)
            return
        template = self.settings.templates.get(job.profile, "{track}/{stem}.{ext}")
        rel_dir = rel_track_dir(template, job)
        staged_track = stage_dir(self.settings.publish, job.id, run.attempt) / rel_dir
        manifest = build_manifest(job, result, wall, template)
        try:
            published = finish_job(self.store, self.settings.publish, job, self.boot,
                                   staged_track, rel_dir, manifest, cached=False)
        except OSError as exc:
            self._attempt_failed(slot, "publish", f"The stems could not be published: {exc}.",
                                 "Check free space and permissions of the outbox.", False)
            return
        self.backends[slot.index] = result.backend
        self.store.record_measurement(run.model, self._device_key(slot), result.input.duration, wall,
                                      run.peak_rss or None, None)
        self.model_stems[run.model] = len(result.model_sources)
        log.info("job %s: done in %.1f s -> %s", job.id, wall, published.path or published.note)
        slot.jobs_done += 1
        self._clear(slot)
        self._maybe_recycle(slot)

    def _on_failed(self, slot: Slot, payload: dict[str, Any]) -> None:
        run = slot.running
        assert run is not None
        if payload["kind"] == "oom":
            self._shrink_after_oom(slot, run)
        self._attempt_failed(slot, payload["kind"], payload["message"], payload["hint"],
                             payload["permanent"], keep_worker=True)

    def _shrink_after_oom(self, slot: Slot, run: Running) -> None:
        """Next attempt: batch of one; if that already ran out of memory, the CPU."""
        job = self.store.get(run.job_id)
        if job is None:
            return
        options = dict(job.options)
        if options.get("batch_size", 0) != 1:
            options["batch_size"] = 1
        elif slot.kind == "gpu":
            options["force_device"] = "cpu"
        self.store.set_options(job.id, options)

    def _attempt_failed(self, slot: Slot, kind: str, message: str, hint: str, permanent: bool,
                        keep_worker: bool = False) -> None:
        run = slot.running
        assert run is not None
        workers = self.settings.workers
        reason = f"{message} {hint}".strip()
        state = self.store.fail_attempt(run.job_id, self.boot, reason, kind, permanent,
                                        time.time(), workers.max_attempts, workers.retry_backoff)
        log.warning("job %s: attempt %s failed (%s): %s -> %s", run.job_id, run.attempt, kind,
                    message, state.value if state else "unchanged")
        if state == State.FAILED:
            self._move_failed_input(run.job_id, message, hint)
        self._clear(slot)
        if not keep_worker:
            slot.kill()

    def _move_failed_input(self, job_id: int, message: str, hint: str) -> None:
        job = self.store.get(job_id)
        if job is not None:
            park_failed_input(self.store, self.settings.publish.failed_dir, job, message, hint)

    def _clear(self, slot: Slot) -> None:
        run = slot.running
        if run is not None:
            remove_attempt_dirs(self.settings.publish, run.job_id, run.attempt)
        slot.running = None

    def _maybe_recycle(self, slot: Slot) -> None:
        workers = self.settings.workers
        rss = slot.rss()
        if slot.jobs_done >= workers.max_jobs_per_worker or rss > workers.max_worker_rss:
            log.info("slot %s: recycling its worker after %s jobs (%d MiB resident)", slot.name,
                     slot.jobs_done, rss >> 20)
            slot.stop()

    def _retire_idle(self) -> None:
        for slot in list(self._retiring):
            if slot.running is None:
                slot.stop()
                self._retiring.remove(slot)

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        free = [s for s in self.slots if s.running is None]
        if not free or self._holding(now, len(free)):
            return
        self.waiting, self.paused_reason = {}, None
        busy_keys = self._busy_keys()
        for job in self.store.runnable(now):
            if not free:
                return
            if job.key and job.key in busy_keys:
                self.waiting[job.id] = "waiting for an identical job to finish (served from cache)"
                continue
            if self._try_cache(job, now):
                continue
            slot = self._pick_slot(job, free)
            if slot is None:
                self.waiting[job.id] = self._no_slot_reason(job)
                continue
            if not self._admit(job, slot, now):
                if job.id in self.waiting:          # not failed outright: it waits
                    self._hold = (now + RECHECK_WAITING, len(free))
                return   # first in, first out: later jobs wait behind this one
            if self._start(job, slot, now):
                free.remove(slot)
                busy_keys.add(job.key)

    def _holding(self, now: float, free: int) -> bool:
        """While the first job waits for memory or space, check again every few seconds,
        not on every step; at once when a slot has come free."""
        until, free_then = self._hold
        return now < until and free <= free_then

    def _look_ahead(self, now: float) -> None:
        """Halfway through a job, tell its worker which input to decode next."""
        for slot in self.slots:
            run = slot.running
            if run is None or run.progress < LOOKAHEAD_AT or slot.extra.get("ahead_of") == run.job_id:
                continue
            slot.extra["ahead_of"] = run.job_id
            job = self._next_for(slot, run.model, now)
            if job is not None:
                folder = work_dir(self.settings.publish, job.id, job.attempts + 1) / f"ahead-{slot.name}"
                slot.send(("ahead", job.id, job.input, run.model, str(folder)))

    def _next_for(self, slot: Slot, model: str, now: float) -> Optional[Job]:
        """The job ``slot`` would run next, if it is for ``model`` and will be separated."""
        busy_keys = self._busy_keys()
        for job in self.store.runnable(now):
            if (job.key and job.key in busy_keys) or self._cached(job) \
                    or self._pick_slot(job, [slot]) is None:
                continue
            return job if job.options.get("model") == model else None
        return None

    def _busy_keys(self) -> set[str]:
        return {s.running.key for s in self._all_slots() if s.running}

    def _cached(self, job: Job) -> bool:
        return bool(job.key) and (self.settings.publish.cache_dir / job.key / "manifest.json").is_file()

    def _try_cache(self, job: Job, now: float) -> bool:
        if not self._cached(job):
            return False
        if not self.store.claim(job.id, self.boot, -1, "cache", now):
            return True
        claimed = self.store.get(job.id)
        assert claimed is not None
        template = self.settings.templates.get(job.profile, "{track}/{stem}.{ext}")
        try:
            done = serve_from_cache(self.store, self.settings.publish, claimed, self.boot, template)
        except OSError as exc:
            log.warning("job %s: cache could not be used (%s); separating again", job.id, exc)
            done = None
        if done is None:
            self.store.requeue(job.id, self.boot, now, "cache entry unusable; separating again")
            shutil.rmtree(self.settings.publish.cache_dir / job.key, ignore_errors=True)
        return True

    def _pick_slot(self, job: Job, free: list[Slot]) -> Optional[Slot]:
        wanted = job.options.get("force_device") or job.options.get("device", "auto")
        gpu = [s for s in free if s.kind == "gpu"]
        cpu = [s for s in free if s.kind == "cpu"]
        if wanted == "gpu":
            return gpu[0] if gpu else None
        if wanted == "cpu":
            return cpu[0] if cpu else None
        return (gpu or cpu or [None])[0]

    def _no_slot_reason(self, job: Job) -> str:
        wanted = job.options.get("force_device") or job.options.get("device", "auto")
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
        measured = self.store.measurements(job.options.get("model", ""), self._device_key(slot))
        estimate = admission.estimate_peak(measured, job.duration or 0.0, workers.memory_estimate)
        committed = sum(s.running.estimate for s in self._all_slots() if s.running)
        budget = Budget(workers.memory_reserve, workers.memory_budget, workers.memory_floor)
        verdict = admission.admit(estimate, committed, budget)
        if verdict.ok and slot.kind == "gpu":
            verdict = admission.admit_vram(estimate, slot.free_vram)
        if verdict.never:
            self._fail_never_fits(job, verdict.reason, now)
        elif not verdict.ok:
            self.waiting[job.id] = verdict.reason
        self._estimates[job.id] = estimate
        return verdict.ok

    def _fail_never_fits(self, job: Job, reason: str, now: float) -> None:
        if self.store.claim(job.id, self.boot, -1, "none", now):
            self.store.fail_attempt(job.id, self.boot, reason, "memory", True, now, 1, 0)
            self._move_failed_input(job.id, reason, "")
            log.error("job %s: %s", job.id, reason)

    def _start(self, job: Job, slot: Slot, now: float) -> bool:
        if not self.store.claim(job.id, self.boot, slot.index, slot.device, now):
            return False
        attempt = job.attempts + 1
        task = self._task(job, attempt)
        workers = self.settings.workers
        measured = self.store.measurements(job.options.get("model", ""), self._device_key(slot))
        limit = admission.deadline_seconds(job.duration or 0.0, admission.speed(measured, slot.kind),
                                           int(job.options.get("shifts", 1)), workers.job_timeout,
                                           workers.job_timeout_cap)
        slot.running = Running(job.id, job.key, attempt, task, now, now + limit, now,
                               self._estimates.pop(job.id, 0), job.duration or 0.0,
                               job.options.get("model", ""))
        slot.ensure_started()
        if not slot.send(("task", task)):
            self._attempt_failed(slot, "crash", "The worker could not be reached.", "", False)
            return False
        log.info("job %s: started on %s (attempt %s, deadline %.0f s)", job.id, slot.name,
                 attempt, limit)
        return True

    def _task(self, job: Job, attempt: int) -> Task:
        options = job.options
        fmt = OutputFormat(**options.get("format", {}))
        fields = {k: v for k, v in options.items()
                  if k in SeparationOptions.__dataclass_fields__ and k != "format"}
        separation = SeparationOptions(**fields, format=fmt)
        publish = self.settings.publish
        return Task(job_id=job.id, attempt=attempt, input=job.input, options=separation,
                    stage_dir=str(stage_dir(publish, job.id, attempt)),
                    work_dir=str(work_dir(publish, job.id, attempt)),
                    template=self.settings.templates.get(job.profile, "{track}/{stem}.{ext}"),
                    track=track_name(job.input_name), profile=job.profile)

    # -- shutdown ---------------------------------------------------------------------------------
    def busy(self) -> bool:
        return any(s.running for s in self._all_slots())

    def stop_all(self, requeue_note: str) -> None:
        """Kill every worker; running jobs go back to the queue (attempt not counted)."""
        for slot in self._all_slots():
            run = slot.running
            slot.kill()
            if run is not None:
                self.store.requeue(run.job_id, self.boot, time.time(), requeue_note)
                remove_attempt_dirs(self.settings.publish, run.job_id, run.attempt)
                log.info("job %s: stopped and left queued (%s)", run.job_id, requeue_note)
                slot.running = None

    def snapshot(self) -> dict[str, Any]:
        slots = []
        for slot in self.slots:
            run = slot.running
            slots.append({"name": slot.name, "device": slot.device, "pid": slot.process.pid
                          if slot.process else None, "alive": slot.alive(),
                          "job": run.job_id if run else None,
                          "progress": round(run.progress, 1) if run else None,
                          "started": run.started if run else None,
                          "rss": slot.rss(), "jobs_done": slot.jobs_done})
        return {"slots": slots, "waiting": {str(k): v for k, v in self.waiting.items()},
                "paused": self.paused_reason, "claiming": self.claiming}

    def healthy(self) -> bool:
        """Busy slots have a live worker (a dead one is respawned on the next step)."""
        return all(slot.alive() for slot in self.slots if slot.running)

