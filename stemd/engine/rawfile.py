"""Raw interleaved float32 audio files in the work folder, read and written by chunks."""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Optional

import numpy as np


class RawWriter:
    """Append ``[C, n]`` float32 chunks to ``path`` as interleaved frames."""

    def __init__(self, path: Path, channels: int) -> None:
        self.path = path
        self.channels = channels
        self.frames = 0
        self._file: BinaryIO = open(path, "wb")

    def write(self, chunk: np.ndarray) -> None:
        assert chunk.shape[0] == self.channels
        self._file.write(np.ascontiguousarray(chunk.T, dtype="<f4").tobytes())
        self.frames += chunk.shape[1]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RawWriter":
        return self

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


class RawReader:
    """Random access to ``[C, n]`` spans of a raw file; zeros outside the audio."""

    def __init__(self, path: Path, channels: int) -> None:
        self.channels = channels
        self.frames = os.path.getsize(path) // (4 * channels)
        self._file: BinaryIO = open(path, "rb")

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((self.channels, stop - start), dtype=np.float32)
        lo, hi = max(0, start), min(self.frames, stop)
        if hi > lo:
            self._file.seek(lo * 4 * self.channels)
            data = np.fromfile(self._file, dtype="<f4", count=(hi - lo) * self.channels)
            out[:, lo - start: hi - start] = data.reshape(-1, self.channels).T
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RawReader":
        return self

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
