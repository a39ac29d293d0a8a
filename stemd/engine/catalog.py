"""List, fetch and import models (``stemd models list|fetch|import``)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import yaml

from stemd.errors import InputError, ModelUnavailable
from stemd.engine import hub
from stemd.engine.layout import BagSpec, bag_names, read_bag
from stemd.engine.models import KNOWN_MODELS, ModelInfo, hub_failure, load_model, resolve_model
from stemd.engine.types import ModelSource

log = logging.getLogger(__name__)


def list_models(source: ModelSource) -> list[ModelInfo]:
    """The known pretrained names plus every bag in the repo folder, found or not."""
    names = list(KNOWN_MODELS)
    if source.repo is not None:
        names += [n for n in bag_names(source.repo) if n not in names]
    return [resolve_model(name, source) for name in names]


def fetch_model(name: str) -> ModelInfo:
    """Download ``name`` into the Hugging Face cache with demucs's own loader (online)."""
    from demucs.hf import get_hf_model
    try:
        with hub.offline_mode(False):
            get_hf_model(name)
    except Exception as exc:
        log.debug("downloading %s failed: %s: %s", name, type(exc).__name__, exc)
        raise ModelUnavailable(f"Could not download model {name}. {hub_failure(name, exc)}",
                               "Check the name (`stemd models list`) and the network "
                               "connection.") from None
    return resolve_model(name, ModelSource(offline=True))


def import_model(src_folder: Path, dest_repo: Path, name: Optional[str] = None,
                 allow_pickle: bool = False) -> ModelInfo:
    """Copy one bag (yaml + member files) from ``src_folder`` into ``dest_repo``, then load it.

    ``name`` picks a bag of the folder; when the folder holds one model and ``name`` is
    not one of its bags, that model is imported under ``name`` (e.g. as ``htdemucs``).
    """
    spec = _source_spec(src_folder, name)
    target = name or spec.name
    files = []
    for sig in spec.sigs:
        found = spec.member_file(sig)
        if found is None:
            raise InputError(f"{src_folder} lacks the model file for member {sig} of "
                             f"{spec.name}.", "Copy the complete model folder.")
        files.append(found)
    dest_repo.mkdir(parents=True, exist_ok=True)
    for path in files:
        _copy(path, dest_repo / path.name)
    _write_bag_yaml(src_folder, spec, dest_repo / f"{target}.yaml")
    load_model(target, ModelSource(repo=dest_repo, offline=True, allow_pickle=allow_pickle))
    return resolve_model(target, ModelSource(repo=dest_repo, offline=True))


def _write_bag_yaml(src_folder: Path, spec: BagSpec, dest: Path) -> None:
    """The bag's yaml under its new name (a lone model file gets a one-member bag)."""
    tmp = dest.with_name(dest.name + ".part")
    if spec.single:
        tmp.write_text(yaml.safe_dump({"models": list(spec.sigs)}))
    else:
        shutil.copyfile(src_folder / f"{spec.name}.yaml", tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def _source_spec(src_folder: Path, name: Optional[str]) -> BagSpec:
    found = bag_names(src_folder) or _lone_models(src_folder)
    names = [name] if name and (name in found or read_bag(src_folder, name)) else found
    if len(names) != 1:
        raise InputError(f"{src_folder} holds {len(names)} model bags "
                         f"({', '.join(names) or 'none'}).",
                         "Name the one to import.")
    spec = read_bag(src_folder, names[0])
    if spec is None:
        raise InputError(f"{src_folder} holds no model named {names[0]}.",
                         "Point at a folder in demucs's layout: NAME.yaml plus model files.")
    return spec


def _lone_models(folder: Path) -> list[str]:
    """Model files without a bag yaml: ``SIG.safetensors``, ``SIG.th``, ``SIG-SHA8.th``."""
    if not folder.is_dir():
        return []
    sigs = {p.stem.split("-")[0] for p in folder.iterdir() if p.suffix in (".th", ".safetensors")}
    return sorted(sigs)


def _copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    log.info("imported %s", dest.name)
