"""Block-wise resampling equals julius's whole-track resample_frac."""
from __future__ import annotations

import julius
import numpy as np
import pytest
import torch

from stemd.engine import resample


@pytest.mark.parametrize("old,new,length", [(48000, 44100, 50_001), (22050, 44100, 30_000),
                                            (8000, 44100, 7_919), (96000, 44100, 100)])
def test_chunked_equals_whole(monkeypatch: pytest.MonkeyPatch, old: int, new: int,
                              length: int) -> None:
    monkeypatch.setattr(resample, "BLOCK_INPUT", 4096)
    wav = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    whole = julius.resample_frac(wav, old, new).numpy()
    chunks = resample.ChunkedResampler(old, new).chunks(
        lambda a, b: wav[:, a:b].numpy(), length)
    ours = np.concatenate(list(chunks), axis=1)
    assert ours.shape == whole.shape
    assert np.max(np.abs(ours - whole)) < 1e-5
