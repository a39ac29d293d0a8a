"""Publish a finished track: manifest, then one rename from staging into the outbox.

The outbox never holds a partial track: stems are written into a staging
folder on the outbox's filesystem, flushed, and the track folder is moved
into place with ``os.rename``. Results are also kept in the stem cache, so the
same input with the same options is served again without separating.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
Conflict = Literal["rename", "overwrite", "skip"]


@dataclass(frozen=True)
class Published:
    path: Optional[Path]     # the track folder in the outbox; None when skipped
    skipped: bool = False
    note: Optional[str] = None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
    _fsync(tmp)
    tmp.replace(folder / MANIFEST)


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def flush_tree(folder: Path) -> None:
    """fsync every file and folder below ``folder`` so a rename publishes complete data."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync_dir(Path(root))


def publish(staged: Path, outbox: Path, rel_dir: str, on_conflict: Conflict,
            trash: Path, before: Callable[[Path], object] = lambda target: None) -> Published:
    """Move ``staged`` (a finished track folder) to ``outbox/rel_dir``.

    ``before(target)`` runs just before the rename, so the caller can record
    where the track is going (crash recovery finds it by its manifest).
    """
    target = outbox / rel_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        before(target)
        return _rename(staged, target)
    if on_conflict == "skip":
        shutil.rmtree(staged, ignore_errors=True)
        return Published(None, True, f"skipped: {target} already exists (outbox.on_conflict = skip)")
    if on_conflict == "overwrite":
        before(target)
        return _overwrite(staged, target, trash)
    target = _free_name(target)
    before(target)
    return _rename(staged, target)


def _rename(staged: Path, target: Path) -> Published:
    os.rename(staged, target)
    _fsync_dir(target.parent)
    return Published(target)


def _overwrite(staged: Path, target: Path, trash: Path) -> Published:
    trash.mkdir(parents=True, exist_ok=True)
    old = trash / f"replaced-{time.time_ns()}"
    os.rename(target, old)
    os.rename(staged, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return Published(target, note=f"replaced the previous {target.name}")


def _free_name(target: Path) -> Path:
    for number in range(2, 10_000):
        candidate = target.with_name(f"{target.name} ({number})")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name next to {target}")


def remove_empty_staging(staging: Path) -> None:
    """Nothing is being written: the staging folder (and its trash), when empty, goes, so
    that an idle outbox holds finished tracks only. It is made again for the next track."""
    for folder in (staging / ".trash", staging):
        try:
            folder.rmdir()
        except OSError:       # missing, or not empty: a leftover that cleanup handles
            pass


def find_published(output_dir: Optional[str], job_id: int) -> Optional[Path]:
    """The track folder a job published before a crash, if its manifest says so."""
    if not output_dir:
        return None
    folder = Path(output_dir)
    manifest = read_manifest(folder)
    if manifest and manifest.get("job_id") == job_id:
        return folder
    return None


# -- stem cache ----------------------------------------------------------------------
def cache_store(track_folder: Path, cache_entry: Path) -> None:
    """Keep a copy (hardlinks where possible) of a published track in the cache."""
    if cache_entry.exists():
        return
    tmp = cache_entry.with_name(cache_entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(track_folder, tmp, copy_function=_link_or_copy)
    try:
        os.rename(tmp, cache_entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_restore(cache_entry: Path, staged: Path) -> bool:
    """Copy a cache entry into a staging folder; False when there is none."""
    if not (cache_entry / MANIFEST).is_file():
        return False
    os.utime(cache_entry)   # last used (LRU), before copying so a cleanup pass keeps it
    shutil.rmtree(staged, ignore_errors=True)
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cache_entry, staged, copy_function=_link_or_copy)
    return True


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
