"""Which filesystems count as network mounts, and finding the mount of a folder."""
from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from stemd.watch import is_network_fstype
from stemd.watch.fstype import filesystem_of


@pytest.mark.parametrize("fstype", [
    "nfs", "nfs4", "NFS4", "cifs", "smb3", "smbfs", "9p", "afpfs", "davfs", "sshfs", "virtiofs",
    "fuse.sshfs", "fuse.rclone", "fuse.gvfsd-fuse", "fuse", "vboxsf", "ceph", "glusterfs", "drvfs",
    "osxfuse", "macfuse", "webdav", "autofs",
])
def test_network_filesystems(fstype: str) -> None:
    assert is_network_fstype(fstype)


@pytest.mark.parametrize("fstype", [
    "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "apfs", "hfs", "NTFS", "vfat", "exfat", "fuseblk", "",
])
def test_local_filesystems(fstype: str) -> None:
    assert not is_network_fstype(fstype)


def test_windows_network_drives_are_marked_remote_by_psutil() -> None:
    assert is_network_fstype("NTFS", "rw,remote")
    assert not is_network_fstype("NTFS", "rw,fixed")


def test_the_mount_of_a_folder_is_the_longest_mount_point_holding_it(tmp_path: Path) -> None:
    fs = filesystem_of(tmp_path)
    mounts = [p for p in psutil.disk_partitions(all=True) if p.mountpoint == fs.mountpoint]
    assert mounts and fs.fstype == mounts[-1].fstype
    assert str(tmp_path.resolve()).startswith(fs.mountpoint)
    for part in psutil.disk_partitions(all=True):
        if len(part.mountpoint) > len(fs.mountpoint):
            assert not str(tmp_path.resolve()).startswith(part.mountpoint.rstrip("/") + "/")
    assert fs.network is is_network_fstype(fs.fstype, mounts[-1].opts)


def test_a_folder_that_does_not_exist_yet_still_has_a_mount(tmp_path: Path) -> None:
    assert filesystem_of(tmp_path / "not" / "yet").mountpoint == filesystem_of(tmp_path).mountpoint
