"""Memory estimates, admission and deadlines, from measured past jobs."""
from __future__ import annotations

from stemd.dispatch.admission import Budget, admit, deadline_seconds, estimate_peak, speed

GIB = 1 << 30


def test_estimate_is_the_prior_until_a_job_was_measured() -> None:
    assert estimate_peak([], 300.0, 2 * GIB) == 2 * GIB


def test_estimate_follows_measured_peaks_with_headroom() -> None:
    flat = [{"audio_seconds": s, "peak_rss": GIB} for s in (60, 60, 60)]
    assert estimate_peak(flat, 600.0, 5 * GIB) == int(GIB * 1.25)
    growing = [{"audio_seconds": 60, "peak_rss": GIB}, {"audio_seconds": 120, "peak_rss": 2 * GIB}]
    assert estimate_peak(growing, 240.0, 5 * GIB) == int(4 * GIB * 1.25)   # the fitted line


def test_admit_waits_fails_or_starts() -> None:
    budget = Budget(reserve=GIB, cap=0, floor=0)
    assert admit(GIB, 0, budget, available=4 * GIB, total=8 * GIB).ok
    waiting = admit(4 * GIB, 0, budget, available=4 * GIB, total=8 * GIB)
    assert not waiting.ok and not waiting.never and "waiting for memory" in waiting.reason
    never = admit(9 * GIB, 0, budget, available=4 * GIB, total=8 * GIB)
    assert never.never and "workers.memory_budget" in never.reason
    capped = Budget(reserve=0, cap=3 * GIB, floor=0)
    assert not admit(2 * GIB, 2 * GIB, capped, available=8 * GIB, total=8 * GIB).ok
    floored = Budget(reserve=0, cap=0, floor=6 * GIB)
    assert "memory_floor" in admit(GIB, 0, floored, available=4 * GIB, total=8 * GIB).reason


def test_deadline_from_length_and_measured_speed() -> None:
    measured = [{"audio_seconds": 60, "wall_seconds": w} for w in (30, 60, 90)]
    assert speed(measured, "cpu") == 1.0                              # the median
    assert deadline_seconds(300, 1.0, 1, fixed=0, cap=10_000) == 120 + 4 * 300
    assert deadline_seconds(300, 1.0, 2, fixed=0, cap=1000) == 1000   # capped
    assert deadline_seconds(300, 1.0, 1, fixed=50, cap=1000) == 50    # workers.job_timeout
