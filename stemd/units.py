"""Parse the human units used in the config: sizes ("20GiB") and durations ("72h")."""
from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
               "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_TIME_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from a number or a string such as ``"512MiB"`` or ``"2GB"``."""
    return int(_parse(value, _SIZE_UNITS, "a size such as 512MiB or 2GB"))


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"10m"``, ``"72h"``, ``"30d"``."""
    return float(_parse(value, _TIME_UNITS, "a duration such as 90s, 10m, 72h or 30d"))


def _parse(value: int | float | str, units: dict[str, int], expected: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(f"expected {expected}, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in units:
        raise ValueError(f"unknown unit {unit!r}: expected {expected}")
    if number < 0:
        raise ValueError(f"must not be negative: {value!r}")
    return number * units[unit]


def duration_text(seconds: float) -> str:
    """A duration as the config writes it, exactly: ``"30d"``, ``"24h"``, ``"10m"``, ``"65s"``."""
    for unit, size, least in (("d", 86400, 7 * 86400), ("h", 3600, 3600), ("m", 60, 120)):
        if seconds >= least and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def size_text(num_bytes: int) -> str | int:
    """A size as the config writes it, exactly: ``"20GiB"``, ``"256MiB"``; 0 stays 0."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024),
                       ("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if num_bytes and num_bytes % size == 0:
            return f"{num_bytes // size}{unit}"
    return num_bytes


def format_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024:
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TiB"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
