"""Helpers for the maintenance tests: a fixed clock and real files of chosen ages."""
from __future__ import annotations

import os
from pathlib import Path

NOW = 1_750_000_000.0      # a fixed "now" for every pass
HOUR = 3600.0
DAY = 86400.0


def make_file(path: Path, size: int, age: float, now: float = NOW) -> Path:
    """A real file of ``size`` bytes whose mtime is ``age`` seconds before ``now``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    set_age(path, age, now)
    return path


def set_age(path: Path, age: float, now: float = NOW) -> None:
    os.utime(path, (now - age, now - age))


def make_entry(folder: Path, sizes: list[int], age: float, now: float = NOW) -> Path:
    """A folder (cache entry, staging folder) with files, all of them ``age`` old."""
    for index, size in enumerate(sizes):
        make_file(folder / f"stem{index}.wav", size, age, now)
    set_age(folder, age, now)
    return folder
