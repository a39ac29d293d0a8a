"""Disk space: what a job will write, whether the disks can take it, and how much a folder uses.

Before a job starts, the dispatcher asks :func:`check_space` whether every filesystem the
job writes to (outbox, staging, cache) has room for the job's expected output plus the
``maintenance.min_free`` reserve. :class:`SpaceGate` remembers the answer so that dispatch
pauses with a reason that ``stemd status`` can show, and resumes by itself once a later
check passes; it logs only when the state changes.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from stemd.units import format_size

if TYPE_CHECKING:
    from stemd.jobs.options import JobOptions

log = logging.getLogger(__name__)

_WAV_BYTES = {"int16": 2, "int24": 3, "float32": 4}
_WAV_HEADER = 4096          # RIFF header, plus room for a float/extensible format chunk
_FLAC_OVERHEAD = 64 * 1024  # STREAMINFO, seek table, padding
_MP3_OVERHEAD = 64 * 1024   # ID3 tag, LAME/Xing frame, encoder delay and padding frames


@dataclass(frozen=True)
class SpaceCheck:
    """The answer of a space check; ``reason`` is empty when ``ok``."""

    ok: bool
    reason: str


def expected_stems(options: "JobOptions", model_stems: Optional[int]) -> int:
    """How many stem files a job writes: two (one with ``other_method = "none"``) for a
    two-stem job, else the model's stem count, once a job of the model has reported it
    (before that 6 for a ``*_6s`` model, 4 otherwise)."""
    if options.two_stems:
        return 1 if options.other_method == "none" else 2
    if model_stems:
        return model_stems
    return 6 if options.model.endswith("_6s") else 4


def expected_output_bytes(duration_s: float, stems: int, fmt: str, wav_depth: str = "int16",
                          mp3_bitrate: int = 320, sample_rate: int = 44100,
                          channels: int = 2) -> int:
    """Bytes a job's stems take: decoded length x stems x format.

    wav is exact; flac is counted as uncompressed PCM (flac never grows much past it,
    and separated stems compress unevenly); mp3 is the constant bitrate times the length.
    """
    if duration_s < 0 or stems < 0:
        raise ValueError(f"duration and stems must not be negative: {duration_s}, {stems}")
    per_stem = _per_stem_bytes(duration_s, fmt, wav_depth, mp3_bitrate, sample_rate, channels)
    return int(per_stem) * stems


def _per_stem_bytes(duration_s: float, fmt: str, wav_depth: str, mp3_bitrate: int,
                    sample_rate: int, channels: int) -> float:
    if fmt == "mp3":
        return duration_s * mp3_bitrate * 1000 / 8 + _MP3_OVERHEAD
    if fmt not in ("wav", "flac"):
        raise ValueError(f"unknown output format {fmt!r}: expected wav, flac or mp3")
    if wav_depth not in _WAV_BYTES:
        raise ValueError(f"unknown sample format {wav_depth!r}: expected {sorted(_WAV_BYTES)}")
    depth = 3 if fmt == "flac" and wav_depth == "float32" else _WAV_BYTES[wav_depth]
    pcm = duration_s * sample_rate * channels * depth
    return pcm + (_FLAC_OVERHEAD if fmt == "flac" else _WAV_HEADER)


def existing_parent(folder: Path) -> Path:
    """The folder itself if it exists, else its nearest existing parent."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_space(folders: Iterable[Path], needed: int, min_free: int) -> SpaceCheck:
    """Whether each filesystem under ``folders`` has ``needed + min_free`` bytes free.

    Folders on the same filesystem (same ``st_dev``) are checked once; a folder that does
    not exist yet is checked through its nearest existing parent.
    """
    problems: list[str] = []
    for device_folders in _by_filesystem(folders, problems).values():
        problem = _check_one(device_folders, needed, min_free)
        if problem:
            problems.append(problem)
    return SpaceCheck(ok=not problems, reason=" ".join(problems))


def _by_filesystem(folders: Iterable[Path], problems: list[str]) -> dict[int, list[Path]]:
    groups: dict[int, list[Path]] = {}
    for folder in folders:
        try:
            device = existing_parent(folder).stat().st_dev
        except OSError as exc:
            problems.append(f"Cannot check free space for {folder}: {exc.strerror or exc}; "
                            "check that it is mounted and readable.")
            continue
        groups.setdefault(device, []).append(Path(folder))
    return groups


def _check_one(folders: list[Path], needed: int, min_free: int) -> str:
    names = ", ".join(str(folder) for folder in folders)
    try:
        free = shutil.disk_usage(existing_parent(folders[0])).free
    except OSError as exc:
        return (f"Cannot read the free space of {names}: {exc.strerror or exc}; "
                "check that the filesystem is mounted and readable.")
    if free - needed >= min_free:
        return ""
    return (f"Low disk space on the filesystem of {names}: {format_size(free)} free, "
            f"{format_size(needed + min_free)} needed ({format_size(needed)} for this job + "
            f"{format_size(min_free)} maintenance.min_free). Free up space there (or lower "
            "maintenance.min_free); dispatch resumes by itself when space returns.")


def usage(folder: Path) -> int:
    """Bytes used under a folder (file sizes, symlinks not followed); 0 if it does not exist."""
    total = 0
    stack = [Path(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    total += _entry_size(entry, stack)
        except OSError:
            continue
    return total


def _entry_size(entry: os.DirEntry[str], stack: list[Path]) -> int:
    try:
        if entry.is_dir(follow_symlinks=False):
            stack.append(Path(entry.path))
            return 0
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


class SpaceGate:
    """Dispatch's memory of the last space check: paused (with why) or not.

    The dispatcher calls :meth:`check` before each job; ``stemd status`` reads
    :attr:`reason`. A pause and a resume are each logged once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: Optional[str] = None

    @property
    def paused(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str:
        """Why dispatch is paused; empty while it is not."""
        return self._reason or ""

    def check(self, folders: Iterable[Path], needed: int, min_free: int) -> SpaceCheck:
        result = check_space(folders, needed, min_free)
        self.record(result)
        return result

    def record(self, result: SpaceCheck) -> None:
        with self._lock:
            was_paused, self._reason = self.paused, (None if result.ok else result.reason)
        if result.ok and was_paused:
            log.info("Disk space is back above the watermark: dispatch resumes.")
        elif not result.ok and not was_paused:
            log.warning("Dispatch paused: %s", result.reason)
