"""What happens to input files: archived, deleted or kept after success; moved aside on failure."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Literal, Optional

log = logging.getLogger(__name__)

AfterSuccess = Literal["archive", "delete", "keep"]


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


def move_into(path: Path, folder: Path, inbox: Optional[Path]) -> Path:
    """Move an input below ``folder``, keeping its subfolder under the inbox."""
    rel = relative_to_inbox(path, inbox)
    dest_dir = folder / rel.parent
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = unique_path(dest_dir, rel.name)
    shutil.move(str(path), str(dest))
    return dest


def after_success(path: Path, action: AfterSuccess, archive_dir: Path,
                  inbox: Optional[Path]) -> Optional[Path]:
    """Archive, delete or keep an input whose stems are published. Returns its new path."""
    if not path.exists():
        return None
    if action == "delete":
        path.unlink()
        return None
    if action == "archive":
        return move_into(path, archive_dir, inbox)
    return path


def move_to_failed(path: Path, failed_dir: Path, inbox: Optional[Path], reason: str,
                   hint: str, job_id: Optional[int] = None) -> Optional[Path]:
    """Move a failed input aside with ``<name>.error.txt`` beside it explaining why."""
    dest: Optional[Path] = None
    if path.exists() or path.is_symlink():
        try:
            dest = move_into(path, failed_dir, inbox)
        except OSError as exc:
            log.warning("cannot move %s to the failed folder: %s", path, exc)
    note_dir = dest.parent if dest else failed_dir / relative_to_inbox(path, inbox).parent
    note_dir.mkdir(parents=True, exist_ok=True)
    name = dest.name if dest else path.name
    note = note_dir / f"{name}.error.txt"
    note.write_text(_error_text(path, reason, hint, job_id), encoding="utf-8")
    return dest


def _error_text(path: Path, reason: str, hint: str, job_id: Optional[int]) -> str:
    lines = [f"stemd could not separate {path.name}.", "", f"What happened: {reason}"]
    if hint:
        lines.append(f"What to do: {hint}")
    lines += ["", f"Original location: {path}",
              f"When: {time.strftime('%Y-%m-%d %H:%M:%S %z')}"]
    if job_id is not None:
        lines.append(f"Job: {job_id} (stemd retry {job_id} tries again once fixed)")
    return "\n".join(lines) + "\n"
