"""Which names the watcher ignores, and which extensions it accepts."""
from __future__ import annotations

import re
from fnmatch import translate
from functools import lru_cache
from pathlib import PurePath
from typing import Iterable

# Matched case-insensitively against every name under the inbox (folders included).
DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",                                   # hidden files and folders (covers most of what follows)
    ".syncthing.*.tmp", "~syncthing~*.tmp",  # Syncthing temporary files (Unix, Windows)
    ".stfolder", ".stversions",              # Syncthing folder marker and versions
    ".~*", "*.part", ".ocTransferId*",       # Nextcloud / ownCloud transfers
    ".dropbox*",                             # Dropbox
    ".*.??????",                             # rsync temporary files (.name.XXXXXX)
    "*.crdownload", "*.download", "*.opdownload", "*.partial",  # browsers (Safari: a .download folder)
    "*.filepart", "*.!qb", "*.!ut", "*.aria2",                  # WinSCP, torrent clients, aria2
    ".DS_Store", "._*", ".Trash*", ".Spotlight-V100", ".fseventsd",  # macOS
    "Thumbs.db", "ehthumbs.db", "desktop.ini", "~$*",          # Windows and Office
    "$RECYCLE.BIN", "System Volume Information", "lost+found",
    "@eaDir", "#recycle", "#snapshot", "@Recycle", "@Recently-Snapshot",  # Synology, QNAP
)

# A file is still being downloaded while a sibling with one of these suffixes exists.
BUSY_SIDECARS: tuple[str, ...] = (".aria2",)


def is_ignored(name: str, extra_patterns: Iterable[str] = ()) -> bool:
    """True when ``name`` (one path component) matches the built-in list or an extra pattern."""
    return _matcher(tuple(extra_patterns)).match(name.casefold()) is not None


@lru_cache(maxsize=64)
def _matcher(extra_patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled regex for the built-in list plus ``extra_patterns``."""
    parts = (translate(p.casefold()) for p in (*DEFAULT_IGNORE, *extra_patterns))
    return re.compile("|".join(f"(?:{part})" for part in parts))


def matching_pattern(name: str, extra_patterns: Iterable[str] = ()) -> str | None:
    """The first ignore pattern ``name`` matches, or None."""
    for pattern in (*DEFAULT_IGNORE, *extra_patterns):
        if re.fullmatch(translate(pattern.casefold()), name.casefold()):
            return pattern
    return None


def has_extension(name: str, extensions: frozenset[str]) -> bool:
    """True when the name ends in one of ``extensions`` (lower-case, without the dot)."""
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.casefold() in extensions


def shown(path: PurePath | str) -> str:
    """A path as it may appear in a log line: quoted when it holds newlines or other controls."""
    text = str(path)
    return text if text.isprintable() else repr(text)
