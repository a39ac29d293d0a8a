"""Which malloc the worker processes run with (``workers.allocator``).

A separation allocates and frees several hundred MB per forward pass. glibc's
malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh,
zero-filled mappings, page-faulted in again on every pass, and its arenas fragment
over a long track, so a worker's RSS creeps up with the track's length. tcmalloc
keeps freed spans for reuse. On the full-size htdemucs on 2 cores it made a forward
pass about 13 % faster and lowered a worker's peak RSS (docs/benchmarks.md).

jemalloc (Debian's ``libjemalloc2``) served ONNX Runtime best once ORT's own arena is
off; for torch tcmalloc was ahead in two of three measurements (docs/benchmarks.md), so
``auto`` picks per engine backend (``PREFERRED``), each falling back to the other.

The allocator must be in place before the process starts, so the supervisor puts
it into ``LD_PRELOAD`` for the worker processes it spawns (Linux only), chosen for the
backend its CPU slots run. Nothing is required: with neither installed, ``auto`` leaves
glibc's malloc.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import MutableMapping, Optional

NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
JEMALLOC_NAMES = ("libjemalloc.so.2",)
# ``auto``'s choice per engine backend, best first (measured: docs/benchmarks.md)
PREFERRED = {"torch": ("tcmalloc", "jemalloc"), "onnxruntime": ("jemalloc", "tcmalloc")}
LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64")
# tcmalloc prints a line for every allocation above this; a long track's spools are not news.
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find_tcmalloc() -> Optional[Path]:
    """The first tcmalloc library found in the usual library folders, or None."""
    return _find(NAMES)


def find_jemalloc() -> Optional[Path]:
    """Debian's ``libjemalloc2`` (or another jemalloc 5) when installed, or None."""
    return _find(JEMALLOC_NAMES)


def _find(names: tuple[str, ...]) -> Optional[Path]:
    if not sys.platform.startswith("linux"):
        return None
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [Path(d) / multiarch for d in LIB_DIRS if multiarch] + [Path(d) for d in LIB_DIRS]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def check_setting(setting: str) -> str:
    """``setting`` when it is ``auto``, ``system`` or an existing file; else ValueError."""
    if setting not in ("auto", "system") and not Path(setting).is_file():
        raise ValueError(f"allocator {setting!r} is neither \"auto\", \"system\" nor an "
                         "existing file; set it to one of those two, or to the path of a "
                         "malloc library such as libtcmalloc_minimal.so.4")
    return setting


def resolve(setting: str, backend: str = "torch") -> Optional[Path]:
    """``auto`` -> the best installed for ``backend`` (``PREFERRED``); ``system`` -> None;
    otherwise the given library."""
    if setting == "system":
        return None
    if setting == "auto":
        finders = {"jemalloc": find_jemalloc, "tcmalloc": find_tcmalloc}
        found = (finders[kind]() for kind in PREFERRED.get(backend, PREFERRED["torch"]))
        return next((library for library in found if library is not None), None)
    return Path(setting)


def preload(setting: str, environ: MutableMapping[str, str] = os.environ,
            backend: str = "torch") -> Optional[Path]:
    """Have processes started from now on with ``environ`` use the chosen allocator
    (for ``auto``, the best for the engine ``backend`` the workers will run)."""
    library = resolve(setting, backend)
    kept = [p for p in environ.get("LD_PRELOAD", "").split() if not _is_malloc(p)]
    if library is not None:
        kept.insert(0, str(library))
        environ.update(QUIET)
    if kept:
        environ["LD_PRELOAD"] = " ".join(kept)
    else:
        environ.pop("LD_PRELOAD", None)
    return library


def in_use() -> str:
    """The malloc this process runs with: ``jemalloc``, ``tcmalloc`` or ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    if "libjemalloc" in maps:
        return "jemalloc"
    return "tcmalloc" if "libtcmalloc" in maps else "system"


def _is_malloc(entry: str) -> bool:
    return any(lib in Path(entry).name for lib in ("libtcmalloc", "libjemalloc"))
