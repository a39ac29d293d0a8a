"""Synthesize short test tracks and write them in any format ffmpeg knows."""
from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np


def synth(seconds: float, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A little 'song': a bass line, a melody, noise bursts for drums. Shape (frames, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    bass = 0.3 * np.sin(2 * np.pi * 55 * t)
    melody = 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.01 * np.sin(2 * np.pi * 0.5 * t)))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.normal(0, 0.3, t.size)
    mono = bass + melody + beat
    out = np.stack([mono * (1 - 0.2 * c) + 0.01 * rng.normal(size=t.size)
                    for c in range(channels)], axis=1)
    return np.clip(out, -1, 1).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, sample_rate: int) -> Path:
    pcm = (np.clip(data, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(data.shape[1])
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return path


def make_track(path: Path, seconds: float = 3.0, sample_rate: int = 44100, channels: int = 2,
               seed: int = 0) -> Path:
    """Write a synthesized track; the format follows the extension (wav, flac, mp3, ogg, m4a...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = synth(seconds, sample_rate, channels, seed)
    if path.suffix.lower() == ".wav":
        return write_wav(path, data, sample_rate)
    tmp = path.with_name(f".tmp-{path.stem}.wav")
    write_wav(tmp, data, sample_rate)
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(tmp), str(path)], check=True)
    tmp.unlink()
    return path


def info(path: Path) -> dict:
    """Sample rate, channels and frames of an audio file, read by ffprobe."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-count_packets",
                          "-show_entries", "stream=sample_rate,channels,duration_ts,duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    return {"sample_rate": int(stream["sample_rate"]), "channels": int(stream["channels"]),
            "duration": float(stream.get("duration", 0) or 0)}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as handle:
        frames = handle.readframes(handle.getnframes())
        data = np.frombuffer(frames, dtype="<i2").reshape(-1, handle.getnchannels())
        return data.astype(np.float32) / 32767, handle.getframerate()
