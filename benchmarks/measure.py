"""Run a command as a child process; report its wall time and its own peak RSS (wait4)."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Measured:
    wall: float                                # seconds
    peak_rss: float                            # bytes, of the child itself
    stdout: str
    returncode: int


def measure(cmd: Sequence[str], env: Optional[dict[str, str]] = None) -> Measured:
    began = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    return Measured(wall, usage.ru_maxrss * 1024.0, stdout, proc.returncode)


def measure_parallel(cmds: Sequence[Sequence[str]],
                     env: Optional[dict[str, str]] = None) -> tuple[float, list[Measured]]:
    """Start every command at once; the wall time is until the last one ends."""
    began = time.perf_counter()
    procs = [subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env=env, text=True) for c in cmds]
    results = []
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        results.append(Measured(time.perf_counter() - began, usage.ru_maxrss * 1024.0, out,
                                os.waitstatus_to_exitcode(status)))
    return time.perf_counter() - began, results
