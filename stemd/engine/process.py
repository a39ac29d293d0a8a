"""Process-wide tuning for a worker that runs separations.

Two settings, both measured on the full-size htdemucs on 2 cores (docs/benchmarks.md):

* Self-attention goes through torch's scaled-dot-product attention instead of the
  "native MHA fast path", which materialises the whole attention matrix (the freq
  branch has thousands of tokens): 3.67 s -> 3.19 s per 7.8 s segment, output equal
  to 143 dB SDR.
* The allocator is chosen before the process starts (``stemd.worker.allocator``: tcmalloc when
  installed). Under glibc the dynamic mmap threshold is left alone, which is glibc's
  fastest (pinning it low made every large activation a fresh mmap: 2.8 s -> 5.4 s per
  segment). Either way ``trim_heap`` hands freed memory back to the system after each
  job, so a long-lived worker does not keep a high-water mark.
"""
from __future__ import annotations

import ctypes
import logging
import sys
from typing import Optional

log = logging.getLogger(__name__)

_libc: Optional[ctypes.CDLL] = None
_tuned = False


def tune_process() -> None:
    """Settings for a process that runs separations (once per process)."""
    global _tuned
    if _tuned:
        return
    import torch
    mha = getattr(torch.backends, "mha", None)
    if mha is not None and hasattr(mha, "set_fastpath_enabled"):
        mha.set_fastpath_enabled(False)
    _tuned = True


def trim_heap() -> bool:
    """Return freed heap memory to the system: tcmalloc's release or jemalloc's purge when
    one is the allocator (``workers.allocator``), glibc's ``malloc_trim`` otherwise."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        release = getattr(_libc, "MallocExtension_ReleaseFreeMemory", None)
        if release is not None:
            release()
            return True
        mallctl = getattr(_libc, "mallctl", None)
        if mallctl is not None:   # jemalloc: purge every arena (MALLCTL_ARENAS_ALL = 4096)
            return mallctl(b"arena.4096.purge", None, None, None, 0) == 0
        return bool(_libc.malloc_trim(0))
    except (OSError, AttributeError) as exc:
        log.debug("no way to trim the heap: %s", exc)
        return False
