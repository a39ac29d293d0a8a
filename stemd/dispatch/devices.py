"""Which devices and how many slots: GPUs are counted in a subprocess so the
supervisor never imports torch (it stays small when idle)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import psutil

from stemd.config import WorkersConfig

log = logging.getLogger(__name__)

_PROBE = ("import json, torch; mps = getattr(torch.backends, 'mps', None); "
          "print(json.dumps({'cuda': torch.cuda.device_count() if torch.cuda.is_available() else 0, "
          "'mps': bool(mps and mps.is_available()), 'torch': torch.__version__}))")


@dataclass(frozen=True)
class SlotPlan:
    gpus: list[str]
    cpu_slots: int
    threads: int


def detect_accelerators(timeout: float = 120.0) -> dict[str, object]:
    """``{"cuda": n, "mps": bool, "torch": version}`` from a short-lived subprocess."""
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as exc:
        log.warning("could not check for GPUs (%s); using the CPU only", exc)
        return {"cuda": 0, "mps": False, "torch": None}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def plan_slots(workers: WorkersConfig, accel: dict[str, object] | None = None) -> SlotPlan:
    """GPU slots (one per visible device) and CPU slots with explicit thread counts."""
    gpus: list[str] = []
    if workers.gpu != 0:
        accel = accel if accel is not None else detect_accelerators()
        count = int(accel.get("cuda", 0) or 0)  # type: ignore[arg-type]
        if workers.gpu != "auto":
            count = min(count, int(workers.gpu))
        gpus = [f"cuda:{i}" for i in range(count)]
        if not gpus and accel.get("mps"):
            gpus = ["mps"]
    n_cores = cores()
    cpu_slots = _cpu_slots(workers, n_cores, has_gpu=bool(gpus))
    threads = workers.threads or max(1, n_cores // max(cpu_slots, 1))
    return SlotPlan(gpus, cpu_slots, threads)


def _cpu_slots(workers: WorkersConfig, n_cores: int, has_gpu: bool) -> int:
    if workers.cpu != "auto":
        return int(workers.cpu)
    if has_gpu:
        return 0 if n_cores < 8 else 1   # the GPU does the work; keep cores for decoding
    by_memory = (psutil.virtual_memory().total - workers.memory_reserve) // max(workers.memory_estimate, 1)
    # Measured on 2-8 cores: one process using every core beats several small ones
    # (docs/benchmarks.md); more slots only pay off past 8 cores.
    by_cores = max(1, n_cores // 8)
    return int(max(1, min(by_cores, by_memory)))
