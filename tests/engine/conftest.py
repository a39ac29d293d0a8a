"""Fixtures of the engine tests: tiny real HTDemucs models and synthesized audio."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modelkit  # noqa: E402

from stemd.engine import load_model
from stemd.engine.models import LoadedModel
from stemd.engine.types import ModelSource

from .audio import write_wav  # noqa: E402

BACKENDS = ["torch", "onnxruntime"]


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repo")
    folder.chmod(0o755)
    return modelkit.make_repo(folder, "tiny")


@pytest.fixture(scope="session")
def tiny(tiny_repo: Path) -> LoadedModel:
    return load_model("tiny", ModelSource(repo=tiny_repo, offline=True), "cpu")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each engine backend; ONNX Runtime's tests skip where the extra is not installed."""
    if request.param == "onnxruntime":
        pytest.importorskip("onnxruntime")
    return str(request.param)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="session")
def tiny_on(tiny_repo: Path, backend: str, export_cache: Path) -> LoadedModel:
    """The tiny model run by ``backend`` (no silent fallback to torch)."""
    loaded = load_model("tiny", ModelSource(repo=tiny_repo, offline=True), "cpu", backend,
                        export_cache)
    assert loaded.backend == backend
    return loaded


@pytest.fixture()
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    """``make_wav(seconds, rate=44100, channels=2, seed=0, amplitude=1)`` -> a 16-bit wav of
    noise and tones."""
    def make(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0,
             name: str = "track.wav", amplitude: float = 1.0) -> Path:
        return write_wav(tmp_path / name, amplitude * synth(seconds, rate, channels, seed), rate)
    return make


def synth(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    t = np.arange(frames) / rate
    out = np.empty((channels, frames), dtype=np.float32)
    for c in range(channels):
        tone = 0.2 * np.sin(2 * np.pi * (110 * (c + 1)) * t)
        out[c] = tone + 0.05 * rng.standard_normal(frames) + 0.01
    return out
