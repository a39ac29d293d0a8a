"""Values exchanged with the separation engine (frozen, picklable)."""
from __future__ import annotations

import math
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"   # device.effective_precision
    batch_size: int = 0                        # segments per forward pass; 0 = auto
    tf32: bool = True                          # TF32 matmuls/convolutions on CUDA
    format: OutputFormat = field(default_factory=OutputFormat)
    skip_silent: bool = False                  # leave silent stems out (still measured)


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


def _rounded(value: float) -> Optional[float]:
    """A level for JSON: two decimals; None for -inf (no signal at all)."""
    return None if value == -math.inf else round(value, 2)


@dataclass(frozen=True)
class StemAnalysis:
    """Levels of one stem as written (after clipping or rescaling); -inf = no signal."""

    peak_dbfs: float                           # largest sample
    true_peak_dbfs: float                      # largest value between samples (4x oversampled)
    loudness_lufs: float                       # integrated, EBU R128 / ITU-R BS.1770-4
    rms_dbfs: float                            # a full-scale sine is -3.01
    silent: bool                               # nothing audible (docs/analysis.md)

    def as_dict(self) -> dict[str, object]:
        return {"peak_dbfs": _rounded(self.peak_dbfs),
                "true_peak_dbfs": _rounded(self.true_peak_dbfs),
                "loudness_lufs": _rounded(self.loudness_lufs),
                "rms_dbfs": _rounded(self.rms_dbfs), "silent": self.silent}


@dataclass(frozen=True)
class QualityEstimate:
    """How well the stems seem separated, without a reference (docs/analysis.md)."""

    residual_db: Optional[float]               # energy of mix - sum of stems vs the mix
    leakage: dict[str, float]                  # stem -> largest |correlation| with another
    leaks_with: dict[str, str]                 # stem -> the stem of that correlation
    correlation: dict[str, float]              # "a/b" -> correlation of stems a and b

    def as_dict(self) -> dict[str, object]:
        return {"residual_db": None if self.residual_db is None else round(self.residual_db, 2),
                "stems": {name: {"leakage": round(value, 4), "leaks_with": self.leaks_with[name]}
                          for name, value in self.leakage.items()},
                "correlation": {pair: round(value, 4) for pair, value in self.correlation.items()}}


@dataclass(frozen=True)
class SeparationResult:
    stems: dict[str, Path]                     # stem name -> file written (absent if skipped)
    sample_rate: int                           # of the stems (the model's)
    channels: int                              # of the stems (the model's)
    frames: int                                # samples per channel in each stem
    input: AudioInfo
    device: str
    timings: dict[str, float]                  # seconds: decode, separate, encode, total
    model_sources: tuple[str, ...]             # the stems the model produces
    members_run: int = 1                       # bag members actually run
    analysis: dict[str, StemAnalysis] = field(default_factory=dict)   # stem -> levels
    quality: Optional[QualityEstimate] = None
    skipped: tuple[str, ...] = ()              # silent stems left out (skip_silent)
    title: Optional[str] = None                # a downloaded input's title (link jobs)
    provenance: dict[str, str] = field(default_factory=dict)  # demucs, torch, model_sha256
    backend: str = "torch"                     # what ran the model: torch | onnxruntime
    precision: str = "fp32"                    # what it ran at: fp32 | bf16 | fp16

    def manifest_stems(self) -> dict[str, dict[str, object]]:
        """The manifest's ``stems``: each stem's file, whether it was published, its levels."""
        entries: dict[str, dict[str, object]] = {}
        for name, path in self.stems.items():
            entries[name] = {"file": path.name, "published": name not in self.skipped}
            if name in self.analysis:
                entries[name]["analysis"] = self.analysis[name].as_dict()
        return entries
