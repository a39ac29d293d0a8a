"""Which precision a job runs at, decided without importing torch (the supervisor uses it
to look up the speed and memory measured for that precision; the worker to run it).

``auto``: bf16 on a CPU that computes it natively (AVX512-BF16 or AMX: measured about 0.6x
fp32's time at ~50 dB SDR from fp32), fp32 (with TF32) on CUDA GPUs (measured on an H200:
bf16 no faster there, fp16 slower) and elsewhere. ONNX Runtime runs fp32. See
docs/engine.md, "Precision".
"""
from __future__ import annotations

import functools
from pathlib import Path

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})   # Linux /proc/cpuinfo names


@functools.lru_cache(maxsize=1)
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16). Without it torch
    emulates bf16, slower than fp32, so bf16 is not used there."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return bool(CPU_BF16_FLAGS.intersection(flags))


def choose_precision(device: str, precision: str, backend: str = "torch") -> str:
    """What a job asking for ``precision`` runs at on ``device`` (``cpu``, ``cuda[:N]``,
    ``mps``) with the engine ``backend``."""
    kind = device.split(":", 1)[0]
    if backend != "torch" or kind not in ("cpu", "cuda") or precision == "fp32":
        return "fp32"
    if kind == "cuda":
        return "fp32" if precision == "auto" else precision
    return "bf16" if precision in ("auto", "bf16") and cpu_has_bf16() else "fp32"
