"""Streaming separation: batches of segments in, finished samples out, in track order.

Each member's segments (all shifts merged) wait in a queue sorted by start. The
loop runs a batch from the member whose next segment starts earliest, adds the
weighted outputs to the sliding ``OverlapAdd`` window, and hands every sample
before the earliest segment not yet added to ``emit``: no later segment can
touch it. Memory is bounded by the window (a few segments), not the track.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from stemd.errors import InvalidOption
from stemd.engine import plan as planning
from stemd.engine.device import Pending, Runner, is_out_of_memory
from stemd.engine.models import LoadedModel
from stemd.engine.overlap import OverlapAdd
from stemd.engine.rawfile import RawReader

log = logging.getLogger(__name__)

EmitFn = Callable[[int, torch.Tensor], None]   # (track start, [K, C, n] normalized stems)
TickFn = Callable[[float], None]               # fraction of segments done


@dataclass
class StreamPlan:
    needed: list[int]                           # source indices accumulated
    queues: dict[int, deque[planning.Segment]]  # active member -> its segments by start
    factors: dict[int, torch.Tensor]            # member -> [K] weight / total / shifts
    frames: int
    origin: int
    total: int = 0
    in_flight: list[list[planning.Segment]] = field(default_factory=list)

    def next_member(self) -> Optional[int]:
        ready = [m for m, q in self.queues.items() if q]
        return min(ready, key=lambda m: self.queues[m][0].start) if ready else None

    def frontier(self) -> int:
        heads = [q[0].start for q in self.queues.values() if q]
        heads += [segs[0].start for segs in self.in_flight if segs]
        return min([self.frames, *heads])


def build_plan(loaded: LoadedModel, frames: int, needed: Sequence[int], shifts: int,
               overlap: float, segment: Optional[float]) -> StreamPlan:
    """Lay out every segment apply_model would run for the members that matter."""
    weights = loaded.weights
    totals = [sum(row[k] for row in weights) for k in range(len(loaded.sources))]
    bases = planning.draw_bases(len(loaded.members), shifts, loaded.samplerate)
    active = planning.needed_members(weights, needed)
    queues, factors = {}, {}
    for m in active:
        queues[m] = deque(_member_segments(loaded.members[m], m, bases[m], frames,
                                           overlap, segment))
        factors[m] = torch.tensor([weights[m][k] / totals[k] / max(shifts, 1)
                                   for k in needed], dtype=torch.float32)
    origin = min([0, *(q[0].start for q in queues.values() if q)])
    total = sum(len(q) for q in queues.values())
    return StreamPlan(list(needed), queues, factors, frames, origin, total)


def _member_segments(model: Any, member: int, bases: Sequence[int], frames: int,
                     overlap: float, segment: Optional[float]) -> list[planning.Segment]:
    seconds = segment if segment is not None else model.segment
    segment_length = int(model.samplerate * seconds)
    if segment_length <= 0 or int((1 - overlap) * segment_length) <= 0:
        raise InvalidOption(f"Segment {seconds} s with overlap {overlap} leaves no stride.",
                            "Use a longer segment or an overlap below 1.")
    tri = planning.triangle(segment_length)
    valid = planning.valid_length_fn(model, segment)
    segments = []
    for one in planning.passes_for(member, bases, segment_length, overlap, frames):
        segments += planning.segments_of(one, valid, tri)
    return sorted(segments, key=lambda s: s.start)


class MixWindows:
    """Normalized model inputs read from the prepared mix, zeros outside the track."""

    def __init__(self, reader: RawReader, mean: float, std: float) -> None:
        self.reader = reader
        self.mean, self.std = np.float32(mean), np.float32(std)

    def window(self, seg: planning.Segment) -> np.ndarray:
        start = seg.start - (seg.window - seg.length) // 2
        out = np.zeros((self.reader.channels, seg.window), dtype=np.float32)
        lo, hi = max(0, start), min(self.reader.frames, start + seg.window)
        if hi > lo:
            out[:, lo - start: hi - start] = (self.reader.read(lo, hi) - self.mean) / self.std
        return out

    def batch(self, segs: Sequence[planning.Segment]) -> np.ndarray:
        return np.stack([self.window(s) for s in segs])


class StreamRunner:
    """Drives one track's plan through the model; see the module docstring."""

    def __init__(self, loaded: LoadedModel, runner: Runner, windows: MixWindows,
                 batch_size: int, depth: int = 1) -> None:
        self.loaded, self.runner, self.windows = loaded, runner, windows
        self.batch_size, self.depth = batch_size, depth
        self.members_run: set[int] = set()

    def run(self, plan: StreamPlan, emit: EmitFn, tick: TickFn) -> None:
        acc = OverlapAdd(len(plan.needed), self.loaded.audio_channels, plan.origin)
        inflight: deque[tuple[list[planning.Segment], Pending, int]] = deque()
        done, emitted = 0, 0
        while plan.next_member() is not None or inflight:
            if plan.next_member() is not None and len(inflight) < self.depth:
                submitted = self._submit(plan)
                if submitted is not None:
                    inflight.append(submitted)
                continue
            segs, pending, member = inflight.popleft()
            self._accumulate(acc, plan, segs, pending.result(), member)
            plan.in_flight.pop(0)
            done += len(segs)
            emitted = self._release(acc, plan, emitted, emit)
            tick(done / max(1, plan.total))

    def _submit(self, plan: StreamPlan) -> Optional[tuple[list[planning.Segment], Pending, int]]:
        member = plan.next_member()
        assert member is not None
        segs = _take(plan.queues[member], self.batch_size)
        try:
            pending = self.runner.submit(self.loaded.forward(member), self.windows.batch(segs))
        except Exception as exc:
            if not (is_out_of_memory(exc) and self.batch_size > 1):
                raise
            self._shrink(plan.queues[member], segs)
            return None
        self.members_run.add(member)
        plan.in_flight.append(segs)
        return segs, pending, member

    def _shrink(self, queue: deque[planning.Segment], segs: list[planning.Segment]) -> None:
        queue.extendleft(reversed(segs))
        self.batch_size = max(1, self.batch_size // 2)
        log.warning("out of memory: batch size lowered to %d", self.batch_size)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _accumulate(self, acc: OverlapAdd, plan: StreamPlan, segs: list[planning.Segment],
                    out: torch.Tensor, member: int) -> None:
        factor = plan.factors[member][:, None, None]
        for seg, item in zip(segs, out):
            trim = (item.shape[-1] - seg.length) // 2
            kept = item[plan.needed, :, trim: trim + seg.length]
            acc.add(seg.start, kept * seg.weight() * factor)

    def _release(self, acc: OverlapAdd, plan: StreamPlan, emitted: int, emit: EmitFn) -> int:
        upto = plan.frontier()
        if upto <= emitted:
            return emitted
        if acc.origin < 0:
            acc.take(0)
        emit(emitted, acc.take(upto))
        return upto


def _take(queue: deque[planning.Segment], count: int) -> list[planning.Segment]:
    first = queue.popleft()
    segs = [first]
    while queue and len(segs) < count and queue[0].window == first.window:
        segs.append(queue.popleft())
    return segs
