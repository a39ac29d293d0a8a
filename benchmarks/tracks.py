"""Synthesized benchmark tracks: tones, noise and a beat, written as 16-bit stereo wav."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

RATE = 44100
BLOCK = RATE * 10


def write_track(path: Path, seconds: float, seed: int = 0) -> Path:
    """A ``seconds`` long stereo wav, written block by block (any length, little memory)."""
    frames = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        out.write(_header(frames))
        for start in range(0, frames, BLOCK):
            out.write(_block(start, min(frames, start + BLOCK), rng).tobytes())
    return path


def _header(frames: int) -> bytes:
    data = frames * 4
    fmt = struct.pack("<HHIIHH", 1, 2, RATE, RATE * 4, 4, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", data))


def _block(start: int, stop: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(start, stop) / RATE
    bass = 0.25 * np.sin(2 * np.pi * 55 * t)
    lead = 0.15 * np.sin(2 * np.pi * (440 + 20 * np.sin(2 * np.pi * 0.2 * t)) * t)
    beat = 0.3 * np.exp(-40 * (t % 0.5)) * rng.standard_normal(t.size)
    left = bass + lead + beat + 0.02 * rng.standard_normal(t.size)
    right = bass + 0.8 * lead + beat + 0.02 * rng.standard_normal(t.size)
    frames = np.stack([left, right], axis=1)
    return (np.clip(frames, -1, 1) * 32767).astype("<i2")
