"""julius's ``resample_frac``, computed block by block with the same result as whole-track.

julius pads the signal by replicating its edge samples and runs a strided
``conv1d``: output block ``i`` (``new_sr`` samples) reads input samples
``i*old_sr - width`` .. ``(i+1)*old_sr + width - 1``. Feeding each group of blocks
exactly that span (edge-replicated at the track's ends only) gives the same values.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

ReadFn = Callable[[int, int], np.ndarray]      # (start, stop) -> [C, stop - start]
BLOCK_INPUT = 1 << 17                            # input samples per conv call, about


class ChunkedResampler:
    def __init__(self, old_sr: int, new_sr: int) -> None:
        import julius
        self._resample = julius.ResampleFrac(old_sr, new_sr)
        self.old = self._resample.old_sr
        self.new = self._resample.new_sr
        self.width: int = self._resample._width
        self.kernel: torch.Tensor = self._resample.kernel

    def output_length(self, length: int) -> int:
        return int(math.floor(self.new * length / self.old))

    def chunks(self, read: ReadFn, length: int) -> Iterator[np.ndarray]:
        """Resampled audio, ``[C, n]`` float32 chunks in order, from ``read`` of ``length``."""
        total = self.output_length(length)
        blocks = -(-total // self.new)
        step = max(1, BLOCK_INPUT // self.old)
        for first in range(0, blocks, step):
            last = min(blocks, first + step)
            out = self._blocks(read, length, first, last)
            yield out[:, : min(total, last * self.new) - first * self.new]

    def _blocks(self, read: ReadFn, length: int, first: int, last: int) -> np.ndarray:
        start, stop = first * self.old - self.width, last * self.old + self.width
        span = _edge_read(read, length, start, stop)
        x = torch.from_numpy(span)[:, None]
        ys = F.conv1d(x, self.kernel, stride=self.old)
        return ys.transpose(1, 2).reshape(span.shape[0], -1).numpy()


def _edge_read(read: ReadFn, length: int, start: int, stop: int) -> np.ndarray:
    lo, hi = max(0, start), min(length, stop)
    data = read(lo, hi)
    return np.pad(data, ((0, 0), (lo - start, stop - hi)), mode="edge")
