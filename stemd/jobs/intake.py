"""Intake: turn a finished file into a job row — probe, hash, validate, dedupe, record.

Runs on its own threads behind a queue, so the watcher never waits on hashing
or probing. Bad inputs are recorded as failed jobs and set aside with a reason a
user understands (the lifecycle does both); the daemon goes on.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from stemd.config import ProfileConfig
from stemd.engine.types import AudioInfo
from stemd.errors import InputError, StemdError
from stemd.jobs.identity import InputIdentity, link_digest
from stemd.jobs.lifecycle import Lifecycle
from stemd.jobs.options import JobOptions
from stemd.jobs.store import NewJob, State
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
    min_duration: float = 0.5
    links: Optional[UrlPolicy] = None      # None: link files are not taken


class Intake:
    def __init__(self, lifecycle: Lifecycle, settings: IntakeSettings,
                 profiles: dict[str, ProfileConfig], probe: ProbeFn) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.settings = settings
        self.profiles = profiles
        self.probe = probe
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
        options = JobOptions.from_profile(profile)
        if self.settings.links is not None and is_link_file(arrival.path):
            return self._process_links(arrival, options, self.settings.links, profile.priority)
        try:
            identity, info = self._inspect(arrival.path)
        except InputError as exc:
            return self._reject(arrival, exc, options)
        sha = identity.sha256
        assert sha is not None
        key = options.cache_key(sha)
        if self._seen_before(arrival.path, key, sha):
            return None
        priority = arrival.priority or profile.priority
        detail = (f"{format_duration(info.duration)}, {info.sample_rate} Hz, {info.channels} ch, "
                  f"profile {arrival.profile}")
        return self.lifecycle.arrive(NewJob(
            key=key, input=str(arrival.path), profile=arrival.profile, options=options,
            identity=identity, duration=info.duration,
            inbox=str(arrival.inbox) if arrival.inbox else None, priority=priority,
            source=arrival.source, folder=inbox_folder(arrival)), detail)

    def _process_links(self, arrival: Arrival, options: JobOptions, policy: UrlPolicy,
                       priority: int) -> Optional[int]:
        """One job per URL of a link file; the same URL with the same options is one job.
        A file with any URL that may not be fetched is refused whole, with that reason."""
        try:
            urls = [check_url(url, policy) for url in read_links(arrival.path)]
        except InputError as exc:
            return self._reject(arrival, exc, options)
        first: Optional[int] = None
        for url in urls:
            key = options.cache_key(link_digest(url))
            active = self.store.active_with_key(key)       # from this or another link file
            if active is not None:
                log.info("job %s: %s is already queued; not adding it again", active.id, url)
                continue
            job_id = self.lifecycle.arrive(NewJob(
                key=key, input=str(arrival.path), profile=arrival.profile, options=options,
                inbox=str(arrival.inbox) if arrival.inbox else None,
                priority=arrival.priority or priority, source="link", url=url,
                folder=inbox_folder(arrival)), f"{url}, profile {arrival.profile}")
            first = first or job_id
        return first

    def _inspect(self, path: Path) -> tuple[InputIdentity, AudioInfo]:
        _size_within_limit(path, self.settings.max_file_bytes)
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
            identity = InputIdentity.read(path)
        except OSError as exc:
            raise InputError(f"The file cannot be read: {exc.strerror}.",
                             "Check the file's permissions and that the disk is healthy.") from None
        return identity, info

    def _seen_before(self, path: Path, key: str, sha: str) -> bool:
        active = self.store.active_with_key(key, str(path))
        if active is not None:
            log.info("job %s: %s is already queued; not adding it again", active.id, path.name)
            return True
        done = self.store.done_with_input(str(path), sha)
        if done is not None:
            log.debug("%s was already separated by job %s and kept; skipping", path, done)
            return True
        return False

    def _reject(self, arrival: Arrival, exc: StemdError, options: Optional[JobOptions]) -> int:
        return self.lifecycle.reject(NewJob(
            key="", input=str(arrival.path), profile=arrival.profile,
            options=options or JobOptions(),
            inbox=str(arrival.inbox) if arrival.inbox else None, source=arrival.source,
            state=State.FAILED, error=f"{exc.message} {exc.hint}".strip(),
            history=[{"attempt": 0, "kind": exc.kind, "reason": exc.message}]),
            exc.message, exc.hint)


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
