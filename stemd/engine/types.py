"""Values exchanged with the separation engine (frozen, picklable)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

WavDepth = Literal["int16", "int24", "float32"]
ProgressFn = Callable[[float], None]          # fraction done, 0.0 .. 1.0


@dataclass(frozen=True)
class OutputFormat:
    kind: Literal["wav", "flac", "mp3"] = "wav"
    wav_depth: WavDepth = "int16"             # wav and flac (flac: int16 | int24)
    mp3_bitrate: int = 320                    # kbit/s
    mp3_preset: int = 2                       # 2 best .. 7 fastest (lameenc quality)

    @property
    def ext(self) -> str:
        return self.kind


@dataclass(frozen=True)
class SeparationOptions:
    """Every separation option of the demucs CLI, plus stemd's engine knobs."""

    model: str = "htdemucs"
    two_stems: Optional[str] = None            # e.g. "vocals" -> vocals + no_vocals
    other_method: Literal["add", "minus", "none"] = "add"
    shifts: int = 1
    overlap: float = 0.25
    segment: Optional[float] = None            # seconds; None = the model's own
    clip: Literal["rescale", "clamp", "none"] = "rescale"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast on CUDA only
    batch_size: int = 0                        # segments per forward pass; 0 = auto
    tf32: bool = True                          # TF32 matmuls/convolutions on CUDA
    format: OutputFormat = field(default_factory=OutputFormat)


@dataclass(frozen=True)
class ModelSource:
    """Where models come from."""

    repo: Optional[Path] = None                # local folder in demucs's --repo layout
    offline: bool = False                      # never touch the network
    allow_pickle: bool = False                 # load .th pickles from a folder others can write


@dataclass(frozen=True)
class AudioInfo:
    duration: float                            # seconds
    sample_rate: int
    channels: int
    codec: str = ""
    container: str = ""


@dataclass(frozen=True)
class SeparationResult:
    stems: dict[str, Path]                     # stem name -> file written
    sample_rate: int                           # of the stems (the model's)
    channels: int                              # of the stems (the model's)
    frames: int                                # samples per channel in each stem
    input: AudioInfo
    device: str
    timings: dict[str, float]                  # seconds: decode, separate, encode, total
    model_sources: tuple[str, ...]             # the stems the model produces
    members_run: int = 1                       # bag members actually run
    backend: str = "torch"                     # what ran the model: torch | onnxruntime
