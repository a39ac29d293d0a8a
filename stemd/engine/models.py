"""Find and load demucs models: a local repo folder first, then the Hugging Face cache.

Models are loaded only through demucs's own loaders: ``demucs.hf.load_safetensors_model``
and ``demucs.repo.LocalRepo`` for a repo folder, ``demucs.hf.get_hf_model`` for the hub.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from stemd.errors import DeviceError, ModelUnavailable
from stemd.engine import hub
from stemd.engine.attention import use_blocked_attention
from stemd.engine.device import CPU_FALLBACK_HINT
from stemd.engine.process import tune_process
from stemd.engine.layout import BagSpec, member_file, read_bag, safetensors_sources
from stemd.engine.lookup import KNOWN_MODELS  # noqa: F401  (re-exported: stemd.engine, catalog)
from stemd.engine.trust import check_pickle_trusted
from stemd.engine.types import ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    where: str                                 # "repo" | "hf-cache" | "" (not found)
    path: Optional[Path]                       # folder holding the model's files
    members: int
    sources: tuple[str, ...]
    available: bool
    formats: tuple[str, ...] = ()              # "safetensors" | "th", per member


@dataclass
class LoadedModel:
    name: str
    sources: list[str]
    samplerate: int
    audio_channels: int
    device: str
    model: Any                                 # demucs BagOfModels or single model
    max_segment: float                         # seconds; inf when any length works
    info: ModelInfo
    members: list[Any] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    checksum: str = ""                         # sha256 over the model's files (yaml + members)
    backend: str = "torch"                     # what runs the members: torch | onnxruntime
    forwards: list[Any] = field(default_factory=list)   # per member: [B, C, n] -> [B, S, C, n]

    def forward(self, member: int) -> Any:
        """What runs ``member``'s forward pass on the chosen backend."""
        return self.forwards[member] if self.forwards else self.members[member]


def missing_hint(name: str) -> str:
    return (f"Import it into [models] repo: `stemd models import FOLDER {name}` (FOLDER in "
            "demucs's layout), "
            f"or run `stemd models fetch {name}` on a connected machine and copy its Hugging "
            "Face cache (~/.cache/huggingface/hub) here.")


def resolve_model(name: str, source: ModelSource) -> ModelInfo:
    """Where ``name`` would be loaded from; ``available`` is False when nowhere."""
    if source.repo is not None and source.repo.is_dir():
        spec = read_bag(source.repo, name)
        if spec is not None:
            return _info_from_spec(spec, "repo")
    snapshot = hub.cached_snapshot(name)
    if snapshot is not None:
        spec = read_bag(snapshot, hub.short_name(name))
        if spec is not None:
            return _info_from_spec(spec, "hf-cache")
    return ModelInfo(name, "", None, 0, (), False)


def _info_from_spec(spec: BagSpec, where: str) -> ModelInfo:
    files = [spec.member_file(sig) for sig in spec.sigs]
    formats = tuple(f.suffix.lstrip(".") if f else "missing" for f in files)
    sources: tuple[str, ...] = ()
    for found in files:
        if found is not None and found.suffix == ".safetensors":
            sources = safetensors_sources(found)
            break
    return ModelInfo(spec.name, where, spec.folder, len(spec.sigs), sources,
                     all(f is not None for f in files), formats)


def load_model(name: str, source: ModelSource, device: str = "cpu", backend: str = "torch",
               cache_dir: Optional[Path] = None) -> "LoadedModel":
    """Load ``name`` (repo folder, else HF cache or hub) onto ``device``, its members run by
    ``backend`` (``auto``, ``torch``, ``onnxruntime``; exports are cached in ``cache_dir``)."""
    _check_device(device)
    tune_process()
    info = resolve_model(name, source)
    if info.where == "repo" and info.available:
        model = _load_from_repo(read_bag(info.path, name), source)  # type: ignore[arg-type]
    elif info.where == "repo":
        raise ModelUnavailable(f"Model {name} in {info.path} is missing member files "
                               f"({', '.join(info.formats)}).", missing_hint(name))
    else:
        model = _load_from_hub(name, source, info)
        info = resolve_model(name, source)
    use_blocked_attention(model)
    return _attach_backend(_wrap(name, model, device, info), backend, cache_dir)


def _attach_backend(loaded: LoadedModel, backend: str, cache_dir: Optional[Path]) -> LoadedModel:
    from stemd.engine.backends.select import choose
    chosen = choose(loaded.members, loaded.device, backend, cache_dir)
    loaded.backend, loaded.forwards = chosen.backend, chosen.forwards
    return loaded


def _check_device(device: str) -> None:
    """A device that cannot be used is never the job's fault: the job retries on the CPU."""
    if device == "cpu":
        return
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"Device {device} was asked for, but no CUDA GPU is usable.",
                          CPU_FALLBACK_HINT + " Set [workers] gpu = 0 or install a CUDA "
                          "build of torch.")
    if device == "mps" and not mps_available():
        raise DeviceError("Device mps was asked for, but Apple's Metal (MPS) backend is not "
                          "usable here.", CPU_FALLBACK_HINT + " Set [workers] gpu = 0 to "
                          "plan no GPU slot.")
    if device != "mps" and not device.startswith("cuda"):
        raise DeviceError(f"Unknown device {device!r}.",
                          CPU_FALLBACK_HINT + " Devices are cpu, cuda[:N] and mps.")


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _load_from_repo(spec: BagSpec, source: ModelSource) -> Any:
    from demucs.apply import BagOfModels
    try:
        members = [_load_member(spec, sig, source) for sig in spec.sigs]
        if spec.single:
            return members[0].eval()
        return BagOfModels(members, spec.weights, spec.segment).eval()
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"Model {spec.name} in {spec.folder} could not be loaded: "
                               f"{exc}.", "Replace its files; they may be damaged or "
                               "incomplete. " + missing_hint(spec.name)) from exc


def _load_member(spec: BagSpec, sig: str, source: ModelSource) -> Any:
    path = member_file(spec.folder, sig)
    assert path is not None
    if path.suffix == ".safetensors":
        from demucs.hf import load_safetensors_model
        return load_safetensors_model(path)
    if not source.allow_pickle:
        check_pickle_trusted(path)
    from demucs.repo import LocalRepo
    return LocalRepo(spec.folder).get_model(sig)


def _load_from_hub(name: str, source: ModelSource, info: ModelInfo) -> Any:
    if source.offline and not info.available:
        raise ModelUnavailable(f"Model {name} is not in the local model folder nor in the "
                               "Hugging Face cache, and stemd is offline.", missing_hint(name))
    from demucs.hf import get_hf_model
    try:
        with hub.offline_mode(source.offline):
            return get_hf_model(name).eval()
    except Exception as exc:
        log.debug("loading %s from the Hugging Face hub failed: %s: %s", name,
                  type(exc).__name__, exc)
        raise ModelUnavailable(hub_failure(name, exc), missing_hint(name)) from None


def hub_failure(name: str, exc: BaseException) -> str:
    """What went wrong, in a sentence, without the library's own wording."""
    kind = type(exc).__name__
    if kind in ("RepositoryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"):
        return f"The Hugging Face hub has no model named {name}."
    return (f"Model {name} is not in [models] repo nor in the Hugging Face cache, and it "
            "could not be downloaded (the Hugging Face hub could not be reached).")


def _wrap(name: str, model: Any, device: str, info: ModelInfo) -> LoadedModel:
    from demucs.apply import BagOfModels
    try:
        model.to(device)
    except (RuntimeError, NotImplementedError) as exc:
        raise DeviceError(f"Model {name} could not be moved to {device}: {exc}",
                          CPU_FALLBACK_HINT) from exc
    if isinstance(model, BagOfModels):
        members, weights = list(model.models), [list(w) for w in model.weights]
        max_segment = float(model.max_allowed_segment)
    else:
        members, weights = [model], [[1.0] * len(model.sources)]
        max_segment = _member_max_segment(model)
    log.info("loaded model %s (%d member(s)) on %s", name, len(members), device)
    return LoadedModel(name, list(model.sources), int(model.samplerate),
                       int(model.audio_channels), device, model, max_segment, info,
                       members, weights, model_checksum(name, info))


def model_checksum(name: str, info: ModelInfo) -> str:
    """sha256 over the bag's yaml and its member files, in order (empty when unknown)."""
    spec = read_bag(info.path, hub.short_name(name)) if info.path is not None else None
    if spec is None:
        return ""
    files = [spec.folder / f"{spec.name}.yaml"] if not spec.single else []
    files += [f for f in (spec.member_file(sig) for sig in spec.sigs) if f is not None]
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _member_max_segment(model: Any) -> float:
    from demucs.htdemucs import HTDemucs
    return float(model.segment) if isinstance(model, HTDemucs) else float("inf")
