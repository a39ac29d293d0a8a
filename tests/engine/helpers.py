"""Shared helpers of the engine tests: run stemd's separate and demucs's reference alike."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stemd.engine import separate
from stemd.engine.models import LoadedModel
from stemd.engine.types import OutputFormat, SeparationOptions, SeparationResult

from .audio import read_wav, sdr
from .reference import reference_stems

FLOAT_WAV = OutputFormat(kind="wav", wav_depth="float32")


def seeded_shifts(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Make ``random.randint`` (the shift offsets of apply_model and stemd) replayable.

    demucs's transformer also calls ``random.randrange`` once per forward pass, so a
    global ``random.seed`` alone would not give both runs the same offsets.
    """
    monkeypatch.setattr(random, "randint", random.Random(seed).randint)


def run_stemd(model: LoadedModel, path: Path, tmp: Path, **options: Any) -> SeparationResult:
    opts = SeparationOptions(clip="none", format=FLOAT_WAV, **options)
    return separate(model, path, opts, tmp / "out", lambda stem: f"{stem}.wav",
                    lambda fraction: None, tmp / "work")


def assert_matches(monkeypatch: pytest.MonkeyPatch, model: LoadedModel, path: Path,
                   tmp: Path, seed: int = 0, **options: Any) -> SeparationResult:
    """stemd's stems equal apply_model's to floating-point accuracy (SDR > 60 dB)."""
    seeded_shifts(monkeypatch, seed)
    result = run_stemd(model, path, tmp, **options)
    seeded_shifts(monkeypatch, seed)
    ref_opts = {k: v for k, v in options.items() if k not in ("batch_size",)}
    reference = reference_stems(model, path, **ref_opts)
    assert set(result.stems) == set(reference)
    for name, stem_path in result.stems.items():
        ours, theirs = read_wav(stem_path), reference[name].numpy()
        assert ours.shape == theirs.shape, name
        assert np.all(np.abs(theirs) < 1), "keep test signals below full scale"
        assert sdr(theirs, ours) > 60, (name, sdr(theirs, ours))
    return result
