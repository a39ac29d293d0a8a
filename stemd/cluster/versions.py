"""What a node runs: stemd, torch and demucs versions (read without importing torch)."""
from __future__ import annotations

import os
import socket
from importlib import metadata
from typing import Any

from stemd import __version__
from stemd.errors import ClusterError

CHECKED = ("stemd", "torch", "demucs")


def local_versions() -> dict[str, str]:
    found = {"stemd": __version__}
    for name in CHECKED[1:]:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe_node(count_cuda: bool = False) -> dict[str, Any]:
    """Run on a node: its versions, host name and memory (for admission before any job);
    with ``count_cuda``, how many CUDA devices torch sees there (in a short-lived process)."""
    import psutil
    memory = psutil.virtual_memory()
    found = {"versions": local_versions(), "host": socket.gethostname(), "pid": os.getpid(),
             "memory_total": int(memory.total), "memory_available": int(memory.available),
             "cores": os.cpu_count() or 1}
    if count_cuda:
        from stemd.dispatch.devices import detect_accelerators
        found["cuda"] = int(detect_accelerators().get("cuda") or 0)  # type: ignore[call-overload]
    return found


def check_versions(head: dict[str, str], node: dict[str, str], host: str) -> None:
    """Refuse a node whose stemd, torch or demucs differs from the head's."""
    differ = [name for name in CHECKED if head.get(name) != node.get(name)]
    if not differ:
        return
    pairs = "; ".join(f"{name} {node.get(name)} on the node, {head.get(name)} on the head"
                      for name in differ)
    raise ClusterError(f"Node {host} runs different versions and gets no slots: {pairs}.",
                       "Install the head's versions on that node (pip install "
                       + " ".join(f"{n}=={head.get(n)}" for n in differ)
                       + "), then restart its Ray node (ray stop; ray start --address=HEAD:6379).")
