"""Choose a loaded model's backend and build one forward per member.

``torch`` runs each member as it is. ``onnxruntime`` runs each HTDemucs member's
network through an exported ONNX file (``export.py``) verified against torch before
first use; anything that stops it (ONNX Runtime missing, a GPU slot, a model that is
not HTDemucs, an export that fails, a failed check) falls back to torch with a log line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from stemd.engine.backends import expected_backend, ort_installed
from stemd.engine.backends.ort import VERIFY_DB, OrtForward, OrtSettings, agreement_db, open_session
from stemd.engine.backends.split import is_splittable

log = logging.getLogger(__name__)

EXPORT_BATCH = 1   # the fixed batch of an export: stemd's CPU plan runs one segment a pass


@dataclass(frozen=True)
class Chosen:
    backend: str                       # "torch" | "onnxruntime"
    forwards: list[Callable[..., Any]]
    note: str = ""                     # why torch was kept, when another was asked for


def choose(members: list[Any], device: str, setting: str, cache_dir: Optional[Path],
           settings: OrtSettings = OrtSettings()) -> Chosen:
    """The forwards to run ``members`` with, for ``setting`` on ``device``."""
    torch_only = Chosen("torch", list(members))
    if setting == "torch":
        return torch_only
    why = _cannot_use_ort(members, device, setting, cache_dir)
    if why:
        _fallback_log(setting, why)
        return Chosen("torch", list(members), why)
    try:
        forwards = [_ort_forward(m, cache_dir, settings) for m in members]  # type: ignore[arg-type]
    except _Rejected as exc:
        _fallback_log(setting, str(exc), warn=True)
        return Chosen("torch", list(members), str(exc))
    log.info("backend: onnxruntime for %d member(s)", len(members))
    return Chosen("onnxruntime", forwards)


def _cannot_use_ort(members: list[Any], device: str, setting: str,
                    cache_dir: Optional[Path]) -> str:
    if not ort_installed():
        return "ONNX Runtime is not installed (pip install 'stemd[onnx]')"
    if expected_backend(setting, device) != "onnxruntime":
        return f"ONNX Runtime runs on CPU slots only, not on {device}"
    if cache_dir is None:
        return "no export cache folder was given"
    if not all(is_splittable(m) for m in members):
        return "the model is not HTDemucs (only HTDemucs exports)"
    return ""


class _Rejected(Exception):
    pass


def _ort_forward(model: Any, cache_dir: Path, settings: OrtSettings) -> OrtForward:
    from stemd.engine.backends import export
    try:
        exported = export.cached_export(model, EXPORT_BATCH, cache_dir)
        forward = OrtForward(model, _session(exported, model, cache_dir, settings))
    except Exception as exc:
        raise _Rejected(f"the ONNX export failed: {type(exc).__name__}: {exc}") from exc
    try:
        agreement, detail = agreement_db(model, forward), ""
    except Exception as exc:      # e.g. the file holds a network of another shape
        agreement, detail = float("-inf"), f" ({type(exc).__name__}: {exc})"
    if agreement < VERIFY_DB:
        export.discard(exported.path)
        raise _Rejected(f"the exported network {exported.path.name} agrees with torch to "
                        f"{agreement:.1f} dB only (at least {VERIFY_DB:g} dB needed){detail}; "
                        "the file was removed and is exported again on the next load")
    log.debug("export %s verified: %.1f dB", exported.path.name, agreement)
    return forward


def _session(exported: Any, model: Any, cache_dir: Path, settings: OrtSettings) -> Any:
    """A session on the cached file; a file ONNX Runtime cannot load is exported again."""
    from stemd.engine.backends import export
    try:
        return open_session(exported.path, settings)
    except Exception as exc:
        if exported.built:
            raise
        log.warning("export cache %s does not load (%s): exporting again",
                    exported.path.name, exc)
        export.discard(exported.path)
        return open_session(export.cached_export(model, EXPORT_BATCH, cache_dir).path, settings)


def _fallback_log(setting: str, why: str, warn: bool = False) -> None:
    level = logging.WARNING if warn or setting == "onnxruntime" else logging.INFO
    log.log(level, "backend: torch (%s asked for; %s)", setting, why)
