"""What happens when a worker finishes: manifest, publish, cache, input handling."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from stemd import __version__
from stemd.engine.types import SeparationResult
from stemd.jobs.inputs import after_success, move_to_failed
from stemd.output.naming import track_dir, track_name
from stemd.output.publish import (Published, cache_restore, cache_store, flush_tree, publish, read_manifest, write_manifest)
from stemd.jobs.store import Job, Store

log = logging.getLogger(__name__)


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


def stage_dir(settings: PublishSettings, job_id: int, attempt: int) -> Path:
    return settings.staging_dir / f"{job_id}-{attempt}"


def work_dir(settings: PublishSettings, job_id: int, attempt: int) -> Path:
    return settings.work_dir / f"{job_id}-{attempt}"


def rel_track_dir(template: str, job: Job) -> str:
    return track_dir(template, track=job_track(job), model=job.options.get("model", ""),
                     profile=job.profile, folder=job.folder)


def job_track(job: Job) -> str:
    """The track name: a link job's title once known, else the input's name."""
    return job.title or track_name(job.input_name)


def build_manifest(job: Job, result: SeparationResult, wall: float,
                   template: str) -> dict[str, Any]:
    return {
        "stemd_version": __version__, "job_id": job.id, "host": socket.gethostname(),
        "input": {"name": job.input_name, "path": job.input, "size": job.size,
                  "sha256": job.sha256, "duration": result.input.duration,
                  "sample_rate": result.input.sample_rate, "channels": result.input.channels,
                  "codec": result.input.codec},
        "model": job.options.get("model"), "profile": job.profile, "options": job.options,
        "device": result.device, "members_run": result.members_run,
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


def finish_job(store: Store, settings: PublishSettings, job: Job, boot: str, staged_track: Path,
               rel_dir: str, manifest: dict[str, Any], cached: bool) -> Published:
    """Publish a staged track, then mark the job done and handle its input."""
    if manifest.get("output", {}).get("resampled"):
        log.info("job %s: %s", job.id, manifest["output"]["resampled"])
    write_manifest(staged_track, manifest)
    flush_tree(staged_track)
    published = publish(staged_track, settings.outbox, rel_dir, settings.on_conflict,  # type: ignore[arg-type]
                        settings.staging_dir / ".trash",
                        before=lambda target: store.set_output(job.id, boot, str(target), time.time()))
    if published.path is not None and not cached and job.key:
        _keep_in_cache(published.path, settings.cache_dir / job.key, job.id)
    output = str(published.path) if published.path else None
    store.finish(job.id, boot, output, time.time(), cached=cached, note=published.note)
    handle_input(store, settings, job)
    return published


def serve_from_cache(store: Store, settings: PublishSettings, job: Job, boot: str,
                     template: str) -> Optional[Published]:
    """Publish a cached result for ``job`` (already claimed) without separating again."""
    entry = settings.cache_dir / job.key
    if job.url and not job.title:   # a link job: the cached track's title names the folder
        title = (read_manifest(entry) or {}).get("title")
        if isinstance(title, str) and title:
            store.set_title(job.id, title)
            job = dataclasses.replace(job, title=title)
    staged = stage_dir(settings, job.id, job.attempts)
    rel_dir = rel_track_dir(template, job)
    staged_track = staged / rel_dir
    if not cache_restore(entry, staged_track):
        return None
    manifest = read_manifest(staged_track) or {}
    manifest.update({"job_id": job.id, "cached": True, "cached_from": manifest.get("job_id"),
                     "input": {**manifest.get("input", {}), "name": job.input_name,
                               "path": job.input, "sha256": job.sha256, "size": job.size},
                     "profile": job.profile, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    os.unlink(staged_track / "manifest.json")  # a hardlink into the cache: replace, not edit
    published = finish_job(store, settings, job, boot, staged_track, rel_dir, manifest, cached=True)
    shutil.rmtree(staged, ignore_errors=True)
    log.info("job %s: served from the stem cache -> %s", job.id, published.path)
    return published


def handle_input(store: Store, settings: PublishSettings, job: Job) -> None:
    path = Path(job.input)
    inbox = Path(job.inbox) if job.inbox else None
    if job.source == "submit":
        return  # a file named on `stemd submit` is the user's own: never moved or deleted
    if job.source == "link" and store.others_active_on_input(job.id, job.input):
        return  # a link file's other URLs still need it: the last job handles it
    try:
        new_path = after_success(path, settings.after_success, settings.archive_dir, inbox)  # type: ignore[arg-type]
    except OSError as exc:
        log.warning("job %s: stems published, but the input could not be %sd: %s", job.id,
                    settings.after_success, exc)
        return
    if new_path is not None and new_path != path:
        store.update_input(job.id, str(new_path))


def park_failed_input(store: Store, failed_dir: Path, job: Job, message: str, hint: str) -> None:
    """Move a failed job's input to the failed folder with its note; files named on
    ``stemd submit`` are the user's own and stay where they are."""
    if job.source == "submit":
        return
    if job.source == "link" and store.others_active_on_input(job.id, job.input):
        return
    moved = move_to_failed(Path(job.input), failed_dir, Path(job.inbox) if job.inbox else None,
                           message, hint, job.id)
    if moved is not None:
        store.update_input(job.id, str(moved))


def _keep_in_cache(track: Path, entry: Path, job_id: int) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        cache_store(track, entry)
    except OSError as exc:
        log.warning("job %s: could not keep the stems in the cache: %s", job_id, exc)


def remove_attempt_dirs(settings: PublishSettings, job_id: int, attempt: int) -> None:
    shutil.rmtree(stage_dir(settings, job_id, attempt), ignore_errors=True)
    shutil.rmtree(work_dir(settings, job_id, attempt), ignore_errors=True)
