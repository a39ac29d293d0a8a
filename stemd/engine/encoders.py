"""Stem encoders fed chunk by chunk, writing the same files as demucs's ``save_audio``.

Each encoder takes ``[C, n]`` float32 chunks (already clipped) in order and
converts them with demucs's own per-sample functions, so the concatenation is
what the whole-track encoder writes: wav (16/24-bit PCM, float32) with the
header written first (the length is known), flac through an ffmpeg pipe, mp3
through lameenc's incremental encoder.
"""
from __future__ import annotations

import errno
import logging
import struct
import subprocess
from pathlib import Path
from typing import BinaryIO, Optional, Protocol

import numpy as np
import torch

from stemd.errors import DiskFull, EngineError
from stemd.engine.types import OutputFormat

log = logging.getLogger(__name__)


class Encoder(Protocol):
    path: Path

    def write(self, chunk: torch.Tensor) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def open_encoder(path: Path, fmt: OutputFormat, samplerate: int, channels: int,
                 frames: int) -> Encoder:
    path.parent.mkdir(parents=True, exist_ok=True)
    bits = 24 if fmt.wav_depth == "int24" else 16
    if fmt.kind == "wav":
        return WavEncoder(path, samplerate, channels, frames, bits,
                          as_float=fmt.wav_depth == "float32")
    if fmt.kind == "flac":
        return FlacEncoder(path, samplerate, channels, bits)
    return Mp3Encoder(path, samplerate, channels, fmt.mp3_bitrate, fmt.mp3_preset)


class _FileEncoder:
    path: Path
    _file: BinaryIO

    def abort(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self._file.close()
        except OSError:      # a full disk cannot take the buffered rest; the file is gone
            pass


class WavEncoder(_FileEncoder):
    def __init__(self, path: Path, samplerate: int, channels: int, frames: int,
                 bits: int = 16, as_float: bool = False) -> None:
        self.path, self.bits, self.as_float = path, 32 if as_float else bits, as_float
        self.expected, self.frames = frames, 0
        self._file = open(path, "wb")
        self._file.write(_wav_header(samplerate, channels, frames, self.bits, as_float))

    def write(self, chunk: torch.Tensor) -> None:
        from demucs.audio import _pcm_bytes
        if self.as_float:
            data = chunk.clamp(-1, 1).t().cpu().numpy().astype("<f4").tobytes()
        else:
            data = _pcm_bytes(chunk, self.bits)
            if self.bits == 24:
                data = np.frombuffer(data, dtype=np.uint8).reshape(-1, 4)[:, 1:].tobytes()
        self._file.write(data)
        self.frames += chunk.shape[-1]

    def close(self) -> None:
        self._file.close()
        if self.frames != self.expected:
            raise EngineError(f"{self.path.name}: wrote {self.frames} frames, expected "
                              f"{self.expected}.", "This is a bug in stemd; report it.")


def _wav_header(samplerate: int, channels: int, frames: int, bits: int,
                as_float: bool) -> bytes:
    """The header demucs's ``encode_wav`` writes for ``frames`` frames."""
    audio_format = 3 if as_float else 1
    fmt = struct.pack("<HHIIHH", audio_format, channels, samplerate,
                      samplerate * channels * bits // 8, channels * bits // 8, bits)
    chunks = [(b"fmt ", len(fmt), fmt)]
    if as_float:
        chunks.append((b"fact", 4, struct.pack("<I", frames)))
    data_size = frames * channels * bits // 8
    riff_size = 4 + sum(8 + size for _, size, _ in chunks) + 8 + data_size
    head = b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
    for name, size, content in chunks:
        head += name + struct.pack("<I", size) + content
    return head + b"data" + struct.pack("<I", data_size)


class FlacEncoder:
    """demucs's ``encode_ffmpeg`` command, fed through a pipe."""

    def __init__(self, path: Path, samplerate: int, channels: int, bits: int = 16) -> None:
        self.path, self.bits = path, bits
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "s16le" if bits == 16 else "s32le",
               "-ar", str(samplerate), "-ac", str(channels), "-i", "-", str(path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, chunk: torch.Tensor) -> None:
        from demucs.audio import _pcm_bytes
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(_pcm_bytes(chunk, self.bits))
        except BrokenPipeError:
            self._finish()

    def close(self) -> None:
        self._finish()

    def _finish(self) -> None:
        assert self._proc.stdin is not None and self._proc.stderr is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        err = self._proc.stderr.read().decode("utf-8", "replace")
        if self._proc.wait() != 0:
            raise _ffmpeg_error(self.path, err)

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self.path.unlink(missing_ok=True)


def _ffmpeg_error(path: Path, err: str) -> Exception:
    if "No space left" in err:
        return DiskFull(f"The disk filled up while writing {path.name}.",
                        "Free some space; the job will be retried.")
    return EngineError(f"ffmpeg failed to write {path.name}: {err.strip()[-300:]}",
                       "Check that ffmpeg supports this format.")


class Mp3Encoder(_FileEncoder):
    def __init__(self, path: Path, samplerate: int, channels: int, bitrate: int = 320,
                 quality: int = 2) -> None:
        import lameenc
        self.path = path
        self._encoder = lameenc.Encoder()
        self._encoder.set_bit_rate(bitrate)
        self._encoder.set_in_sample_rate(samplerate)
        self._encoder.set_channels(channels)
        self._encoder.set_quality(quality)
        self._file = open(path, "wb")

    def write(self, chunk: torch.Tensor) -> None:
        from demucs.audio import i16_pcm
        pcm = i16_pcm(chunk.clone()).cpu().transpose(0, 1).numpy()
        self._file.write(self._encoder.encode(pcm.tobytes()))

    def close(self) -> None:
        self._file.write(self._encoder.flush())
        self._file.close()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Optional[Path] = None) -> DiskFull:
    where = f" while writing {path.name}" if path else ""
    return DiskFull(f"The disk filled up{where}.",
                    "Free some space in the outbox and state folders; the job will be "
                    "retried.")
