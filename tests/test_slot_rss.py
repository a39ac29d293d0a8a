"""A worker's measured memory counts its exec'd children (ffmpeg), not forks of itself."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from stemd.engine.types import ModelSource
from stemd.dispatch.slots import Slot
from stemd.worker.process import WorkerSpec

PARENT = """
import os, subprocess, sys, time
big = bytearray(300 * 2**20)
for i in range(0, len(big), 4096):
    big[i] = 1
subprocess.Popen(["sleep", "30"])
if os.fork() == 0:          # a child that has not exec'd: it shares the 300 MB
    time.sleep(30)
    os._exit(0)
print("ready", flush=True)
time.sleep(30)
"""


def test_rss_counts_exec_children_but_not_unexeced_forks():
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        spec = WorkerSpec(0, "cpu", 1, ModelSource(), 60.0, 0)
        slot = Slot(0, "cpu", "cpu", spec, process=proc)  # type: ignore[arg-type]
        own = psutil.Process(proc.pid).memory_info().rss
        children = psutil.Process(proc.pid).children()
        assert sorted(c.name() for c in children) == sorted([psutil.Process(proc.pid).name(), "sleep"])
        assert own > 300 * 2**20
        assert own <= slot.rss() < own + 50 * 2**20
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
