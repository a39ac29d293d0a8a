"""Stem analysis: the levels measured while stems are written equal a reference meter's
reading of the files, and the quality estimate ranks separations the right way round.

Every case goes through the engine's sink API (``SinkPump`` with a ``Metering``) into
real wav files, fed in uneven chunks as the model would release them.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from stemd.engine.analysis import Metering
from stemd.engine.encoders import open_encoder
from stemd.engine.sinks import DirectSink, RescaleSink, SinkPump
from stemd.engine.types import OutputFormat, QualityEstimate, StemAnalysis

from .audio import read_wav

RATE = 44100
SIZES = (1000, 7777, 44100, 123)


def sine(seconds: float, freq: float, dbfs: float, phase: float = 0.0,
         rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    one = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)
    return np.stack([one, one]).astype(np.float32)


def pink(seconds: float, seed: int, peak: float = 0.5, rate: int = RATE) -> np.ndarray:
    """Stereo pink noise (1/f power), shaped in the frequency domain."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spectrum = np.fft.rfft(rng.normal(size=(2, n)), axis=1)
    spectrum[:, 1:] /= np.sqrt(np.arange(1, spectrum.shape[1]))
    spectrum[:, 0] = 0
    noise = np.fft.irfft(spectrum, n, axis=1)
    return (noise / np.abs(noise).max() * peak).astype(np.float32)


def run_sinks(folder: Path, stems: dict[str, np.ndarray], clip: str = "rescale",
              mix: Optional[np.ndarray] = None, sums_to_mix: bool = True,
              rate: int = RATE) -> tuple[dict[str, StemAnalysis], QualityEstimate]:
    """Write ``stems`` as 16-bit wavs through the real sinks, metered; the measurements."""
    fmt = OutputFormat("wav", "int16")
    frames = next(iter(stems.values())).shape[1]
    sinks: dict[str, DirectSink | RescaleSink] = {}
    for name in stems:
        opener = partial(open_encoder, folder / f"{name}.wav", fmt, rate, 2, frames)
        sinks[name] = (RescaleSink(opener, folder / f"{name}.f32", 2) if clip == "rescale"
                       else DirectSink(opener(), clip))
    pump = SinkPump(sinks, metering=Metering(rate, 2, list(stems), sums_to_mix))
    mix = sum(stems.values()) if mix is None else mix
    start, i = 0, 0
    while start < frames:
        end = start + SIZES[i % len(SIZES)]
        pump.put({name: torch.from_numpy(x[:, start:end].copy()) for name, x in stems.items()},
                 torch.from_numpy(mix[:, start:end].copy()))
        start, i = end, i + 1
    pump.finish()
    quality = pump.quality_estimate()
    assert quality is not None
    return pump.analysis(), quality


def reference_lufs(path: Path, rate: int = RATE, filter_class: str = "K-weighting") -> float:
    pyloudnorm = pytest.importorskip("pyloudnorm")
    return float(pyloudnorm.Meter(rate, filter_class=filter_class).integrated_loudness(
        read_wav(path).T.astype(np.float64)))


@pytest.mark.parametrize("name", ["sine_1k_-20", "pink", "pink_48k"])
def test_loudness_matches_the_reference_meter_on_the_written_file(tmp_path: Path,
                                                                    name: str) -> None:
    rate = 48000 if name.endswith("48k") else RATE
    signal = (sine(10.0, 1000, -20.0, rate=rate) if name.startswith("sine")
              else pink(10.0, seed=1, rate=rate))
    analysis, _ = run_sinks(tmp_path, {"x": signal}, rate=rate)
    measured = analysis["x"].loudness_lufs
    # pyloudnorm's default K-weighting (cookbook biquads) and its "DeMan" filters (the
    # Recommendation's coefficients, as stemd and libebur128 derive them)
    assert abs(measured - reference_lufs(tmp_path / "x.wav", rate)) < 0.1
    assert abs(measured - reference_lufs(tmp_path / "x.wav", rate, "DeMan")) < 0.005
    if name.startswith("sine"):
        # two channels of a -20 dBFS 1 kHz sine: -20 LUFS by BS.1770's definition
        assert abs(measured - (-20.0)) < 0.05
        assert abs(analysis["x"].peak_dbfs - (-20.0)) < 0.01
        assert abs(analysis["x"].rms_dbfs - (-23.01)) < 0.01
    assert not analysis["x"].silent


def test_silence_has_no_loudness_and_is_silent(tmp_path: Path) -> None:
    quiet = pink(5.0, seed=2, peak=10 ** (-66 / 20))       # peak -66 dBFS: below the -60 line
    analysis, _ = run_sinks(tmp_path, {"zero": np.zeros((2, 5 * RATE), np.float32),
                                       "quiet": quiet, "tone": sine(5.0, 440, -30.0)})
    zero = analysis["zero"]
    assert zero.silent and zero.loudness_lufs == -math.inf and zero.peak_dbfs == -math.inf
    assert reference_lufs(tmp_path / "zero.wav") == -math.inf
    assert zero.as_dict() == {"peak_dbfs": None, "true_peak_dbfs": None, "loudness_lufs": None,
                              "rms_dbfs": None, "silent": True}
    assert analysis["quiet"].silent and -67 < analysis["quiet"].peak_dbfs < -65
    assert not analysis["tone"].silent


def test_true_peak_finds_the_peak_between_samples(tmp_path: Path) -> None:
    """A sine at a quarter of the sample rate, 45 degrees off: every sample is at 0.707 of
    the waveform's peak, which lies between them."""
    signal = sine(2.0, RATE / 4, -6.0, phase=np.pi / 4)
    analysis, _ = run_sinks(tmp_path, {"x": signal}, clip="clamp")
    levels = analysis["x"]
    assert abs(levels.peak_dbfs - (-9.01)) < 0.02
    assert levels.true_peak_dbfs > levels.peak_dbfs + 2.5
    assert abs(levels.true_peak_dbfs - (-6.0)) < 0.5


def test_levels_are_those_of_the_file_after_rescaling(tmp_path: Path) -> None:
    """A stem peaking at 1.7 is written divided by 1.01 x 1.7: the levels say so."""
    loud = pink(4.0, seed=3, peak=1.7)
    analysis, _ = run_sinks(tmp_path, {"loud": loud})
    data = read_wav(tmp_path / "loud.wav")
    assert abs(analysis["loud"].peak_dbfs - 20 * math.log10(1 / 1.01)) < 0.01
    assert abs(analysis["loud"].peak_dbfs - 20 * math.log10(np.abs(data).max())) < 0.01
    assert abs(analysis["loud"].loudness_lufs - reference_lufs(tmp_path / "loud.wav")) < 0.1


def test_chunking_does_not_change_the_figures(tmp_path: Path) -> None:
    signal = pink(3.0, seed=4)
    meters = []
    for sizes in ((RATE * 3,), (1, 4409, 4411, 100000), (333,)):
        metering = Metering(RATE, 2, ["x"], True)
        start, i = 0, 0
        while start < signal.shape[1]:
            end = start + sizes[i % len(sizes)]
            chunk = torch.from_numpy(signal[:, start:end].copy())
            metering.add({"x": chunk}, {"x": chunk}, chunk)
            start, i = end, i + 1
        metering.close()
        meters.append(metering.results({})["x"])
    for other in meters[1:]:
        for field in ("peak_dbfs", "true_peak_dbfs", "loudness_lufs", "rms_dbfs"):
            assert getattr(other, field) == pytest.approx(getattr(meters[0], field), abs=1e-9)


def _sources(seconds: float = 4.0) -> dict[str, np.ndarray]:
    """Four independent 'instruments'."""
    return {"drums": pink(seconds, seed=10, peak=0.3),
            "bass": sine(seconds, 55, -12.0),
            "other": sine(seconds, 660, -18.0) + pink(seconds, seed=11, peak=0.02),
            "vocals": sine(seconds, 310, -14.0, phase=1.0) * np.float32(0.8)}


def _blend(sources: dict[str, np.ndarray], leak: float, lost: float) -> dict[str, np.ndarray]:
    """Each estimate keeps (1 - leak - lost) of its source and picks up ``leak`` / 3 of
    each other one; ``lost`` of every source is in no stem."""
    total = sum(sources.values())
    return {name: ((1 - leak - lost) * x + leak / 3 * (total - x)).astype(np.float32)
            for name, x in sources.items()}


def test_quality_ranks_clean_above_bad_separation(tmp_path: Path) -> None:
    sources = _sources()
    mix = sum(sources.values())
    estimates = {}
    for label, leak, lost in (("clean", 0.0, 0.0), ("fair", 0.1, 0.05), ("bad", 0.4, 0.2)):
        folder = tmp_path / label
        folder.mkdir()
        _, estimates[label] = run_sinks(folder, _blend(sources, leak, lost), mix=mix)
    clean, fair, bad = estimates["clean"], estimates["fair"], estimates["bad"]
    assert clean.residual_db is not None and fair.residual_db is not None
    assert bad.residual_db is not None
    assert clean.residual_db < -60 < fair.residual_db < bad.residual_db
    for name in sources:
        assert clean.leakage[name] < 0.05
        assert clean.leakage[name] < fair.leakage[name] < bad.leakage[name]
    assert set(clean.correlation) == {"drums/bass", "drums/other", "drums/vocals", "bass/other",
                                      "bass/vocals", "other/vocals"}
    as_json = bad.as_dict()
    assert set(as_json) == {"residual_db", "stems", "correlation"}
    assert set(as_json["stems"]["vocals"]) == {"leakage", "leaks_with"}


def test_residual_is_left_out_when_stems_sum_to_the_mix_by_design(tmp_path: Path) -> None:
    """two_stems with other_method = minus: no_vocals is mix - vocals."""
    sources = _sources(2.0)
    mix = sum(sources.values())
    stems = {"vocals": sources["vocals"], "no_vocals": mix - sources["vocals"]}
    _, quality = run_sinks(tmp_path, stems, mix=mix, sums_to_mix=False)
    assert quality.residual_db is None
    assert quality.leakage["vocals"] == quality.leakage["no_vocals"] < 0.05


def test_true_peak_equals_the_oversampling_filter_applied_whole() -> None:
    """Chunk by chunk, the true peak is the filter of BS.1770-4 Annex 2 run over the whole
    signal (all four phases, both channels)."""
    from stemd.engine.analysis import TruePeak
    signal = np.random.default_rng(3).standard_normal((2, 50_000)).astype(np.float32) * 0.3
    signal[1, 31_337] = 0.99                     # a lone spike: its ringing is the peak
    meter = TruePeak(2)
    for start in range(0, signal.shape[1], 7_919):
        meter.add(signal[:, start:start + 7_919])
    padded = np.concatenate([np.zeros((2, TruePeak.TAPS - 1), np.float32), signal], axis=1)
    whole = max(float(np.abs(np.convolve(row, phase, "valid")).max())
                for row in padded for phase in TruePeak.PHASES)
    assert meter.peak == pytest.approx(whole, rel=1e-6)
