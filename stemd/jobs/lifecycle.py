"""The life of a job, in one place: every change of state with its file side effects and its
log line.

    arrive ──> queued ──claim──> running ──finish──> done
      │          │  ^              │ │
      │          │  └─requeue/─────┘ ├──fail_attempt──> failed ──┐
      │          │    retry later    └──cancel────────> canceled ─┤
      │          ├──cancel / supersede──> canceled                │
      └─reject──────────────────────────> failed                  │
                 ^────────────────────retry───────────────────────┘

The store checks each transition (``stemd.jobs.store.TRANSITIONS``); this module decides
which one to make and does what goes with it: publish, cache, archive or delete the input,
set a failed or canceled input aside with its note, resubmit a replaced input. Intake
(arrive, reject), the dispatcher (claim, finish, fail_attempt, requeue, cancel,
serve_from_cache) and the supervisor (recover, request_cancel, retry) call it; nothing
else writes a job's state.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from stemd import __version__
from stemd.engine.types import SeparationResult
from stemd.errors import InputChanged
from stemd.jobs.identity import InputIdentity, link_digest
from stemd.jobs.inputs import after_success, cancel_note, failure_note, link_failure_note, set_aside
from stemd.jobs.options import JobOptions
from stemd.jobs.store import Job, NewJob, State, Store
from stemd.output.naming import track_dir, track_name
from stemd.output.publish import (MANIFEST, Published, cache_restore, cache_store, find_published, flush_tree, publish,
                                  read_manifest, write_manifest)

if TYPE_CHECKING:
    from stemd.config import Config

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
Resubmit = Callable[[Job], None]     # offer a job's input to intake again (superseded jobs)


@dataclass(frozen=True)
class PublishSettings:
    outbox: Path
    on_conflict: str
    after_success: str
    archive_dir: Path
    failed_dir: Path
    cache_dir: Path
    staging_dir: Path
    work_dir: Path


@dataclass(frozen=True)
class LifecycleSettings:
    publish: PublishSettings
    templates: dict[str, str]              # profile -> template
    profiles: dict[str, JobOptions]        # profile -> its options now (a retry takes these)
    max_attempts: int = 3
    retry_backoff: float = 30.0

    @classmethod
    def from_config(cls, config: "Config") -> "LifecycleSettings":
        publish = PublishSettings(
            outbox=config.outbox.path, on_conflict=config.outbox.on_conflict,
            after_success=config.intake.after_success, archive_dir=config.archive_dir,
            failed_dir=config.failed_dir, cache_dir=config.cache_dir,
            staging_dir=config.staging_dir, work_dir=config.state_dir / "work")
        return cls(publish, {name: config.template_for(name) for name in config.profiles},
                   {name: JobOptions.from_profile(p) for name, p in config.profiles.items()},
                   config.workers.max_attempts, config.workers.retry_backoff)

    def template_for(self, profile: str) -> str:
        return self.templates.get(profile, DEFAULT_TEMPLATE)


def stage_dir(settings: PublishSettings, job_id: int, attempt: int) -> Path:
    return settings.staging_dir / f"{job_id}-{attempt}"


def work_dir(settings: PublishSettings, job_id: int, attempt: int) -> Path:
    return settings.work_dir / f"{job_id}-{attempt}"


def remove_attempt_dirs(settings: PublishSettings, job_id: int, attempt: int) -> None:
    shutil.rmtree(stage_dir(settings, job_id, attempt), ignore_errors=True)
    shutil.rmtree(work_dir(settings, job_id, attempt), ignore_errors=True)


def rel_track_dir(template: str, job: Job) -> str:
    return track_dir(template, track=job_track(job), model=job.options.model,
                     profile=job.profile, folder=job.folder)


def job_track(job: Job) -> str:
    """The track name: a link job's title once known, else the input's name."""
    return job.title or track_name(job.input_name)


def options_origin(job: Job) -> str:
    """Where the job's options came from, for the manifest."""
    retries = [h for h in job.history if h.get("kind") == "retry"]
    if not retries:
        return "profile at arrival"
    return "kept at retry" if retries[-1].get("options") == "kept" else "profile at retry"


def build_manifest(job: Job, result: SeparationResult, wall: float,
                   template: str) -> dict[str, Any]:
    return {
        "stemd_version": __version__, "job_id": job.id, "host": socket.gethostname(),
        "input": {"name": job.input_name, "path": job.first_location, "size": job.size,
                  "sha256": job.sha256, "duration": result.input.duration,
                  "sample_rate": result.input.sample_rate, "channels": result.input.channels,
                  "codec": result.input.codec},
        "model": job.options.model, "profile": job.profile, "options": job.options.to_dict(),
        "options_from": options_origin(job),
        "device": result.device, "backend": result.backend, "precision": result.precision,
        "members_run": result.members_run,
        "output": {"sample_rate": result.sample_rate, "channels": result.channels,
                   "frames": result.frames, "template": template,
                   **({"resampled": resample_note(result)} if resample_note(result) else {})},
        "stems": result.manifest_stems(),
        "quality": result.quality.as_dict() if result.quality else None,
        "timings": {**{k: round(v, 3) for k, v in result.timings.items()}, "wall": round(wall, 3)},
        "engine": dict(result.provenance),   # demucs and torch versions, model_sha256
        "attempts": job.attempts, "cached": False,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"url": job.url, "title": job.title} if job.url else {}),
    }


def resample_note(result: SeparationResult) -> str:
    """Said when the stems' rate (the model's) differs from the input's: 48 kHz in, 44.1 out."""
    if result.input.sample_rate in (0, result.sample_rate):
        return ""
    return (f"the input is {result.input.sample_rate} Hz; the stems are {result.sample_rate} Hz, "
            "the model's rate")


class Lifecycle:
    """Every transition of a job, for one supervisor (``boot``)."""

    def __init__(self, store: Store, settings: LifecycleSettings, boot: str,
                 resubmit: Optional[Resubmit] = None) -> None:
        self.store = store
        self.settings = settings
        self.boot = boot
        self.resubmit = resubmit

    def reconfigure(self, settings: LifecycleSettings) -> None:
        self.settings = settings

    @property
    def folders(self) -> PublishSettings:
        return self.settings.publish

    # -- arrival (intake) -------------------------------------------------------------
    def arrive(self, new: NewJob, detail: str = "") -> Optional[int]:
        """A new queued job; None when the same input with the same options already waits
        or runs (two offers of one file at once are one job)."""
        job_id = self.store.add_job(new)
        if job_id is None:
            log.info("%s is already queued; not adding it again", Path(new.input).name)
            return None
        log.info("job %s: queued %s%s", job_id, Path(new.input).name, f" ({detail})" if detail else "")
        return job_id

    def reject(self, new: NewJob, message: str, hint: str) -> int:
        """A file that cannot be a job: recorded as failed, set aside with its note."""
        job_id = self.store.add_job(new)
        assert job_id is not None          # failed jobs are never duplicates
        job = self.store.get(job_id)
        assert job is not None
        log.warning("job %s: rejected %s: %s", job_id, new.input, f"{message} {hint}".strip())
        self._set_aside_failed(job, message, hint)
        return job_id

    # -- the dispatcher ---------------------------------------------------------------------
    def claim(self, job: Job, worker: int, device: str) -> Optional[Job]:
        """queued -> running for ``worker`` on ``device`` (-1 and "cache" for the cache), once
        the input is checked to be the content the job recorded. None when another claim
        won, or when the input changed (superseded) or is gone (failed)."""
        if not self._input_still_there(job):
            return None
        if not self.store.claim(job.id, self.boot, worker, device, time.time()):
            return None
        return self.store.get(job.id)

    def _input_still_there(self, job: Job) -> bool:
        recorded = job.identity
        if recorded is None:
            return True                    # nothing recorded (no hash): nothing to compare
        try:
            current = recorded.check(job.input)
        except FileNotFoundError:
            reason = "The input file is gone: it was moved or deleted while the job waited."
        except OSError as exc:
            reason = f"The input file cannot be read: {exc.strerror}."
        else:
            reason = ""
        if reason:
            if self.store.fail(job.id, reason, "input", time.time()):
                log.warning("job %s: %s", job.id, reason)
            return False
        if current is None:
            self.supersede(job.id, "the file was replaced while the job waited")
            return False
        if current != recorded:            # touched or moved, same content
            self.store.update_input(job.id, job.input, current)
        return True

    def finish(self, job_id: int, attempt: int, result: SeparationResult, wall: float,
               extra: Optional[dict[str, Any]] = None) -> Optional[Published]:
        """running -> done: publish the staged stems, cache them, then handle the input.
        None when the job is no longer this supervisor's, or publishing failed (an attempt
        failed)."""
        job = self.store.get(job_id)
        if job is None or job.state != State.RUNNING or job.lease_boot != self.boot:
            return None
        if job.url and result.title:       # a link job: its title names the track folder
            self.store.set_title(job.id, result.title)
            job = dataclasses.replace(job, title=result.title)
        template = self.settings.template_for(job.profile)
        rel_dir = rel_track_dir(template, job)
        staged_track = stage_dir(self.folders, job.id, attempt) / rel_dir
        manifest = {**build_manifest(job, result, wall, template), **(extra or {})}
        if resample_note(result):
            log.info("job %s: %s", job.id, resample_note(result))
        try:
            published = self._publish(job, staged_track, rel_dir, manifest, cached=False)
        except OSError as exc:
            self.fail_attempt(job.id, attempt, "publish", f"The stems could not be published: {exc}.",
                              "Check free space and permissions of the outbox.", False)
            return None
        log.info("job %s: done in %.1f s -> %s", job.id, wall, published.path or published.note)
        return published

    def _publish(self, job: Job, staged_track: Path, rel_dir: str, manifest: dict[str, Any],
                 cached: bool) -> Published:
        folders = self.folders
        write_manifest(staged_track, manifest)
        flush_tree(staged_track)
        published = publish(staged_track, folders.outbox, rel_dir, folders.on_conflict,  # type: ignore[arg-type]
                            folders.staging_dir / ".trash",
                            before=lambda target: self.store.set_output(job.id, self.boot, str(target),
                                                                        time.time()))
        output = str(published.path) if published.path else None
        if published.path is not None and not cached and job.key:
            self._keep_in_cache(published.path, job)     # the content verified by the worker
        remove_attempt_dirs(folders, job.id, job.attempts)  # gone before the job reads done
        if not self.store.finish(job.id, self.boot, output, time.time(), cached=cached,
                                 note=published.note):
            now = self.store.get(job.id)
            log.warning("job %s: stems published to %s, but the job is no longer this daemon's "
                        "(%s); its input is left where it is", job.id, output,
                        now.state.value if now else "gone")
            return published
        self._input_done(job)
        return published

    def fail_attempt(self, job_id: int, attempt: int, kind: str, message: str, hint: str,
                     permanent: bool) -> Optional[State]:
        """A running attempt failed: queued again after a backoff, or failed for good with the
        input set aside. A job with a cancel pending is canceled instead, one whose input was
        replaced is superseded. Returns the new state (None: not this supervisor's job)."""
        if kind == InputChanged.kind:
            return State.CANCELED if self.supersede(job_id, message, boot=self.boot) else None
        reason = f"{message} {hint}".strip()
        settings = self.settings
        state = self.store.fail_attempt(job_id, self.boot, reason, kind, permanent, time.time(),
                                        settings.max_attempts, settings.retry_backoff)
        if state is None:
            return State.CANCELED if self._cancel_pending(job_id) else None
        log.warning("job %s: attempt %s failed (%s): %s -> %s", job_id, attempt, kind, message,
                    state.value)
        if state == State.FAILED:
            self._set_aside_failed(self.store.get(job_id), message, hint)
        return state

    def fail_at_once(self, job: Job, kind: str, message: str, hint: str = "") -> bool:
        """queued -> failed without running (it can never fit); the input is set aside."""
        reason = f"{message} {hint}".strip()
        if not self.store.fail(job.id, reason, kind, time.time()):
            return False
        log.error("job %s: %s", job.id, reason)
        self._set_aside_failed(self.store.get(job.id), message, hint)
        return True

    def requeue(self, job_id: int, note: str, delay: float = 0.0) -> Optional[State]:
        """running -> queued without counting the attempt (shutdown, memory pressure, an
        unusable cache entry); a job with a cancel pending is canceled instead."""
        if self.store.requeue(job_id, self.boot, time.time(), note, delay=delay):
            log.info("job %s: stopped and queued again (%s)", job_id, note)
            return State.QUEUED
        return State.CANCELED if self._cancel_pending(job_id) else None

    def _cancel_pending(self, job_id: int) -> bool:
        job = self.store.get(job_id)
        if job is None or job.state != State.RUNNING or not job.cancel_requested \
                or job.lease_boot != self.boot:
            return False
        return self.cancel(job_id)

    def cancel(self, job_id: int) -> bool:
        """running -> canceled once its worker is stopped; the input is set aside."""
        return self._cancel(job_id, self.boot, "canceled by request; its worker was stopped")

    def _cancel(self, job_id: int, lease: Optional[str], what: str) -> bool:
        if not self.store.cancel(job_id, time.time(), boot=lease):
            return False
        log.info("job %s: %s", job_id, what)
        job = self.store.get(job_id)
        if job is not None and job.source != "submit" and not self._link_file_still_needed(job):
            self._set_aside(job, cancel_note(Path(job.first_location), "canceled by request", job.id))
        return True

    def supersede(self, job_id: int, why: str, boot: Any = None) -> bool:
        """queued | running -> canceled: the input was replaced; its new content is offered
        to intake as a new job (the newest content is the one separated)."""
        job = self.store.get(job_id)
        if job is None:
            return False
        reason = f"Superseded: {why}; the new content is separated as a new job."
        lease = boot if job.state == State.RUNNING else None
        if not self.store.supersede(job_id, time.time(), reason, boot=lease):
            return False
        log.info("job %s: superseded: %s", job_id, why)
        if self.resubmit is not None:
            self.resubmit(job)
        return True

    def serve_from_cache(self, job: Job) -> bool:
        """A job whose stems are in the cache: claim it and publish the cached stems. True
        when the cache took the job (served, or the entry proved unusable and the job is
        queued again to be separated); False when there is no entry."""
        entry = self.folders.cache_dir / job.key
        if not job.key or not (entry / MANIFEST).is_file():
            return False
        claimed = self.claim(job, -1, "cache")
        if claimed is None:
            return True
        try:
            published = self._publish_cached(claimed, entry)
        except Exception as exc:            # whatever goes wrong, the job must not stay running
            log.warning("job %s: the cache entry could not be used (%s: %s); separating again",
                        job.id, type(exc).__name__, exc)
            published = None
        finally:
            shutil.rmtree(stage_dir(self.folders, claimed.id, claimed.attempts), ignore_errors=True)
        if published is None:
            shutil.rmtree(entry, ignore_errors=True)
            self.requeue(job.id, "cache entry unusable; separating again")
        return True

    def _publish_cached(self, job: Job, entry: Path) -> Optional[Published]:
        if job.url and not job.title:      # a link job: the cached track's title names the folder
            title = (read_manifest(entry) or {}).get("title")
            if isinstance(title, str) and title:
                self.store.set_title(job.id, title)
                job = dataclasses.replace(job, title=title)
        template = self.settings.template_for(job.profile)
        rel_dir = rel_track_dir(template, job)
        staged_track = stage_dir(self.folders, job.id, job.attempts) / rel_dir
        if not cache_restore(entry, staged_track):
            return None
        manifest = read_manifest(staged_track) or {}
        manifest.update({"job_id": job.id, "cached": True, "cached_from": manifest.get("job_id"),
                         "input": {**manifest.get("input", {}), "name": job.input_name,
                                   "path": job.first_location, "sha256": job.sha256,
                                   "size": job.size},
                         "profile": job.profile, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.unlink(staged_track / MANIFEST)  # a hardlink into the cache: replace, not edit
        published = self._publish(job, staged_track, rel_dir, manifest, cached=True)
        log.info("job %s: served from the stem cache -> %s", job.id, published.path)
        return published

    # -- the supervisor -----------------------------------------------------------------------
    def recover(self) -> None:
        """At start-up: jobs a previous boot left running are finished when their stems were
        published, canceled when a cancel was pending, else their attempt counts as failed;
        queued jobs with a cancel pending are canceled."""
        settings = self.settings
        for job in self.store.stale_running(self.boot):
            published = find_published(job.output_dir, job.id)
            if published is not None and self.store.adopt(job.id, job.lease_boot, self.boot):
                if self.store.finish(job.id, self.boot, str(published), time.time()):
                    log.info("job %s: found published before the restart -> %s", job.id, published)
                    if job.key:
                        self._keep_in_cache(published, job)
                    self._input_done(job)
                continue
            if job.cancel_requested:
                self._cancel(job.id, job.lease_boot, "canceled (requested before the restart)")
                continue
            state = self.store.fail_attempt(
                job.id, job.lease_boot, "stemd stopped while this job ran (killed, crashed or "
                "the machine restarted).", "crash", False, time.time(), settings.max_attempts, 0.0)
            log.warning("job %s: was running when stemd stopped -> %s", job.id,
                        state.value if state else "unchanged")
            if state == State.FAILED:
                self._set_aside_failed(self.store.get(job.id),
                                       "stemd stopped while separating this file too many times.",
                                       "Check the log; the file may crash the separation.")
        for job in self.store.stranded_cancels():
            self._cancel(job.id, None, "canceled (a cancel left pending by an earlier version)")

    def request_cancel(self, job_id: int) -> Optional[State]:
        """``stemd cancel``: a queued job is canceled at once (CANCELED); a running one is
        marked for the dispatcher to stop (RUNNING); None when it is not active."""
        job = self.store.get(job_id)
        if job is not None and job.state == State.QUEUED and self._cancel(job_id, None, "canceled by request"):
            return State.CANCELED
        if job is not None and job.state == State.RUNNING and self.store.request_cancel(job_id, time.time()):
            log.info("job %s: cancel requested; stopping its worker", job_id)
            return State.RUNNING
        log.info("job %s: cancel requested, but the job is not queued or running", job_id)
        return None

    def retry(self, job_id: int, keep_options: bool = False) -> bool:
        """``stemd retry``: failed | canceled -> queued. The job takes its profile's options
        as they are now (a fixed config is picked up), or keeps its own with
        ``keep_options``; the input's identity and cache key are taken afresh."""
        job = self.store.get(job_id)
        if job is None or job.state not in (State.FAILED, State.CANCELED):
            log.warning("job %s: retry refused (only failed or canceled jobs can be retried)", job_id)
            return False
        current = self.settings.profiles.get(job.profile)
        if keep_options or current is None:
            if current is None and not keep_options:
                log.warning("job %s: profile %r is no longer defined; the job keeps its options",
                            job_id, job.profile)
            options, origin = job.options.without_fallback(), "kept"
        else:
            options, origin = current, "profile"
        try:
            identity, key = _retry_identity(job, options)
        except OSError as exc:
            log.warning("job %s: retry refused: the input %s cannot be read (%s)", job_id,
                        job.input, exc.strerror)
            return False
        note = ("retried by request, keeping the job's options" if origin == "kept"
                else "retried by request with the profile's current options")
        if not self.store.retry(job_id, time.time(), options, key, identity, note, origin):
            log.warning("job %s: retry refused (the same input is already queued or running)", job_id)
            return False
        log.info("job %s: queued again by request (%s)", job_id,
                 "options kept" if origin == "kept" else f"profile {job.profile} as it is now")
        return True

    # -- inputs ---------------------------------------------------------------------------------
    def _input_done(self, job: Job) -> None:
        """After success: archive, delete or keep the input; a note from an earlier failure
        goes. Files named on ``stemd submit`` are the user's own and stay where they are. A
        link file some of whose links failed is set aside with their reasons instead."""
        if job.source == "submit" or self._link_file_still_needed(job):
            return
        links = self._link_jobs(job)
        failed, total = _failed_links(links)
        if failed:
            self._set_aside(job, self._links_note(job, failed, total), links)
            return
        folders = self.folders
        path = Path(job.input)
        try:
            new_path = after_success(path, folders.after_success, folders.archive_dir,  # type: ignore[arg-type]
                                     _inbox(job), folders.failed_dir, Path(job.first_location))
        except OSError as exc:
            log.warning("job %s: stems published, but the input could not be %sd: %s", job.id,
                        folders.after_success, exc)
            return
        if new_path is not None and new_path != path:
            self._moved(job, new_path, links)

    def _set_aside_failed(self, job: Optional[Job], message: str, hint: str) -> None:
        if job is None or job.source == "submit" or self._link_file_still_needed(job):
            return
        links = self._link_jobs(job)
        failed, total = _failed_links(links)
        self._set_aside(job, self._links_note(job, failed, total) if failed else
                        failure_note(Path(job.first_location), message, hint, job.id), links)

    def _set_aside(self, job: Job, note: str, links: Optional[list[Job]] = None) -> None:
        """Move the input into the failed folder, with ``note`` beside it."""
        self._moved(job, set_aside(Path(job.input), self.folders.failed_dir, _inbox(job),
                                   Path(job.first_location), note), links)

    def _links_note(self, job: Job, failed: list[Job], total: int) -> str:
        failures = [(j.url or "", j.error or "", j.id) for j in failed]
        return link_failure_note(Path(job.first_location), failures, total)

    def _link_file_still_needed(self, job: Job) -> bool:
        """A link file's other URLs still need it: the last of its jobs handles it."""
        return job.source == "link" and self.store.others_active_on_input(job.id, job.input)

    def _link_jobs(self, job: Job) -> list[Job]:
        """The jobs of ``job``'s link file (none for any other input)."""
        return self.store.link_jobs_on_input(job.input) if job.source == "link" else []

    def _moved(self, job: Job, new_path: Optional[Path],
               links: Optional[list[Job]] = None) -> None:
        """Record where stemd moved the input; a link file's other jobs (``links``, read
        here when not given) follow it: a retry finds the file, and its jobs stay together."""
        if new_path is None or str(new_path) == job.input:
            return
        for sibling in self._link_jobs(job) if links is None else links:
            if sibling.id != job.id:
                self.store.update_input(sibling.id, str(new_path))
        try:
            identity = InputIdentity.stat(new_path)
        except OSError:
            identity = None
        if identity is not None:
            identity = InputIdentity(identity.size, identity.mtime_ns, identity.inode, job.sha256)
        self.store.update_input(job.id, str(new_path), identity)

    def _keep_in_cache(self, track: Path, job: Job) -> None:
        entry = self.folders.cache_dir / job.key
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            cache_store(track, entry)
        except OSError as exc:
            log.warning("job %s: could not keep the stems in the cache: %s", job.id, exc)


def _failed_links(links: list[Job]) -> tuple[list[Job], int]:
    """The failed jobs of a link file of several links (one link: its job's own note), and
    how many links the file holds (1 for any other input)."""
    failed = [j for j in links if j.state == State.FAILED] if len(links) > 1 else []
    return failed, max(1, len(links))


def _retry_identity(job: Job, options: JobOptions) -> tuple[Optional[InputIdentity], str]:
    """The input's identity and cache key, taken afresh for a retry (``OSError`` when the
    input cannot be read). A link job's key is its address's: the link file is not its
    content."""
    if job.url:
        return None, options.cache_key(link_digest(job.url))
    identity = InputIdentity.read(job.input)
    return identity, options.cache_key(identity.sha256) if identity.sha256 else job.key


def _inbox(job: Job) -> Optional[Path]:
    return Path(job.inbox) if job.inbox else None
