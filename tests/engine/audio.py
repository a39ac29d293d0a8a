"""Small audio helpers of the engine tests (numpy only)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_wav(path: Path, wav: np.ndarray, rate: int) -> Path:
    """16-bit PCM wav from ``[C, T]`` floats in [-1, 1]."""
    channels = wav.shape[0]
    data = (np.clip(wav, -1, 1).T * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + \
        struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def read_wav(path: Path) -> np.ndarray:
    """``[C, T]`` float32 from a wav written by stemd or demucs (PCM16/24 or float32)."""
    raw = path.read_bytes()
    pos, fmt, data = 12, None, b""
    while pos < len(raw):
        name, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8: pos + 8 + size]
        if name == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif name == b"data":
            data = body
        pos += 8 + size
    assert fmt is not None
    kind, channels, _, _, _, bits = fmt
    if kind == 3:
        frames = np.frombuffer(data, "<f4")
    elif bits == 16:
        frames = np.frombuffer(data, "<i2") / 32767.0
    else:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3)
        ints = (b[:, 0].astype(np.int32) << 8 | b[:, 1].astype(np.int32) << 16
                | b[:, 2].astype(np.int32) << 24) >> 8
        frames = ints / (2 ** 23 - 1)
    return frames.reshape(-1, channels).T.astype(np.float32)


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))
