"""Decode an input into a raw float32 file at the model's rate, in bounded memory.

What demucs does to a whole track in memory (decode, ``convert_audio_channels``,
``julius.resample_frac``, then mean/std of the mono mix for normalization) is done
here chunk by chunk: ffmpeg streams the decoded samples, channels are converted on
the fly, the resampler works block by block, and the statistics are summed in
float64. The result lives in ``workdir`` as interleaved ``[frames, channels]`` f32.
"""
from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from stemd.errors import InputError
from stemd.engine.rawfile import RawReader, RawWriter
from stemd.engine.resample import ChunkedResampler
from stemd.engine.types import AudioInfo

log = logging.getLogger(__name__)

READ_FRAMES = 1 << 16
CUT_OFF_SECONDS = 0.25     # decoded audio may fall short of the stated duration by this much
CUT_OFF_SHARE = 0.005      # ... or by this share of it (codec padding, rounding), whichever is more


@dataclass(frozen=True)
class PreparedMix:
    path: Path
    frames: int
    channels: int
    samplerate: int
    mean: float
    std: float
    info: AudioInfo
    seconds: float                             # time spent decoding


def prepare_mix(input: Path, info: AudioInfo, samplerate: int, channels: int,
                workdir: Path) -> PreparedMix:
    """Decode ``input`` to ``workdir/mix.f32`` at ``samplerate`` with ``channels``."""
    began = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    mix_path = workdir / "mix.f32"
    if info.sample_rate == samplerate:
        stats = _write(mix_path, channels, _decode(input, info, channels))
    else:
        native = workdir / "native.f32"
        _write(native, channels, _decode(input, info, channels))
        stats = _write(mix_path, channels, _resampled(native, channels, info, samplerate))
        native.unlink()
    frames, mean, std = stats.result()
    if frames == 0:
        raise InputError(f"{input.name} decoded to no audio at all.",
                         "Re-export the track; it holds no samples ffmpeg can decode.")
    check_complete(input, info.duration, frames / samplerate)
    return PreparedMix(mix_path, frames, channels, samplerate, mean, std, info,
                       time.perf_counter() - began)


def check_complete(input: Path, stated: float, decoded: float) -> None:
    """A file whose audio stops well before the duration its header states was cut off
    (a copy, sync or download that had not finished): for every format, not only WAV."""
    if stated - decoded > max(CUT_OFF_SECONDS, CUT_OFF_SHARE * stated):
        raise InputError(f"{input.name} looks cut off: its header says {stated:.2f} s but only "
                         f"{decoded:.2f} s of audio could be decoded.",
                         "The copy or download had probably not finished: let it finish, "
                         "then deliver the file again.")


def _decode(input: Path, info: AudioInfo, channels: int) -> Iterator[np.ndarray]:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(input), "-map", "0:a:0",
           "-f", "f32le", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    frame_bytes = 4 * info.channels
    pending = b""
    try:
        while data := proc.stdout.read(READ_FRAMES * frame_bytes):
            data, pending = _split_frames(pending + data, frame_bytes)
            if data:
                yield convert_channels(np.frombuffer(data, "<f4").reshape(-1, info.channels).T,
                                       channels)
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        rc = proc.wait()
    if rc != 0:
        reason = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["unknown"]
        raise InputError(f"{input.name} could not be decoded ({reason[0]}).",
                         "The file may be damaged or truncated; re-export or copy it again.")


def _split_frames(data: bytes, frame_bytes: int) -> tuple[bytes, bytes]:
    whole = len(data) - len(data) % frame_bytes
    return data[:whole], data[whole:]


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """demucs's ``convert_audio_channels`` for ``[C, T]`` arrays (model has 1 or 2 channels)."""
    src = wav.shape[0]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=0, keepdims=True, dtype=np.float32)
    if src == 1:
        return np.broadcast_to(wav, (channels, wav.shape[1]))
    if src > channels:
        return wav[:channels]
    raise InputError(f"The audio has {src} channels but the model needs {channels}.",
                     "Convert the file to mono or stereo.")


def _resampled(native: Path, channels: int, info: AudioInfo,
               samplerate: int) -> Iterator[np.ndarray]:
    reader = RawReader(native, channels)
    with reader:
        resampler = ChunkedResampler(info.sample_rate, samplerate)
        yield from resampler.chunks(reader.read, reader.frames)


def _write(path: Path, channels: int, chunks: Iterator[np.ndarray]) -> "MixStats":
    stats = MixStats()
    with RawWriter(path, channels) as writer:
        for chunk in chunks:
            writer.write(chunk)
            stats.add(chunk)
    return stats


class MixStats:
    """Mean and standard deviation (unbiased) of the channel-averaged signal (Chan's merge)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, chunk: np.ndarray) -> None:
        ref = chunk.astype(np.float64).mean(axis=0)
        n = ref.size
        if n == 0:
            return
        mean = float(ref.mean())
        m2 = float(((ref - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def result(self) -> tuple[int, float, float]:
        var = self.m2 / (self.count - 1) if self.count > 1 else float("nan")
        return self.count, self.mean, float(np.sqrt(var)) + 1e-8
