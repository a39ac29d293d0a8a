"""The CUDA path (pinned host copies, two batches in flight, autocast) on a real GPU:
skipped where torch sees none. The stems are checked against demucs's ``apply_model`` run
on the same GPU with TF32 off. (Against ``apply_model`` on the CPU they part at 47-59 dB:
cuFFT's inverse FFT does not ignore the imaginary part of the DC bin the network leaves,
as the CPU's does, so demucs's own forward pass differs as much between the devices;
docs/benchmarks.md, "On a GPU".)"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from stemd.engine import load_model
from stemd.engine.models import LoadedModel
from stemd.engine.types import ModelSource

from .audio import read_wav, sdr
from .helpers import run_stemd, seeded_shifts
from .reference import reference_stems

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny_cuda(tiny_repo: Path) -> LoadedModel:
    return load_model("tiny", ModelSource(repo=tiny_repo, offline=True), "cuda:0")


def _sdrs(monkeypatch: pytest.MonkeyPatch, gpu: LoadedModel, path: Path, tmp: Path,
          **options: object) -> dict[str, float]:
    seeded_shifts(monkeypatch, 0)
    result = run_stemd(gpu, path, tmp, shifts=2, **options)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    seeded_shifts(monkeypatch, 0)
    reference = reference_stems(gpu, path, shifts=2, device=gpu.device)
    return {name: sdr(reference[name].numpy(), read_wav(stem))
            for name, stem in result.stems.items()}


@pytest.mark.parametrize("batch_size", [0, 1, 3])
def test_cuda_fp32_matches_apply_model(monkeypatch: pytest.MonkeyPatch, tiny_cuda: LoadedModel,
                                       make_wav: Callable[..., Path], tmp_path: Path,
                                       batch_size: int) -> None:
    values = _sdrs(monkeypatch, tiny_cuda, make_wav(6.7), tmp_path,
                   batch_size=batch_size, tf32=False)
    assert len(values) == 4 and min(values.values()) > 60, values


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_half_precision_stays_close(monkeypatch: pytest.MonkeyPatch, tiny_cuda: LoadedModel,
                                         make_wav: Callable[..., Path], tmp_path: Path,
                                         precision: str) -> None:
    values = _sdrs(monkeypatch, tiny_cuda, make_wav(6.7), tmp_path, precision=precision)
    assert min(values.values()) > 40, values
