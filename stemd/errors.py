"""The one exception hierarchy of stemd.

Every error carries a plain-words ``message`` (what happened) and a ``hint``
(what to do). ``permanent`` errors fail a job at once; the others are retried.
"""
from __future__ import annotations


class StemdError(Exception):
    """Root of every error stemd raises on purpose."""

    permanent = False
    kind = "error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigError(StemdError):
    """The configuration file is missing, unreadable or invalid."""

    permanent = True
    kind = "config"


class InputError(StemdError):
    """The input file cannot be used (empty, not audio, too long, unreadable)."""

    permanent = True
    kind = "input"


class ModelUnavailable(StemdError):
    """The model cannot be found or loaded."""

    permanent = True
    kind = "model"


class InvalidOption(StemdError):
    """A separation option does not fit the model or the input."""

    permanent = True
    kind = "option"


class EngineError(StemdError):
    """Separation failed for a reason that may pass (retried)."""

    kind = "engine"


class OutOfMemory(EngineError):
    """The device ran out of memory; a retry uses a smaller batch or the CPU."""

    kind = "oom"


class DeviceError(EngineError):
    """A GPU or other accelerator cannot run the job; the next attempt runs on the CPU."""

    kind = "device"


class DiskFull(StemdError):
    """A write failed for lack of space; the input is kept and the job retried later."""

    kind = "disk"


class StoreError(StemdError):
    """The job database cannot be opened or is of an unknown version."""

    permanent = True
    kind = "store"


class LinkError(InputError):
    """A link cannot give audio: a bad or forbidden address, nothing there, too long, no
    audio, or yt-dlp missing (permanent)."""

    kind = "link"


class DownloadFailed(StemdError):
    """A download failed for a reason that may pass: the network, a timeout (retried)."""

    kind = "download"


class InputChanged(StemdError):
    """The input is not the content its job recorded: replaced while the job waited.
    The job is superseded; the new content is separated as a new job."""

    kind = "superseded"


class ClusterError(StemdError):
    """The Ray cluster cannot be reached, or a node cannot serve (version mismatch)."""

    kind = "cluster"
