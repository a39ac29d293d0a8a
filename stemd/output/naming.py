"""Turn the outbox template into safe relative paths (nothing can escape the outbox)."""
from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

_UNSAFE = re.compile(r"[\x00-\x1f/\\]")
MAX_COMPONENT = 200


def safe_component(value: str) -> str:
    """One path component: no separators, control characters, ``.``/``..`` or empty names."""
    value = unicodedata.normalize("NFC", value)
    value = _UNSAFE.sub("_", value).strip()
    if value in ("", ".", ".."):
        value = "_"
    if value.startswith("."):
        value = "_" + value[1:]
    encoded = value.encode("utf-8")[:MAX_COMPONENT]
    return encoded.decode("utf-8", errors="ignore")


def render_stem_path(template: str, *, track: str, stem: str, ext: str, model: str,
                     profile: str, folder: str = "") -> str:
    """The stem's path relative to the outbox, from a template checked by the config.

    ``folder`` is the input's folder relative to its inbox (``album/cd1``): each of its
    parts is cleaned like any value, and an empty folder leaves no empty part behind.
    """
    values = {name: safe_component(value) for name, value in
              {"track": track, "stem": stem, "ext": ext, "model": model,
               "profile": profile}.items()}
    values["folder"] = safe_folder(folder)
    parts: list[str] = []
    for part in template.split("/"):
        rendered = part.format(**values)
        pieces = rendered.split("/") if "{folder}" in part else [rendered]
        parts += [safe_component(piece) for piece in pieces if piece or "{folder}" not in part]
    return str(PurePosixPath(*parts))


def safe_folder(folder: str) -> str:
    """A relative folder with every part made safe (``..`` and ``/`` cannot climb out)."""
    parts = [p for p in folder.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(safe_component(p) for p in parts)


def track_dir(template: str, **values: str) -> str:
    """The folder (relative to the outbox) that holds one track's stems."""
    return str(PurePosixPath(render_stem_path(template, stem="x", ext="x", **values)).parent)


def track_name(filename: str) -> str:
    """The track name of an input file: its name without the last extension."""
    name = PurePosixPath(filename).name
    stem, dot, _ext = name.rpartition(".")
    return stem if dot and stem else name
