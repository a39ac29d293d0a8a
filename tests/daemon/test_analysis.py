"""The manifest of a real daemon run carries each stem's levels and the quality estimate;
``skip_silent`` leaves a silent stem out of the published folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from audio import make_track, read_wav

PLAYED = ("drums", "bass", "other")


def test_silent_stem_is_measured_listed_and_left_out(make_daemon, tmp_path: Path) -> None:
    """A model that hears no vocals (an instrumental): vocals is silent, not published,
    and still in the manifest; the other stems' levels are those of their files."""
    daemon = make_daemon(profiles={"default": {"model": "novocals", "skip_silent": True}})
    make_track(tmp_path / "inbox" / "instrumental.wav", 3.0)
    daemon.wait_jobs(1, ("done",), timeout=180)

    track = tmp_path / "outbox" / "instrumental"
    assert sorted(p.name for p in track.iterdir()) == sorted(
        [f"{stem}.wav" for stem in PLAYED] + ["manifest.json"])
    manifest = json.loads((track / "manifest.json").read_text())
    vocals = manifest["stems"]["vocals"]
    assert vocals["file"] == "vocals.wav" and vocals["published"] is False
    assert vocals["analysis"]["silent"] is True and vocals["analysis"]["loudness_lufs"] is None

    for stem in PLAYED:
        entry = manifest["stems"][stem]
        assert entry["published"] is True and entry["analysis"]["silent"] is False
        data, rate = read_wav(track / f"{stem}.wav")
        peak = 20 * math.log10(float(np.abs(data).max()))
        assert abs(entry["analysis"]["peak_dbfs"] - peak) < 0.05    # 2 decimals, 16-bit
        assert entry["analysis"]["true_peak_dbfs"] >= entry["analysis"]["peak_dbfs"]
        pyloudnorm = pytest.importorskip("pyloudnorm")
        reference = pyloudnorm.Meter(rate).integrated_loudness(data.astype(np.float64))
        assert abs(entry["analysis"]["loudness_lufs"] - reference) < 0.1

    quality = manifest["quality"]
    assert isinstance(quality["residual_db"], float)
    assert set(quality["stems"]) == {"drums", "bass", "other", "vocals"}
    assert all(0 <= s["leakage"] <= 1 for s in quality["stems"].values())
    assert len(quality["correlation"]) == 6
