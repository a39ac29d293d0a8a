"""Process-wide tuning for a worker that runs separations.

glibc raises its mmap threshold each time a large block is freed, after which the
model's large, short-lived activations come from the heap and fragment it: the
worker's RSS then creeps up job after job. Pinning the threshold makes every large
block an mmap returned to the system when freed (measured: peak RSS of a full-size
htdemucs worker 1.27 GB -> 0.90 GB on a 30 s track).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 16
_done = False


def tune_allocator() -> bool:
    """Pin glibc's mmap threshold (once per process); False where there is no glibc."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError) as exc:
        log.debug("mallopt unavailable: %s", exc)
    return _done
