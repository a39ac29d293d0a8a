"""What happens to input files: archived, deleted or kept after success; set aside with a
note on failure or cancel.

An input has at most one place in the failed folder and one note beside it
(``<name>.error.txt``): a later failure of the same job rewrites the note, a later
success removes it. The note always names where the file first arrived.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Literal, Optional

log = logging.getLogger(__name__)

AfterSuccess = Literal["archive", "delete", "keep"]
NOTE_SUFFIX = ".error.txt"


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (2).ext`` ... when taken."""
    candidate = folder / name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    number = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / (f"{stem} ({number}).{ext}" if ext else f"{stem} ({number})")
        number += 1
    return candidate


def relative_to_inbox(path: Path, inbox: Optional[Path]) -> Path:
    if inbox is not None:
        try:
            return path.relative_to(inbox)
        except ValueError:
            pass
    return Path(path.name)


def is_inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def note_path(path: Path) -> Path:
    return path.with_name(path.name + NOTE_SUFFIX)


def move_into(path: Path, folder: Path, rel: Path) -> Path:
    """Move an input to ``folder/rel`` (a free name there), keeping its subfolder."""
    dest_dir = folder / rel.parent
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = unique_path(dest_dir, rel.name)
    shutil.move(str(path), str(dest))
    return dest


def after_success(path: Path, action: AfterSuccess, archive_dir: Path, inbox: Optional[Path],
                  failed_dir: Optional[Path] = None, origin: Optional[Path] = None) -> Optional[Path]:
    """Archive, delete or keep an input whose stems are published. Returns its new path.

    An input set aside by an earlier attempt loses its note; "keep" puts it back where it
    arrived (when that name is free)."""
    origin = origin or path
    set_aside = failed_dir is not None and is_inside(path, failed_dir)
    if set_aside:
        note_path(path).unlink(missing_ok=True)
    if not path.exists():
        return None
    if action == "delete":
        path.unlink()
        return None
    if action == "archive":
        return move_into(path, archive_dir, relative_to_inbox(origin, inbox))
    if set_aside and not origin.exists() and origin.parent.is_dir():
        shutil.move(str(path), str(origin))
        return origin
    return path


def set_aside(path: Path, failed_dir: Path, inbox: Optional[Path], origin: Path,
              note: str) -> Optional[Path]:
    """Move an input into the failed folder (unless an earlier attempt already did) and write
    its note beside it. Returns where the input is now (None when it is gone)."""
    dest: Optional[Path] = None
    if is_inside(path, failed_dir):
        dest = path if path.exists() else None
    elif path.exists() or path.is_symlink():
        try:
            dest = move_into(path, failed_dir, relative_to_inbox(origin, inbox))
        except OSError as exc:
            log.warning("cannot move %s to the failed folder: %s", path, exc)
    where = dest or (failed_dir / relative_to_inbox(origin, inbox))
    where.parent.mkdir(parents=True, exist_ok=True)
    note_path(where).write_text(note, encoding="utf-8")
    return dest


def move_to_failed(path: Path, failed_dir: Path, inbox: Optional[Path], reason: str,
                   hint: str, job_id: Optional[int] = None,
                   origin: Optional[Path] = None) -> Optional[Path]:
    """Set a failed input aside with a note saying why and what to do."""
    origin = origin or path
    return set_aside(path, failed_dir, inbox, origin, failure_note(origin, reason, hint, job_id))


def failure_note(origin: Path, reason: str, hint: str, job_id: Optional[int]) -> str:
    lines = [f"stemd could not separate {origin.name}.", "", f"What happened: {reason}"]
    if hint:
        lines.append(f"What to do: {hint}")
    return _note(lines, origin, job_id, "tries again once fixed, with the profile as it is then")


def link_failure_note(origin: Path, failures: list[tuple[str, str, int]], total: int) -> str:
    """The note of a link file some of whose links failed: ``(url, error, job id)`` each."""
    lines = [f"stemd could not separate every link in {origin.name}.", "",
             f"What happened: {len(failures)} of its {total} links failed:"]
    lines += [f"- {url} (job {job_id}): {error}" for url, error, job_id in failures]
    lines.append("What to do: check each failed link; `stemd retry JOB` fetches it again once "
                 "fixed. The links not listed here did not fail.")
    return _note(lines, origin, None, "")


def cancel_note(origin: Path, reason: str, job_id: Optional[int]) -> str:
    lines = [f"stemd did not separate {origin.name}: its job was canceled.", "",
             f"What happened: {reason}.",
             "What to do: nothing, or delete this file. It is not queued again by itself."]
    return _note(lines, origin, job_id, "separates it after all")


def _note(lines: list[str], origin: Path, job_id: Optional[int], retry_does: str) -> str:
    lines += ["", f"Original location: {origin}",
              f"When: {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    if job_id is not None:
        lines.append(f"Job: {job_id} (stemd retry {job_id} {retry_does})")
    return "\n".join(lines) + "\n"
