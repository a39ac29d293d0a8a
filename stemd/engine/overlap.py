"""The overlap-add accumulator: a sliding window over the track, never the whole track."""
from __future__ import annotations

import torch


class OverlapAdd:
    """Sums weighted segment outputs ``[K, C, n]`` and releases finished samples in order."""

    def __init__(self, sources: int, channels: int, origin: int) -> None:
        self.origin = origin                   # track coordinate of buffer index 0
        self.buffer = torch.zeros(sources, channels, 1 << 16)

    def add(self, start: int, values: torch.Tensor) -> None:
        end = start + values.shape[-1] - self.origin
        if end > self.buffer.shape[-1]:
            self._grow(end)
        self.buffer[..., start - self.origin: end] += values

    def take(self, upto: int) -> torch.Tensor:
        """Remove and return samples ``[origin, upto)``; the caller knows no segment adds there."""
        count = upto - self.origin
        out = self.buffer[..., :count].clone()
        rest = self.buffer.shape[-1] - count
        self.buffer[..., :rest] = self.buffer[..., count:].clone()
        self.buffer[..., rest:] = 0
        self.origin = upto
        return out

    def _grow(self, needed: int) -> None:
        size = self.buffer.shape[-1]
        while size < needed:
            size *= 2
        bigger = torch.zeros(*self.buffer.shape[:-1], size)
        bigger[..., : self.buffer.shape[-1]] = self.buffer
        self.buffer = bigger
