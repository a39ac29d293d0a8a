"""The separation engine: probe inputs, load demucs models, separate in bounded memory.

This package is the only place that imports demucs and torch. The worker process
of the daemon calls the functions below; see docs/engine.md. Names are imported
lazily, so ``stemd.engine.types`` (used by the config and the daemon) and
``probe`` do not pull torch into the supervisor process.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemd.engine.catalog import fetch_model, import_model, list_models
    from stemd.engine.mixfile import PreparedMix
    from stemd.engine.models import KNOWN_MODELS, LoadedModel, ModelInfo, load_model, resolve_model
    from stemd.engine.probing import probe
    from stemd.engine.process import trim_heap, tune_process
    from stemd.engine.separation import check_options, prepare_input, separate

_HOMES = {
    "fetch_model": "catalog", "import_model": "catalog", "list_models": "catalog",
    "PreparedMix": "mixfile", "KNOWN_MODELS": "models", "LoadedModel": "models",
    "ModelInfo": "models", "load_model": "models", "resolve_model": "models",
    "probe": "probing", "check_options": "separation", "prepare_input": "separation",
    "separate": "separation", "trim_heap": "process", "tune_process": "process",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
