"""Stem meters fed as samples are finished: no second pass over any file.

``StemMeter`` measures one stem: sample peak, true peak (4x oversampling with the
interpolation filter of ITU-R BS.1770-4 Annex 2), integrated loudness (BS.1770-4 /
EBU R128: K-weighting at the stem's sample rate, 400 ms blocks with 75 % overlap,
absolute gate at -70 LUFS, relative gate at -10 LU) and RMS. ``QualityMeter`` sees
all the stems with the mix and estimates how well they were separated without a
reference: the energy of mix - sum of stems, and the correlation between stems.
See docs/analysis.md for what the numbers mean and how far to trust them.

Memory: a few blocks of filter state per stem, plus one float per 100 ms of audio
(the gating blocks; the relative gate needs them all).
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import combinations
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from stemd.engine.types import QualityEstimate, StemAnalysis

SILENT_PEAK_DBFS = -60.0       # a stem whose sample peak stays below this is silent
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
RESIDUAL_FLOOR_DB = -120.0     # a residual below this (an exact sum) is reported as this
BLOCK_STEPS = 4                # a 400 ms gating block is 4 steps of 100 ms (75 % overlap)
STEP_SECONDS = 0.1
IR_SECONDS = 0.1               # the K-weighting impulse response is below 1e-10 after this

# BS.1770-4 Annex 2: a 48-tap interpolation filter as 4 phases of 12 taps
_TRUE_PEAK_PHASES = np.array([
    [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000,
     -0.0594482421875, 0.1373291015625, 0.9721679687500, -0.1022949218750,
     0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500],
    [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250,
     -0.1665039062500, 0.4650878906250, 0.7797851562500, -0.2003173828125,
     0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375],
    [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000,
     -0.2003173828125, 0.7797851562500, 0.4650878906250, -0.1665039062500,
     0.0891113281250, -0.0517578125000, 0.0292968750000, -0.0291748046875],
    [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750,
     -0.1022949218750, 0.9721679687500, 0.1373291015625, -0.0594482421875,
     0.0332031250000, -0.0196533203125, 0.0109863281250, 0.0017089843750],
])


def k_weighting(rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The two K-weighting biquads of BS.1770 (high shelf, then high pass) designed for
    ``rate`` from their analog prototypes, as one 4th-order filter ``(b, a)``. At 48 kHz
    these are the Recommendation's published coefficients."""
    f0, gain, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    pass_b = np.array([1.0, -2.0, 1.0])
    pass_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return np.polymul(shelf_b, pass_b), np.polymul(shelf_a, pass_a)


def db(power_ratio: float) -> float:
    """10 log10, with -inf for zero."""
    return 10.0 * math.log10(power_ratio) if power_ratio > 0 else -math.inf


def amplitude_db(amplitude: float) -> float:
    """20 log10, with -inf for zero."""
    return db(amplitude * amplitude)


class FirStream:
    """Streaming FIR filter by overlap-save FFT convolution, one row per channel."""

    def __init__(self, taps: np.ndarray, channels: int) -> None:
        self.length = len(taps)
        self.size = 1 << math.ceil(math.log2(4 * self.length))
        self.block = self.size - self.length + 1
        self.spectrum = np.fft.rfft(taps, self.size)
        self.history = np.zeros((channels, self.length - 1))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._block(x[:, i:i + self.block])
                               for i in range(0, x.shape[1], self.block)] or [x], axis=1)

    def _block(self, x: np.ndarray) -> np.ndarray:
        joined = np.concatenate([self.history, x], axis=1)
        self.history = joined[:, joined.shape[1] - self.length + 1:]
        out = np.fft.irfft(np.fft.rfft(joined, self.size) * self.spectrum, self.size)
        return out[:, self.length - 1:joined.shape[1]]


def k_weighting_fir(rate: int) -> np.ndarray:
    """The K-weighting filter's impulse response, long enough to be exact in float64."""
    b, a = k_weighting(rate)
    taps = int(IR_SECONDS * rate)
    size = 1 << math.ceil(math.log2(8 * taps))
    return np.fft.irfft(np.fft.rfft(b, size) / np.fft.rfft(a, size), size)[:taps]


class TruePeak:
    """The largest absolute value of the signal oversampled 4x (BS.1770-4 Annex 2).

    Each phase's 12 taps are applied as 12 vectorized multiply-adds over the whole chunk
    (float32, no BLAS threads): ``np.convolve`` made a dot-product call per output sample
    and cost 16 s of CPU beside the model on a 5-minute track (docs/analysis.md, "Cost").
    """

    PHASES = _TRUE_PEAK_PHASES.astype(np.float32)     # the samples are float32 already
    TAPS = _TRUE_PEAK_PHASES.shape[1]

    def __init__(self, channels: int) -> None:
        self.history = np.zeros((channels, self.TAPS - 1), np.float32)
        self.peak = 0.0

    def add(self, x: np.ndarray) -> None:
        joined = np.concatenate([self.history, x], axis=1)
        self.history = joined[:, x.shape[1]:]
        outputs = joined.shape[1] - self.TAPS + 1
        acc = np.empty((joined.shape[0], outputs), np.float32)
        term = np.empty_like(acc)
        for phase in self.PHASES:
            # "valid" convolution: output n is sum_k phase[k] * joined[n + TAPS - 1 - k]
            np.multiply(joined[:, self.TAPS - 1:], phase[0], out=acc)
            for k in range(1, self.TAPS):
                np.multiply(joined[:, self.TAPS - 1 - k:self.TAPS - 1 - k + outputs], phase[k],
                            out=term)
                acc += term
            self.peak = max(self.peak, float(np.abs(acc, out=acc).max()))


class GatedLoudness:
    """Mean squares of K-weighted audio per 100 ms step; 400 ms blocks gated at the end."""

    def __init__(self, rate: int) -> None:
        self.step = max(1, round(rate * STEP_SECONDS))
        self.partial = 0.0            # sum of squares in the step being filled
        self.filled = 0               # samples in it
        self.steps: list[np.ndarray] = []

    def add(self, squares: np.ndarray) -> None:
        """``squares``: K-weighted samples squared and summed over channels (weights 1)."""
        take = min(self.step - self.filled, squares.size)
        self.partial += float(squares[:take].sum())
        self.filled += take
        if self.filled < self.step:
            return
        self.steps.append(np.array([self.partial / self.step]))
        rest = squares[take:]
        whole = rest.size // self.step * self.step
        if whole:
            self.steps.append(rest[:whole].reshape(-1, self.step).mean(axis=1))
        self.partial = float(rest[whole:].sum())
        self.filled = rest.size - whole

    def integrated(self, gain: float = 1.0) -> tuple[float, int]:
        """Integrated loudness in LUFS (-inf when no block passes the absolute gate) of the
        signal scaled by ``gain``, and the number of 400 ms blocks."""
        steps = np.concatenate(self.steps) if self.steps else np.zeros(0)
        if steps.size < BLOCK_STEPS:
            return -math.inf, 0
        blocks = np.lib.stride_tricks.sliding_window_view(steps, BLOCK_STEPS).mean(axis=1)
        blocks = blocks * gain * gain
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10.0 * np.log10(blocks)
        kept = blocks[loudness > ABSOLUTE_GATE_LUFS]
        if kept.size == 0:
            return -math.inf, blocks.size
        relative = -0.691 + db(float(kept.mean())) + RELATIVE_GATE_LU
        kept = blocks[(loudness > ABSOLUTE_GATE_LUFS) & (loudness > relative)]
        return -0.691 + db(float(kept.mean())), blocks.size


class StemMeter:
    """Peak, true peak, loudness and RMS of one stem, fed chunk by chunk."""

    def __init__(self, rate: int, channels: int) -> None:
        self.weighting = FirStream(k_weighting_fir(rate), channels)
        self.true_peak = TruePeak(channels)
        self.loudness = GatedLoudness(rate)
        self.channels = channels
        self.peak = 0.0
        self.squares = 0.0
        self.frames = 0

    def add(self, chunk: torch.Tensor | np.ndarray) -> None:
        """``chunk``: ``[channels, n]`` samples, in order."""
        samples = _samples(chunk)
        if samples.shape[1] == 0:
            return
        self.true_peak.add(samples.astype(np.float32, copy=False))
        x = samples.astype(np.float64)
        self.peak = max(self.peak, float(np.abs(x).max()))
        self.squares += float(np.square(x).sum())
        self.frames += x.shape[1]
        self.loudness.add(np.square(self.weighting(x)).sum(axis=0))

    def result(self, gain: float = 1.0) -> StemAnalysis:
        """What was measured, for the stem scaled by ``gain`` (``rescale`` clipping)."""
        peak = self.peak * gain
        loudness, blocks = self.loudness.integrated(gain)
        samples = self.frames * self.channels
        peak_db = amplitude_db(peak)
        silent = peak_db < SILENT_PEAK_DBFS or (blocks > 0 and loudness == -math.inf)
        return StemAnalysis(
            peak_dbfs=peak_db,
            true_peak_dbfs=amplitude_db(max(self.true_peak.peak * gain, peak)),
            loudness_lufs=loudness,
            rms_dbfs=db(self.squares * gain * gain / samples) if samples else -math.inf,
            silent=silent)


class QualityMeter:
    """A reference-free separation estimate from all the stems and the mix."""

    def __init__(self, names: Sequence[str], residual: bool) -> None:
        self.names = tuple(names)
        self.residual = residual          # False when the stems sum to the mix by design
        self.gram = np.zeros((len(names), len(names)))
        self.mix_energy = 0.0
        self.residual_energy = 0.0

    def add(self, stems: Mapping[str, torch.Tensor], mix: torch.Tensor) -> None:
        """``stems``: each ``[channels, n]`` before clipping; ``mix``: the same span."""
        rows = np.stack([_samples(stems[name]).reshape(-1) for name in self.names]).astype(
            np.float64)
        self.gram += np.einsum("in,jn->ij", rows, rows)      # no BLAS threads beside the model
        flat = _samples(mix).reshape(-1).astype(np.float64)
        self.mix_energy += float(np.einsum("n,n->", flat, flat))
        if self.residual:
            left = flat - rows.sum(axis=0)
            self.residual_energy += float(np.einsum("n,n->", left, left))

    def result(self) -> QualityEstimate:
        norms = np.sqrt(np.diag(self.gram))
        pairs: dict[tuple[str, str], float] = {}
        for i, j in combinations(range(len(self.names)), 2):
            scale = norms[i] * norms[j]
            pairs[(self.names[i], self.names[j])] = float(self.gram[i, j] / scale) if scale else 0.0
        leakage = {}
        for name in self.names:
            others = [(abs(c), b if a == name else a) for (a, b), c in pairs.items()
                      if name in (a, b)]
            if others:
                leakage[name] = max(others)
        residual: Optional[float] = None
        if self.residual and self.mix_energy > 0:
            residual = max(RESIDUAL_FLOOR_DB, db(self.residual_energy / self.mix_energy))
        return QualityEstimate(
            residual_db=residual,
            leakage={name: value for name, (value, _) in leakage.items()},
            leaks_with={name: other for name, (_, other) in leakage.items()},
            correlation={f"{a}/{b}": value for (a, b), value in pairs.items()})


class Metering:
    """A ``StemMeter`` per stem, each fed on its own thread (numpy releases the GIL, so
    the stems are measured side by side and beside the encoders), and a ``QualityMeter``."""

    def __init__(self, rate: int, channels: int, names: Sequence[str], sums_to_mix: bool) -> None:
        self.meters = {name: StemMeter(rate, channels) for name in names}
        self.quality = QualityMeter(names, sums_to_mix)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(names)),
                                        thread_name_prefix="stemd-meter")
        self._pending: list[Future[None]] = []

    def add(self, written: Mapping[str, torch.Tensor], stems: Mapping[str, torch.Tensor],
            mix: Optional[torch.Tensor]) -> None:
        """``written``: each stem's samples as its file gets them; ``stems``: before clipping."""
        self._wait()      # each meter takes its chunks in order
        self._pending = [self._pool.submit(self.meters[name].add, chunk)
                         for name, chunk in written.items()]
        if mix is not None:
            self.quality.add(stems, mix)

    def close(self, wait: bool = True) -> None:
        if wait:
            self._wait()
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def results(self, gains: Mapping[str, float]) -> dict[str, StemAnalysis]:
        return {name: meter.result(gains.get(name, 1.0)) for name, meter in self.meters.items()}

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def _samples(samples: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        return samples.detach().cpu().numpy()
    return np.asarray(samples)
