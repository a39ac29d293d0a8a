"""The Hugging Face hub cache, reached only through demucs's own loaders.

``offline`` mode sets ``HF_HUB_OFFLINE=1`` in the environment and, when
huggingface_hub is already imported (it reads the variable once, at import),
its ``constants.HF_HUB_OFFLINE`` too, for the duration of the call.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)


@contextlib.contextmanager
def offline_mode(enabled: bool) -> Iterator[None]:
    """Forbid network access of huggingface_hub while the block runs (when ``enabled``)."""
    if not enabled:
        yield
        return
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    previous_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        _restore(previous_env, constants, previous_const)


def _restore(env: Optional[str], constants: object, value: object) -> None:
    if env is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = env
    if constants is not None:
        setattr(constants, "HF_HUB_OFFLINE", value)


def repo_id(name: str) -> str:
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    namespace, _, short = name.rpartition("/")
    return f"{namespace or DEFAULT_NAMESPACE}/{hf_repo_name(short)}"


def short_name(name: str) -> str:
    return name.rpartition("/")[2]


def cached_file(name: str, filename: str) -> Optional[Path]:
    """The path of ``filename`` of model ``name`` in the local HF cache, or None (no network)."""
    with offline_mode(True):
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo_id(name), filename)
    return Path(found) if isinstance(found, str) else None


def cached_snapshot(name: str) -> Optional[Path]:
    """The cache snapshot folder holding ``<name>.yaml``, or None."""
    found = cached_file(name, f"{short_name(name)}.yaml")
    return found.parent if found else None
