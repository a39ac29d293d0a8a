"""Describe the machine a benchmark ran on."""
from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path


def describe(args: argparse.Namespace) -> dict[str, str]:
    import demucs
    import psutil
    import torch
    info = {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "demucs": getattr(demucs, "__version__", "?"),
        "torch threads (default)": str(torch.get_num_threads()),
        "onnxruntime": _ort_version(),
        "malloc of stemd's torch runs": _malloc(args.allocator),
        "malloc of stemd's ONNX Runtime runs": _malloc(args.allocator, "onnxruntime"),
        "malloc of the CLI runs": _malloc(args.cli_allocator),
        "load average (1, 5, 15 min) when this was written": ", ".join(
            f"{x:.1f}" for x in os.getloadavg()) + " (other work shared the machine "
            "when it is above 1-2)",
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return str(onnxruntime.__version__)


def _malloc(setting: str, backend: str = "torch") -> str:
    from stemd.worker.allocator import resolve
    library = resolve(setting, backend)
    return f"{library.name} (preloaded)" if library else "glibc (system)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
