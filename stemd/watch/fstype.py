"""Which filesystem an inbox lives on, and whether file events can be trusted there.

The only module of the watcher that uses psutil.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

# Filesystems where changes made by other machines never reach inotify/FSEvents,
# or where attributes are cached: watch them by polling.
NETWORK_FSTYPES: frozenset[str] = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afpfs", "afs",
    "ncpfs", "ncp", "coda", "davfs", "webdav", "sshfs", "virtiofs", "vboxsf",
    "vmhgfs", "prl_fs", "drvfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
    "ocfs2", "gfs2", "orangefs", "pvfs2", "autofs", "fuse",
})
NETWORK_PREFIXES: tuple[str, ...] = ("fuse.", "osxfuse", "macfuse")
LOCAL_FUSE: frozenset[str] = frozenset({"fuseblk"})      # ntfs-3g, exfat on a local disk


@dataclass(frozen=True)
class Filesystem:
    """The mount an inbox lives on."""

    fstype: str
    mountpoint: str
    network: bool


def is_network_fstype(fstype: str, opts: str = "") -> bool:
    """True for network and shared-folder filesystems (nfs, cifs, fuse.*, 9p, ...)."""
    kind = fstype.strip().casefold()
    if kind in LOCAL_FUSE:
        return False
    if kind in NETWORK_FSTYPES or kind.startswith(NETWORK_PREFIXES):
        return True
    return "remote" in opts.split(",")          # psutil on Windows: network drives


def filesystem_of(path: Path) -> Filesystem:
    """The mount holding ``path``: the longest mount point that contains it (the last one mounted wins)."""
    real = os.path.realpath(path)
    best: Filesystem = Filesystem("unknown", "", False)
    try:
        partitions = psutil.disk_partitions(all=True)
    except (OSError, RuntimeError) as exc:
        log.warning("Cannot read the mount table to classify %s: %s", path, exc)
        return best
    for part in partitions:
        if _contains(part.mountpoint, real) and len(part.mountpoint) >= len(best.mountpoint):
            best = Filesystem(part.fstype, part.mountpoint, is_network_fstype(part.fstype, part.opts))
    return best


def _contains(mountpoint: str, path: str) -> bool:
    if not mountpoint:
        return False
    if path == mountpoint or mountpoint == os.sep:
        return True
    return path.startswith(mountpoint.rstrip(os.sep) + os.sep)
