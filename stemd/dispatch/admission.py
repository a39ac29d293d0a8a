"""Memory admission and deadlines: decide whether a job may start, and for how long."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import psutil

from stemd.units import format_size

SAFETY = 1.25              # headroom over the calibrated peak
DEADLINE_FACTOR = 4.0      # times the expected run time
DEADLINE_BASE = 120.0      # seconds for start-up and model loading
PRIOR_SPEED = {"cpu": 1.5, "gpu": 0.1, "mps": 0.5}   # wall seconds per audio second, before measurements


@dataclass(frozen=True)
class Budget:
    reserve: int           # bytes kept free for the rest of the machine
    cap: int               # bytes stemd's jobs may use together; 0 = no cap
    floor: int = 0         # below this much available memory nothing starts


@dataclass(frozen=True)
class Admission:
    ok: bool
    never: bool
    reason: str


def estimate_peak(measurements: Sequence[dict[str, Any]], duration: float, prior: int) -> int:
    """Peak RSS of a job: a line fitted to past peaks of this model and device, or the prior."""
    points = [(m["audio_seconds"], m["peak_rss"]) for m in measurements if m.get("peak_rss")]
    if not points:
        return prior
    slope = _slope(points)
    if slope == 0.0:
        return int(max(y for _, y in points) * SAFETY)
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return int((mean_y + slope * (duration - mean_x)) * SAFETY)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    xs = [x for x, _ in points]
    if len(set(round(x) for x in xs)) < 2:
        return 0.0
    mean_x = sum(xs) / len(xs)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x in xs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return max(0.0, cov / var)


def admit(estimate: int, committed: int, budget: Budget,
          available: Optional[int] = None, total: Optional[int] = None) -> Admission:
    """May a job needing ``estimate`` bytes start while ``committed`` bytes are promised?"""
    memory = psutil.virtual_memory()
    available = memory.available if available is None else available
    total = memory.total if total is None else total
    ceiling = total - budget.reserve
    if budget.cap:
        ceiling = min(ceiling, budget.cap)
    if estimate > ceiling:
        return Admission(False, True, _never_reason(estimate, ceiling, budget))
    if available < budget.floor:
        return Admission(False, False, f"waiting for memory: {format_size(available)} available, "
                                       f"below workers.memory_floor ({format_size(budget.floor)})")
    room = available - budget.reserve
    if budget.cap:
        room = min(room, budget.cap - committed)
    if estimate > room:
        return Admission(False, False, f"waiting for memory: needs {format_size(estimate)}, "
                                       f"{format_size(max(room, 0))} free for stemd")
    return Admission(True, False, "")


def _never_reason(estimate: int, ceiling: int, budget: Budget) -> str:
    return (f"This job needs about {format_size(estimate)} of memory but stemd may use at most "
            f"{format_size(max(ceiling, 0))} (workers.memory_budget / workers.memory_reserve). "
            "Raise workers.memory_budget, lower workers.memory_reserve, use a smaller model or "
            "shorter input, or run it on a machine with more memory.")


def admit_vram(estimate: int, free_vram: Optional[int]) -> Admission:
    if free_vram is None or estimate <= free_vram:
        return Admission(True, False, "")
    return Admission(False, False, f"waiting for GPU memory: needs {format_size(estimate)}, "
                                   f"{format_size(free_vram)} free")


def speed(measurements: Sequence[dict[str, Any]], kind: str) -> float:
    """Wall seconds per second of audio, from past jobs (median) or the prior."""
    ratios = sorted(m["wall_seconds"] / m["audio_seconds"] for m in measurements
                    if m.get("audio_seconds"))
    if not ratios:
        return PRIOR_SPEED.get(kind, 1.5)
    return ratios[len(ratios) // 2]


def deadline_seconds(duration: float, seconds_per_second: float, shifts: int,
                     fixed: float, cap: float) -> float:
    """How long a job may run: the configured timeout, else from its length and slot speed."""
    if fixed > 0:
        return min(fixed, cap)
    expected = duration * seconds_per_second * max(1, shifts)
    return min(DEADLINE_BASE + DEADLINE_FACTOR * expected, cap)
