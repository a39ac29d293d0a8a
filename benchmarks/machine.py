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
        "malloc of stemd's runs": _malloc(args.allocator),
        "malloc of the CLI runs": _malloc(args.cli_allocator),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _malloc(setting: str) -> str:
    from stemd.worker.allocator import resolve
    library = resolve(setting)
    return f"{library.name} (preloaded)" if library else "glibc (system)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
