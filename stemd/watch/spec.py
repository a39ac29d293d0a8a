"""What an inbox is, and what the watcher hands over: frozen values, no I/O."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Literal, Mapping

from stemd.errors import ConfigError

PollMode = Literal["auto", "always", "never"]

DEFAULT_EXTENSIONS: frozenset[str] = frozenset({
    "wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "aif", "aiff",
    "wma", "mp4", "webm", "mka", "alac", "wv", "ape",
})
DEFAULT_SETTLE_SECONDS = 5.0
DEFAULT_NETWORK_SETTLE_SECONDS = 65.0       # longer than NFS attribute caching (acregmax 60 s)
DEFAULT_ZERO_TAIL_SECONDS = 60.0
DEFAULT_EMPTY_TIMEOUT = 3600.0             # a 0-byte file unchanged this long is handed over (and refused)
POLL_MODES: frozenset[str] = frozenset({"auto", "always", "never"})


def normalize_extensions(extensions: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """Lower-case extensions without their leading dot: ``{".WAV"}`` -> ``{"wav"}``."""
    return frozenset(e.strip().lstrip(".").casefold() for e in extensions if e.strip().lstrip("."))


@dataclass(frozen=True)
class InboxSpec:
    """One watched inbox and the intake settings that apply to it.

    ``settle_seconds=None`` means "not set by the user": 5 s on a local disk and
    ``network_settle_seconds`` on a network mount. A value set explicitly is used
    everywhere, network mounts included.
    """

    path: Path
    profile: str = "default"
    settle_seconds: float | None = None
    priority: int = 0                      # given to the jobs of files found here
    subfolder_profiles: Mapping[str, str] = field(default_factory=dict)
    extra_ignore: tuple[str, ...] = ()
    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    poll: PollMode = "auto"
    poll_interval: float = 5.0
    rescan_interval: float = 60.0
    follow_symlinks: bool = False
    network_settle_seconds: float = DEFAULT_NETWORK_SETTLE_SECONDS
    exclude_dirs: tuple[Path, ...] = ()
    zero_tail_seconds: float = DEFAULT_ZERO_TAIL_SECONDS
    empty_timeout: float = DEFAULT_EMPTY_TIMEOUT

    def __post_init__(self) -> None:
        _set(self, "path", Path(os.path.abspath(self.path)))
        _set(self, "subfolder_profiles", MappingProxyType(dict(self.subfolder_profiles)))
        _set(self, "extra_ignore", tuple(self.extra_ignore))
        _set(self, "extensions", normalize_extensions(self.extensions))
        _set(self, "exclude_dirs", tuple(Path(os.path.abspath(p)) for p in self.exclude_dirs))
        _validate(self)

    def __hash__(self) -> int:
        return hash((self.path, self.profile))

    def settle_for(self, network: bool) -> float:
        """The settle time that applies on this inbox's filesystem."""
        if self.settle_seconds is not None:
            return self.settle_seconds
        return self.network_settle_seconds if network else DEFAULT_SETTLE_SECONDS

    def wants_polling(self, network: bool) -> bool:
        """Whether this inbox is watched by polling rather than by file events."""
        return self.poll == "always" or (self.poll == "auto" and network)

    def profile_for(self, path: PurePath) -> str:
        """The first folder under the inbox named in ``subfolder_profiles``, else ``profile``."""
        try:
            folders = path.relative_to(self.path).parts[:-1]
        except ValueError:
            return self.profile
        keys = {k.casefold(): v for k, v in self.subfolder_profiles.items()}
        for name in folders:
            if name.casefold() in keys:
                return keys[name.casefold()]
        return self.profile


@dataclass(frozen=True)
class Candidate:
    """A finished regular file, ready to be taken by the daemon."""

    path: Path
    inbox: InboxSpec
    profile: str
    size: int
    mtime: float


def _set(spec: InboxSpec, name: str, value: object) -> None:
    object.__setattr__(spec, name, value)


def _validate(spec: InboxSpec) -> None:
    if spec.poll not in POLL_MODES:
        raise ConfigError(f"poll = {spec.poll!r} is not a polling mode.",
                          "Use one of: auto, always, never.")
    for name in ("poll_interval", "rescan_interval", "network_settle_seconds"):
        if not getattr(spec, name) > 0:
            raise ConfigError(f"{name} must be more than 0 seconds.", f"Set {name} to a positive number.")
    for name in ("settle_seconds", "zero_tail_seconds"):
        value = getattr(spec, name)
        if value is not None and value < 0:
            raise ConfigError(f"{name} cannot be negative.", f"Set {name} to 0 or more seconds.")
    if not spec.extensions:
        raise ConfigError("The list of audio extensions is empty.", "List at least one, for example \"wav\".")
