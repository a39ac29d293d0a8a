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
                     profile: str) -> str:
    """The stem's path relative to the outbox, from a template checked by the config."""
    values = {name: safe_component(value) for name, value in
              {"track": track, "stem": stem, "ext": ext, "model": model,
               "profile": profile}.items()}
    parts = [safe_component(part.format(**values)) for part in template.split("/")]
    return str(PurePosixPath(*parts))


def track_dir(template: str, **values: str) -> str:
    """The folder (relative to the outbox) that holds one track's stems."""
    return str(PurePosixPath(render_stem_path(template, stem="x", ext="x", **values)).parent)


def track_name(filename: str) -> str:
    """The track name of an input file: its name without the last extension."""
    name = PurePosixPath(filename).name
    stem, dot, _ext = name.rpartition(".")
    return stem if dot and stem else name
