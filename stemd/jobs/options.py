"""A job's options: what a profile asks for, typed, frozen, and stored as JSON on the job.

Built from a profile (``JobOptions.from_profile``) when a file arrives and again when a
job is retried; read back from the ``options`` column with ``from_json``. The cache key
(``cache_key``) covers what changes the output and nothing else, so the same input with
the same output options is separated once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from stemd.engine.types import OutputFormat, SeparationOptions

if TYPE_CHECKING:
    from stemd.config import ProfileConfig

_SEPARATION_FIELDS = tuple(f.name for f in dataclasses.fields(SeparationOptions) if f.name != "format")
_FORMAT_FIELDS = tuple(f.name for f in dataclasses.fields(OutputFormat))
_NOT_IN_KEY = ("batch_size",)    # how the work is batched does not change the stems


@dataclass(frozen=True)
class JobOptions:
    model: str = "htdemucs"
    two_stems: Optional[str] = None
    other_method: str = "add"
    shifts: int = 1
    overlap: float = 0.25
    segment: Optional[float] = None
    clip: str = "rescale"
    precision: str = "fp32"
    batch_size: int = 0
    tf32: bool = True
    skip_silent: bool = False                # leave silent stems out of the published folder
    format: OutputFormat = field(default_factory=OutputFormat)
    device: str = "auto"                     # the profile's wish: auto | gpu | cpu
    force_device: Optional[str] = None       # "cpu" once a batch of one ran out of GPU memory

    @classmethod
    def from_profile(cls, profile: "ProfileConfig") -> "JobOptions":
        separation = profile.separation_options()
        values = {name: getattr(separation, name) for name in _SEPARATION_FIELDS}
        return cls(**values, format=separation.format, device=profile.device)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobOptions":
        """Tolerant of rows written by older versions: unknown keys are ignored, missing
        ones take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)} - {"format"}
        values = {k: v for k, v in data.items() if k in known}
        fmt = data.get("format") or {}
        values["format"] = OutputFormat(**{k: v for k, v in fmt.items() if k in _FORMAT_FIELDS})
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "JobOptions":
        return cls.from_dict(json.loads(text or "{}"))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["force_device"] is None:
            del data["force_device"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def separation(self) -> SeparationOptions:
        """What the worker is told."""
        return SeparationOptions(**{name: getattr(self, name) for name in _SEPARATION_FIELDS},
                                 format=self.format)

    def cache_key(self, sha256: str) -> str:
        """Same content and same output-affecting options give the same key (dedupe and
        the stem cache); the device and the batch size do not change the stems."""
        relevant = dataclasses.asdict(self.separation())
        for name in _NOT_IN_KEY:
            relevant.pop(name)
        if not relevant["skip_silent"]:
            del relevant["skip_silent"]          # keys from before the option stay valid
        blob = json.dumps(relevant, sort_keys=True)
        return hashlib.sha256(f"{sha256}:{blob}".encode()).hexdigest()

    @property
    def wanted_device(self) -> str:
        """auto | gpu | cpu: the profile's wish, or the CPU after running out of GPU memory."""
        return self.force_device or self.device

    def after_oom(self, on_gpu: bool) -> "JobOptions":
        """The next attempt after running out of memory: a batch of one; if that already
        ran out of memory on a GPU, the CPU."""
        if self.batch_size != 1:
            return dataclasses.replace(self, batch_size=1)
        if on_gpu:
            return dataclasses.replace(self, force_device="cpu")
        return self

    def without_fallback(self) -> "JobOptions":
        """A retry by request tries the GPU again."""
        return dataclasses.replace(self, force_device=None)
