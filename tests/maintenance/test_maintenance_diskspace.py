"""Disk space: expected output size, the watermark check and dispatch pausing on it."""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pytest

from stemd.jobs.options import JobOptions
from stemd.output.diskspace import (SpaceCheck, SpaceGate, check_space, existing_parent, expected_output_bytes, expected_stems, usage)

GIB = 1024**3
MIB = 1024**2


def _free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def test_expected_stems_follow_the_options_and_the_model() -> None:
    assert expected_stems(JobOptions(model="htdemucs"), None) == 4
    assert expected_stems(JobOptions(model="htdemucs_6s"), None) == 6
    assert expected_stems(JobOptions(model="mine"), 6) == 6          # learned from a finished job
    assert expected_stems(JobOptions(model="htdemucs_6s", two_stems="vocals"), 6) == 2
    assert expected_stems(JobOptions(two_stems="vocals", other_method="none"), 4) == 1


def test_expected_output_bytes_per_format() -> None:
    minute = 60 * 44100 * 2
    wav16 = expected_output_bytes(60, 4, "wav", "int16", 320)
    assert minute * 2 * 4 <= wav16 <= minute * 2 * 4 + 4 * 8192
    wav24 = expected_output_bytes(60, 4, "wav", "int24", 320)
    assert wav24 - wav16 == minute * 4
    assert expected_output_bytes(60, 4, "wav", "float32", 320) > wav24
    assert wav16 <= expected_output_bytes(60, 4, "flac", "int16", 320) <= wav16 + 4 * 65536
    mp3 = expected_output_bytes(60, 4, "mp3", "int16", 320)
    assert 60 * 40_000 * 4 <= mp3 <= 60 * 40_000 * 4 + 4 * 65536
    assert expected_output_bytes(60, 2, "mp3", "int16", 128) < mp3 / 4
    assert expected_output_bytes(60, 6, "wav", "int16", 320, sample_rate=48000, channels=1) \
        > expected_output_bytes(60, 3, "wav", "int16", 320)
    with pytest.raises(ValueError):
        expected_output_bytes(60, 4, "ogg", "int16", 320)


def test_space_ok_with_a_low_watermark(tmp_path: Path) -> None:
    assert check_space([tmp_path], needed=1, min_free=0) == SpaceCheck(ok=True, reason="")


def test_watermark_above_free_space_names_the_folder_and_what_to_do(tmp_path: Path) -> None:
    result = check_space([tmp_path], needed=MIB, min_free=_free(tmp_path) + GIB)
    assert not result.ok
    assert str(tmp_path) in result.reason and "free" in result.reason
    assert "maintenance.min_free" in result.reason and "resumes by itself" in result.reason


def test_missing_folder_is_checked_through_its_parent(tmp_path: Path) -> None:
    missing = tmp_path / "outbox" / ".stemd-staging"
    assert existing_parent(missing) == tmp_path
    assert check_space([missing], needed=0, min_free=0).ok
    assert not check_space([missing], needed=0, min_free=_free(tmp_path) + GIB).ok
    assert not missing.exists()


def test_folders_on_one_filesystem_are_counted_once(tmp_path: Path) -> None:
    outbox, cache = tmp_path / "outbox", tmp_path / "cache"
    outbox.mkdir()
    cache.mkdir()
    free = _free(tmp_path)
    # needed + min_free fit once; counting the filesystem twice would not fit
    assert check_space([outbox, cache, outbox / ".stemd-staging"], needed=free // 2,
                       min_free=free // 4).ok
    low = check_space([outbox, cache], needed=0, min_free=free + GIB)
    assert low.reason.count("Low disk space") == 1
    assert str(outbox) in low.reason and str(cache) in low.reason


def test_gate_pauses_dispatch_below_the_watermark_and_resumes(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stemd.output.diskspace")
    gate = SpaceGate()
    assert not gate.paused and gate.reason == ""
    threshold = _free(tmp_path) + GIB                       # set above the free space
    assert not gate.check([tmp_path], needed=MIB, min_free=threshold).ok
    assert gate.paused and str(tmp_path) in gate.reason
    assert not gate.check([tmp_path], needed=MIB, min_free=threshold).ok
    assert gate.check([tmp_path], needed=MIB, min_free=0).ok
    assert not gate.paused and gate.reason == ""
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Dispatch paused" in m for m in messages) == 1     # logged once, not per check
    assert sum("back above the watermark" in m for m in messages) == 1


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="needs posix_fallocate")
def test_gate_resumes_by_itself_when_space_returns(tmp_path: Path) -> None:
    """Real space: a file takes the disk below the watermark; deleting it brings dispatch back."""
    filler = tmp_path / "filler.bin"
    if _free(tmp_path) < 4 * GIB:
        pytest.skip("too little free disk for this test")
    for _ in range(3):                    # other programs may change the free space meanwhile
        gate = SpaceGate()
        watermark = _free(tmp_path) - 256 * MIB
        before = gate.check([tmp_path], needed=0, min_free=watermark).ok
        _fill(filler, 512 * MIB)
        during = gate.check([tmp_path], needed=0, min_free=watermark)
        filler.unlink()
        after = gate.check([tmp_path], needed=0, min_free=watermark).ok
        if before and not during.ok and after:
            assert gate.reason == "" and str(tmp_path) in during.reason
            return
    pytest.fail("the watermark did not follow the free space")


def _fill(path: Path, size: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            pytest.skip("this filesystem cannot preallocate")
        raise
    finally:
        os.close(fd)


def test_usage_counts_files_under_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.wav").write_bytes(b"\0" * 1000)
    (tmp_path / "a" / "b" / "y.wav").write_bytes(b"\0" * 234)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert usage(tmp_path / "a") == 1234
    assert usage(tmp_path / "missing") == 0
