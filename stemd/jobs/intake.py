"""Intake: turn a finished file into a job row — probe, hash, validate, dedupe, record.

Runs on its own thread behind a queue, so the watcher never waits on hashing
or probing. Bad inputs are moved to the failed folder with a reason a user
understands, and recorded as failed jobs; the daemon goes on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from stemd.config import ProfileConfig
from stemd.engine.types import AudioInfo
from stemd.errors import InputError, StemdError
from stemd.jobs.lifecycle import park_failed_input
from stemd.jobs.store import NewJob, State, Store
from stemd.links.parse import is_link_file, read_links
from stemd.links.policy import UrlPolicy, check_url
from stemd.units import format_duration

log = logging.getLogger(__name__)

ProbeFn = Callable[[Path], AudioInfo]
THREADS = 4


@dataclass(frozen=True)
class Arrival:
    """A file offered for separation (by the watcher or ``stemd submit``)."""

    path: Path
    profile: str
    inbox: Optional[Path] = None
    priority: int = 0
    source: str = "watch"
    size: Optional[int] = None
    mtime: Optional[float] = None


@dataclass(frozen=True)
class IntakeSettings:
    max_file_bytes: int
    max_duration: float
    failed_dir: Path
    min_duration: float = 0.5
    links: Optional[UrlPolicy] = None      # None: link files are not taken


def options_of(profile: ProfileConfig) -> dict[str, Any]:
    """The effective separation options of a profile, as stored on the job."""
    options = dataclasses.asdict(profile.separation_options())
    options["device"] = profile.device
    return options


def job_key(sha256: str, options: dict[str, Any]) -> str:
    """Same input and same output-affecting options give the same key (dedupe and cache)."""
    relevant = {k: v for k, v in options.items() if k not in ("device", "batch_size", "force_device")}
    blob = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(f"{sha256}:{blob}".encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


class Intake:
    def __init__(self, store: Store, settings: IntakeSettings,
                 profiles: dict[str, ProfileConfig], probe: ProbeFn,
                 on_job: Optional[Callable[[int], None]] = None) -> None:
        self.store = store
        self.settings = settings
        self.profiles = profiles
        self.probe = probe
        self.on_job = on_job
        self.queue: "queue.Queue[Optional[Arrival]]" = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()

    def reconfigure(self, settings: IntakeSettings, profiles: dict[str, ProfileConfig]) -> None:
        self.settings, self.profiles = settings, profiles

    # -- thread --------------------------------------------------------------------
    def offer(self, arrival: Arrival) -> None:
        self.queue.put(arrival)

    def start(self, threads: int = THREADS) -> None:
        """Probing is subprocess-bound (ffprobe, ffmpeg): a few threads keep up with bursts."""
        for number in range(threads):
            thread = threading.Thread(target=self._run, name=f"stemd-intake-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for _ in self._threads:
            self.queue.put(None)
        for thread in self._threads:
            thread.join(10)
        self._threads = []

    def pending(self) -> int:
        return self.queue.qsize() + self._busy

    def _run(self) -> None:
        while True:
            arrival = self.queue.get()
            if arrival is None:
                return
            with self._lock:
                self._busy += 1
            try:
                self.process(arrival)
            except Exception:  # never let one file stop intake
                log.exception("intake of %s failed unexpectedly", arrival.path)
            finally:
                with self._lock:
                    self._busy -= 1

    # -- one file ---------------------------------------------------------------------
    def process(self, arrival: Arrival) -> Optional[int]:
        """Record a job for ``arrival``; returns its id, or None when nothing was recorded."""
        profile = self.profiles.get(arrival.profile)
        if profile is None:
            return self._reject(arrival, InputError(
                f"Profile {arrival.profile!r} is not defined.",
                "Use one of the profiles in the config's [profiles] tables."), None)
        options = options_of(profile)
        if self.settings.links is not None and is_link_file(arrival.path):
            return self._process_links(arrival, options, self.settings.links, profile.priority)
        try:
            sha, info, size = self._inspect(arrival.path)
        except InputError as exc:
            return self._reject(arrival, exc, options)
        key = job_key(sha, options)
        if self._seen_before(arrival.path, key, sha):
            return None
        priority = arrival.priority or profile.priority
        job_id = self.store.add_job(NewJob(
            key=key, input=str(arrival.path), profile=arrival.profile, options=options,
            sha256=sha, size=size, duration=info.duration,
            inbox=str(arrival.inbox) if arrival.inbox else None, priority=priority,
            source=arrival.source, folder=inbox_folder(arrival)))
        log.info("job %s: queued %s (%s, %s Hz, %s ch, profile %s)", job_id, arrival.path.name,
                 format_duration(info.duration), info.sample_rate, info.channels, arrival.profile)
        if self.on_job:
            self.on_job(job_id)
        return job_id

    def _process_links(self, arrival: Arrival, options: dict[str, Any], policy: UrlPolicy,
                       priority: int) -> Optional[int]:
        """One job per URL of a link file; the same URL with the same options is one job.
        A file with any URL that may not be fetched is refused whole, with that reason."""
        try:
            urls = [check_url(url, policy) for url in read_links(arrival.path)]
        except InputError as exc:
            return self._reject(arrival, exc, options)
        first: Optional[int] = None
        for url in urls:
            key = job_key(hashlib.sha256(f"link:{url}".encode()).hexdigest(), options)
            active = self.store.active_with_key(key)
            if active is not None:
                log.info("job %s: %s is already queued; not adding it again", active.id, url)
                continue
            job_id = self.store.add_job(NewJob(
                key=key, input=str(arrival.path), profile=arrival.profile, options=options,
                inbox=str(arrival.inbox) if arrival.inbox else None,
                priority=arrival.priority or priority, source="link", url=url))
            log.info("job %s: queued %s (from %s, profile %s)", job_id, url, arrival.path.name,
                     arrival.profile)
            first = first or job_id
            if self.on_job:
                self.on_job(job_id)
        return first

    def _inspect(self, path: Path) -> tuple[str, AudioInfo, int]:
        size = _size_within_limit(path, self.settings.max_file_bytes)
        info = self.probe(path)
        if info.duration < self.settings.min_duration:
            raise InputError(
                f"The track is only {info.duration:.2f} s long, too short to separate "
                f"(intake.min_duration is {self.settings.min_duration:g} s).",
                "If the copy did not finish, drop the complete file again.")
        if info.duration > self.settings.max_duration:
            raise InputError(
                f"The track is {format_duration(info.duration)} long, longer than the "
                f"{format_duration(self.settings.max_duration)} allowed.",
                "Raise intake.max_duration in the config, or split the file.")
        try:
            sha = sha256_file(path)
        except OSError as exc:
            raise InputError(f"The file cannot be read: {exc.strerror}.",
                             "Check the file's permissions and that the disk is healthy.") from None
        return sha, info, size

    def _seen_before(self, path: Path, key: str, sha: str) -> bool:
        active = self.store.active_with_key(key)
        if active is not None and active.input == str(path):
            log.info("job %s: %s is already queued; not adding it again", active.id, path.name)
            return True
        done = self.store.done_with_input(str(path), sha)
        if done is not None:
            log.debug("%s was already separated by job %s and kept; skipping", path, done)
            return True
        return False

    def _reject(self, arrival: Arrival, exc: StemdError, options: Optional[dict[str, Any]]) -> Optional[int]:
        log.warning("rejected %s: %s", arrival.path, exc)
        job_id = self.store.add_job(NewJob(
            key="", input=str(arrival.path), profile=arrival.profile, options=options or {},
            inbox=str(arrival.inbox) if arrival.inbox else None, source=arrival.source,
            state=State.FAILED, error=f"{exc.message} {exc.hint}".strip(),
            history=[{"attempt": 0, "kind": exc.kind, "reason": exc.message}]))
        job = self.store.get(job_id)
        assert job is not None
        park_failed_input(self.store, self.settings.failed_dir, job, exc.message, exc.hint)
        return job_id


def inbox_folder(arrival: Arrival) -> str:
    """The input's folder relative to its inbox, as ``a/b`` ("" at the top or when submitted)."""
    if arrival.inbox is None:
        return ""
    try:
        folder = arrival.path.parent.relative_to(arrival.inbox).as_posix()
    except ValueError:
        return ""
    return "" if folder == "." else folder


def _size_within_limit(path: Path, max_bytes: int) -> int:
    """The file's size; the probe checks the rest (regular file, empty, readable, audio)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return 0   # gone or unreadable: the probe says which, in plain words
    if size > max_bytes:
        raise InputError(f"The file is {size / 1e6:.0f} MB, more than the "
                         f"{max_bytes / 1e6:.0f} MB allowed.",
                         "Raise intake.max_file_mb in the config, or use a smaller file.")
    return size
