"""An input file's identity: size, mtime, inode and the SHA-256 of its content.

Recorded on the job when the file arrives, checked when the job is claimed and again
by the worker when it opens the file: a file replaced at the same path while its job
waited is a different input (its job is superseded), never separated and cached under
the old content's hash. Light on purpose: the worker process imports it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def link_digest(url: str) -> str:
    """A link job's content identity is its address: the same URL is the same track (its
    cache key is made from this, never from the link file that named it)."""
    return hashlib.sha256(f"link:{url}".encode()).hexdigest()


@dataclass(frozen=True)
class InputIdentity:
    size: int
    mtime_ns: int
    inode: int
    sha256: Optional[str] = None

    @classmethod
    def stat(cls, path: PathLike) -> "InputIdentity":
        """Size, mtime and inode only (``OSError`` when the file is gone)."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    @classmethod
    def read(cls, path: PathLike) -> "InputIdentity":
        """The full identity, content hash included (``OSError`` when unreadable)."""
        before = cls.stat(path)
        return replace(before, sha256=sha256_file(path))

    def same_file(self, other: "InputIdentity") -> bool:
        """Same size, mtime and inode: the file was not touched."""
        return (self.size, self.mtime_ns, self.inode) == (other.size, other.mtime_ns, other.inode)

    def check(self, path: PathLike) -> Optional["InputIdentity"]:
        """The file's identity now when its content is still this one, else None.

        Untouched (same stat) is the same content; touched, moved by stemd or copied
        with its times is the same content when the hash still matches."""
        now = InputIdentity.stat(path)
        if self.sha256 is None or now.same_file(self):
            return replace(now, sha256=self.sha256)
        current = InputIdentity.read(path)
        return current if current.sha256 == self.sha256 else None
