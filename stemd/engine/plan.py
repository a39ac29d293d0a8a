"""The segments ``demucs.apply.apply_model`` would run, laid out in advance.

For each bag member and each shift, apply_model splits the (shifted) track into
segments of ``segment_length`` every ``stride`` samples, runs each on a centred,
zero-padded window of ``valid_length`` samples, and averages the overlapping
outputs with a triangular weight. Here every such segment becomes a ``Segment``
in track coordinates, whose final per-sample weight is the triangle divided
by the total weight of its own pass at each sample, so the passes can share one
accumulator. Random shift offsets are drawn from ``random`` in apply_model's order
(member by member, shift by shift), so a seeded run matches it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

ValidLength = Callable[[int], int]


@dataclass(frozen=True)
class Pass:
    member: int
    base: int                                  # start of the pass's first segment
    segment_length: int
    stride: int
    length: int                                # track frames

    def starts(self) -> range:
        return range(self.base, self.length, self.stride)


@dataclass(frozen=True, eq=False)
class Segment:
    start: int                                 # track coordinate of output sample 0
    length: int                                # output samples kept (center-trimmed)
    window: int                                # model input length (valid_length)
    owner: Pass                                # shared by the pass's segments (its member)
    tri: torch.Tensor                          # the pass's triangle, shared

    def weight(self) -> torch.Tensor:
        """``[length]`` overlap-add weight, normalized by the pass's total weight.

        Computed when needed, not stored: a plan holds every segment of the track and a
        weight is as long as a segment (1.4 MB for htdemucs)."""
        den = _pass_weight(self.owner, self.tri, self.start, self.start + self.length)
        return self.tri[:self.length] / den


def triangle(segment_length: int, transition_power: float = 1.0) -> torch.Tensor:
    weight = torch.cat([torch.arange(1, segment_length // 2 + 1),
                        torch.arange(segment_length - segment_length // 2, 0, -1)])
    return (weight / weight.max()) ** transition_power


def needed_members(weights: Sequence[Sequence[float]], needed: Sequence[int]) -> list[int]:
    """Members whose weight for at least one needed source is not zero."""
    return [m for m, row in enumerate(weights) if any(row[k] != 0 for k in needed)]


def draw_bases(members: int, shifts: int, samplerate: int) -> list[list[int]]:
    """Per member, per shift: the start of the first segment (apply_model's draw order)."""
    if shifts <= 0:
        return [[0] for _ in range(members)]
    max_shift = int(0.5 * samplerate)
    return [[random.randint(0, max_shift) - max_shift for _ in range(shifts)]
            for _ in range(members)]


def passes_for(member: int, bases: Sequence[int], segment_length: int, overlap: float,
               length: int) -> list[Pass]:
    stride = int((1 - overlap) * segment_length)
    return [Pass(member, base, segment_length, stride, length) for base in bases]


def segments_of(one: Pass, valid_length: ValidLength, tri: torch.Tensor) -> list[Segment]:
    """The pass's segments in order (each computes its normalized weight when asked)."""
    out = []
    for start in one.starts():
        n = min(one.segment_length, one.length - start)
        out.append(Segment(start, n, valid_length(n), one, tri))
    return out


def _pass_weight(one: Pass, tri: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Sum of the pass's triangle weights over ``[lo, hi)`` (apply_model's sum_weight)."""
    total = torch.zeros(hi - lo, dtype=tri.dtype)
    first = max(0, (lo - one.base - one.segment_length) // one.stride)
    for start in one.starts()[first:]:
        if start >= hi:
            break
        n = min(one.segment_length, one.length - start)
        a, b = max(lo, start), min(hi, start + n)
        if b > a:
            total[a - lo: b - lo] += tri[a - start: b - start]
    return total


def valid_length_fn(model: Any, segment: Optional[float]) -> ValidLength:
    """apply_model's model input length for a chunk of ``n`` samples."""
    from demucs.htdemucs import HTDemucs
    if isinstance(model, HTDemucs) and segment is not None:
        fixed = int(segment * model.samplerate)
        return lambda n: fixed
    if hasattr(model, "valid_length"):
        return lambda n: int(model.valid_length(n))
    return lambda n: n
