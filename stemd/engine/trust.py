"""Refuse to unpickle ``.th`` model files that another user could have written."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from stemd.errors import ModelUnavailable

TRUSTED_OWNERS = (0,)


def check_pickle_trusted(path: Path) -> None:
    """Raise ModelUnavailable unless ``path`` and its folder are writable only by us (or root)."""
    for item in (path.parent, path):
        problem = _problem(item)
        if problem:
            raise ModelUnavailable(
                f"Refusing to load the pickle model file {path.name}: {item} {problem}. "
                "Loading a .th file runs code from it.",
                f"Make it writable only by you (`chmod go-w {item}`, and own it), convert "
                "the model to .safetensors, or set [models] allow_pickle = true if you "
                "trust everyone who can write there.")


def _problem(item: Path) -> str:
    info = item.stat()
    if info.st_uid not in (os.getuid(), *TRUSTED_OWNERS):
        return f"is owned by another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return ""
