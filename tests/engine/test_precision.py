"""Precision: bf16 on a CPU that computes it natively, fp32 elsewhere, and what each
job ran at is reported."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from stemd.engine.device import effective_precision
from stemd.engine.precision import cpu_has_bf16
from stemd.engine.models import LoadedModel

from .audio import read_wav, sdr
from .helpers import run_stemd

NATIVE = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no AVX512-BF16 or AMX")


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    read = cpu_has_bf16.__wrapped__
    assert read(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"))
    assert read(_cpuinfo(tmp_path, "fpu sse2 avx2 amx_bf16 amx_tile"))
    assert not read(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512bw"))
    assert not read(tmp_path / "missing")


@pytest.mark.parametrize("device,asked,backend,runs", [
    ("cpu", "fp32", "torch", "fp32"),
    ("cpu", "fp16", "torch", "fp32"),            # fp16 is a CUDA precision
    ("cpu", "auto", "onnxruntime", "fp32"),      # ONNX Runtime runs fp32
    ("cpu", "bf16", "onnxruntime", "fp32"),
    ("cuda:0", "auto", "torch", "fp32"),         # measured on an H200: bf16 no faster
    ("cuda:0", "bf16", "torch", "bf16"),
    ("cuda:0", "fp16", "torch", "fp16"),
    ("mps", "bf16", "torch", "fp32"),
])
def test_the_precision_a_job_runs_at(device: str, asked: str, backend: str, runs: str) -> None:
    assert effective_precision(device, asked, backend) == runs


def test_the_supervisor_decides_precision_without_torch() -> None:
    """The supervisor keys its measurements by precision; deciding it imports no torch."""
    import subprocess
    import sys
    code = ("import sys; from stemd.engine.precision import choose_precision; "
            "print(choose_precision('cuda:1', 'fp16'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["fp16", "False"]


@pytest.mark.parametrize("asked", ["auto", "bf16"])
def test_a_cpu_runs_bf16_where_it_has_it_natively(asked: str) -> None:
    assert effective_precision("cpu", asked) == ("bf16" if cpu_has_bf16() else "fp32")


@NATIVE
@pytest.mark.parametrize("asked", ["auto", "bf16"])
def test_bf16_stems_on_the_cpu_are_close_to_fp32_but_computed_in_bf16(
        tiny: LoadedModel, make_wav: Callable[..., Path], tmp_path: Path, asked: str) -> None:
    """Without random shifts only the precision differs: bf16 stems about 50 dB from
    fp32's (docs/benchmarks.md); the same computation in fp32 would be above 90 dB."""
    path = make_wav(4.3)
    exact = run_stemd(tiny, path, tmp_path / "fp32", precision="fp32", shifts=0)
    fast = run_stemd(tiny, path, tmp_path / asked, precision=asked, shifts=0)
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    for name, stem in exact.stems.items():
        quality = sdr(read_wav(stem), read_wav(fast.stems[name]))
        assert 35 < quality < 90, (name, quality)   # near fp32, yet computed in bf16
