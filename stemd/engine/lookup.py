"""Is a profile's model at hand? A check without torch (the supervisor runs it at start-up).

It looks where the loader looks, [models] repo and then the Hugging Face cache,
reading only file names and the bag's yaml; it never touches the network.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from stemd.engine import hub
from stemd.engine.layout import bag_names, read_bag
from stemd.engine.types import ModelSource

KNOWN_MODELS = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi",
                "mdx", "mdx_extra", "mdx_q", "mdx_extra_q")


@dataclass(frozen=True)
class MissingModel:
    model: str
    profiles: tuple[str, ...]
    message: str                       # what is wrong, in a sentence
    hint: str                          # the one thing to do

    def to_json(self) -> dict[str, object]:
        return {"kind": "model", "model": self.model, "profiles": list(self.profiles),
                "message": self.message, "hint": self.hint}


def model_at_hand(name: str, source: ModelSource) -> bool:
    """True when every member file of ``name`` is in the repo folder or the HF cache."""
    if source.repo is not None and source.repo.is_dir():
        spec = read_bag(source.repo, name)
        if spec is not None:
            return all(spec.member_file(sig) is not None for sig in spec.sigs)
    try:
        snapshot = hub.cached_snapshot(name)
    except Exception:        # a name the hub could never hold, a broken cache
        return False
    spec = read_bag(snapshot, hub.short_name(name)) if snapshot is not None else None
    return spec is not None and all(spec.member_file(sig) is not None for sig in spec.sigs)


def missing_models(models: Mapping[str, str], source: ModelSource) -> list[MissingModel]:
    """``models`` maps profile -> model name; one entry per model that is not at hand."""
    users: dict[str, list[str]] = {}
    for profile, model in sorted(models.items()):
        users.setdefault(model, []).append(profile)
    return [_missing(model, tuple(profiles), source) for model, profiles in users.items()
            if not model_at_hand(model, source)]


def unknown_model_warnings(models: Mapping[str, str], repo: Optional[Path]) -> list[str]:
    """A sentence for each model name that is neither pretrained nor in the repo folder."""
    names = [*KNOWN_MODELS, *(bag_names(repo) if repo is not None else [])]
    warnings = []
    for profile, model in sorted(models.items()):
        if model in names or "/" in model:               # "namespace/name": a hub model
            continue
        guess = difflib.get_close_matches(model, names, n=1, cutoff=0.6)
        warnings.append(f"Profile {profile} uses model `{model}`, which is neither a pretrained "
                        "model nor in [models] repo" +
                        (f"; did you mean `{guess[0]}`?" if guess else ".") +
                        " `stemd models list` shows the names.")
    return warnings


def _missing(model: str, profiles: tuple[str, ...], source: ModelSource) -> MissingModel:
    names = ", ".join(profiles)
    where = "[models] repo" + (f" ({source.repo})" if source.repo else " (not set)")
    message = (f"Model {model} (profile {names}) is not in {where} nor in the Hugging Face "
               "cache.")
    if source.offline:
        message += " stemd is offline, so every job of these profiles fails until it is there."
    else:
        message += " stemd will try to download it at the first job; without internet that job fails."
    hint = (f"Put it there: `stemd models import FOLDER {model}` (a folder in demucs's layout), "
            f"or `stemd models fetch {model}` on a connected machine.")
    return MissingModel(model, profiles, message, hint)
