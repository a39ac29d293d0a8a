"""demucs's model folder layout: ``<name>.yaml`` bags and ``<sig>`` member files.

A bag yaml lists member signatures (``models``), optional per-source ``weights``
and an optional ``segment``. A member is ``<sig>.safetensors`` (preferred: no
code runs when it loads), ``<sig>.th`` or ``<sig>-<sha8>.th`` (pickles).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BagSpec:
    name: str
    folder: Path
    sigs: tuple[str, ...]
    weights: Optional[list[list[float]]]
    segment: Optional[float]
    single: bool = False                      # a lone model file, no yaml

    def member_file(self, sig: str) -> Optional[Path]:
        return member_file(self.folder, sig)


def read_bag(folder: Path, name: str) -> Optional[BagSpec]:
    """The bag or single model ``name`` in ``folder``, or None when it is not there."""
    path = folder / f"{name}.yaml"
    if path.is_file():
        data: Any = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return None
        return BagSpec(name, folder, tuple(str(s) for s in data["models"]),
                       data.get("weights"), data.get("segment"))
    if member_file(folder, name) is not None:
        return BagSpec(name, folder, (name,), None, None, single=True)
    return None


def member_file(folder: Path, sig: str) -> Optional[Path]:
    """``<sig>.safetensors`` if present, else ``<sig>.th`` / ``<sig>-<sha8>.th``."""
    safe = folder / f"{sig}.safetensors"
    if safe.is_file():
        return safe
    plain = folder / f"{sig}.th"
    if plain.is_file():
        return plain
    matches = sorted(folder.glob(f"{sig}-*.th"))
    return matches[0] if matches else None


def bag_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def safetensors_sources(path: Path) -> tuple[str, ...]:
    """The sources listed in a safetensors member's metadata (no weights read)."""
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            kwargs = json.loads((handle.metadata() or {}).get("kwargs", "{}"))
        return tuple(kwargs.get("sources", ()))
    except Exception as exc:  # a damaged file: the load will report it
        log.debug("cannot read metadata of %s: %s", path, exc)
        return ()
