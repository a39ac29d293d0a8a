"""Looking at one directory entry without following or opening it blindly.

Everything here starts with ``lstat``: FIFOs and device files are never opened,
and a symbolic link is followed only after checking where it points.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from stemd.watch.names import BUSY_SIDECARS
from stemd.watch.spec import InboxSpec

TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Signature:
    """What must stay the same while a file settles."""

    size: int
    mtime_ns: int
    ino: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


Look = Signature | str | None
"""A regular file's signature, a reason it is not one, or None when it is gone."""


def inspect(path: Path, inbox: InboxSpec) -> Look:
    """The signature of ``path`` if it is a usable regular file; else why not, or None if gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be examined ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return _signature(st)
    if stat.S_ISLNK(st.st_mode):
        return _inspect_link(path, inbox)
    return _kind_reason(st.st_mode)


def check_entry(path: Path, inbox: InboxSpec) -> str | None:
    """None when ``path`` is a regular file stemd may read, else a reason a user understands."""
    look = inspect(Path(path), inbox)
    if look is None:
        return "it no longer exists"
    return look if isinstance(look, str) else None


def tail_is_zero(path: Path, size: int, follow: bool) -> bool:
    """True when the last 64 KiB of a regular file are all zero bytes (maybe not filled yet)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        count = min(size, TAIL_BYTES)
        data = os.pread(fd, count, size - count)
    except OSError:
        return False
    finally:
        os.close(fd)
    return len(data) == count and data.count(0) == count


def has_busy_sidecar(path: Path) -> bool:
    """True while a downloader's control file (``name.aria2``) sits next to the file."""
    return any(os.path.lexists(f"{path}{suffix}") for suffix in BUSY_SIDECARS)


def signature(path: Path) -> Optional[Signature]:
    """Size, mtime and inode of the file ``path`` points to; None when it cannot be read."""
    try:
        return _signature(os.stat(path))
    except OSError:
        return None


def _signature(st: os.stat_result) -> Signature:
    return Signature(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino)


def _inspect_link(path: Path, inbox: InboxSpec) -> Look:
    target = os.path.realpath(path)
    if not inbox.follow_symlinks and not _inside(target, inbox.path):
        return ("it is a symbolic link to a place outside the inbox "
                "(set follow_symlinks = true to accept such links)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "it is a broken symbolic link"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it is a symbolic link that loops"
        return f"its link target cannot be examined ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return _signature(st)
    return _kind_reason(st.st_mode, "it is a symbolic link to")


def _inside(target: str, root: Path) -> bool:
    real_root = os.path.realpath(root)
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def _kind_reason(mode: int, what: str = "it is") -> str:
    if stat.S_ISDIR(mode):
        return f"{what} a folder, not a file"
    if stat.S_ISFIFO(mode):
        return f"{what} a named pipe (FIFO), not a file; stemd never reads from pipes"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"{what} a device, not a file"
    if stat.S_ISSOCK(mode):
        return f"{what} a socket, not a file"
    return f"{what} something other than a regular file"
