"""probe: audio facts for good files, a plain-words InputError for every bad one."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from stemd.engine import probe
from stemd.errors import InputError

from .audio import write_wav


def test_good_wav(make_wav: Callable[..., Path]) -> None:
    info = probe(make_wav(1.5, rate=48000, channels=1))
    assert (info.sample_rate, info.channels) == (48000, 1)
    assert info.duration == pytest.approx(1.5, abs=0.01)
    assert info.codec == "pcm_s16le" and "wav" in info.container


def test_good_mp3(make_wav: Callable[..., Path], tmp_path: Path) -> None:
    mp3 = tmp_path / "t.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(make_wav(1.0)), str(mp3)], check=True)
    assert probe(mp3).codec == "mp3"


def _bad(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,data,reason", [
    ("empty.wav", b"", "empty"),
    ("notes.mp3", b"just some text, not music\n" * 40, "not an audio file|no audio"),
    ("noise.flac", np.random.default_rng(0).bytes(5000), "not an audio file|no audio"),
])
def test_unusable_bytes(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    with pytest.raises(InputError, match=reason) as caught:
        probe(_bad(tmp_path, name, data))
    assert caught.value.hint


def test_absurd_rate_and_channels(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sample rate"):
        probe(write_wav(tmp_path / "low.wav", np.zeros((1, 4000), np.float32), 4000))
    with pytest.raises(InputError, match="channel count"):
        probe(write_wav(tmp_path / "many.wav", np.zeros((40, 100), np.float32), 44100))


def test_zero_duration(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="zero duration|no audio|decoded"):
        probe(write_wav(tmp_path / "zero.wav", np.zeros((2, 0), np.float32), 44100))


def test_truncated(make_wav: Callable[..., Path], tmp_path: Path) -> None:
    flac = tmp_path / "t.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(make_wav(20.0)), str(flac)], check=True)
    data = flac.read_bytes()
    for size in (2000, len(data) // 2):
        with pytest.raises(InputError, match="truncated"):
            probe(_bad(tmp_path, f"cut{size}.flac", data[:size]))


def test_no_audio_stream(tmp_path: Path) -> None:
    image = tmp_path / "cover.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=8x8",
                    "-frames:v", "1", "-f", "image2", "-c:v", "png", str(image)], check=True)
    with pytest.raises(InputError, match="no audio stream|not an audio file"):
        probe(image)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(make_wav: Callable[..., Path]) -> None:
    path = make_wav(1.0)
    path.chmod(0)
    with pytest.raises(InputError, match="permission"):
        probe(path)
