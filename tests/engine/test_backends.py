"""The ONNX Runtime backend's export cache: reused, rebuilt, and verified before use."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

import modelkit
from stemd.engine import load_model
from stemd.engine.backends import device_key, expected_backend
from stemd.engine.models import LoadedModel
from stemd.engine.types import ModelSource

pytest.importorskip("onnxruntime")


def repo_with(folder: Path, seed: int) -> Path:
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    for old in folder.glob("*.th"):
        old.unlink()
    return modelkit.make_repo(folder, "tiny", seed=seed)


def load(repo: Path, cache: Path, backend: str = "onnxruntime") -> LoadedModel:
    return load_model("tiny", ModelSource(repo=repo, offline=True), "cpu", backend, cache)


def exports(cache: Path) -> dict[str, int]:
    """Cache file name -> modification time (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.onnx")}


def agrees_with_torch(loaded: LoadedModel) -> None:
    mix = 0.1 * torch.randn(1, 2, 50000, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours, theirs = loaded.forward(0)(mix), loaded.members[0](mix)
    noise = float(((ours - theirs) ** 2).sum())
    assert noise < 1e-6 * float((theirs ** 2).sum())    # above 60 dB


def test_second_load_reuses_the_export(tiny_repo: Path, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    load(tiny_repo, cache)
    first = exports(cache)
    assert len(first) == 1
    caplog.set_level(logging.INFO)
    loaded = load(tiny_repo, cache)
    assert loaded.backend == "onnxruntime"
    assert exports(cache) == first
    assert not [r for r in caplog.records if r.getMessage().startswith("exported")]
    agrees_with_torch(loaded)


def test_a_changed_model_is_exported_again(tmp_path: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    load(repo_with(repo, seed=0), cache)
    before = exports(cache)
    loaded = load(repo_with(repo, seed=5), cache)
    after = exports(cache)
    assert loaded.backend == "onnxruntime"
    assert len(after) == 2 and set(before) < set(after)
    agrees_with_torch(loaded)


def test_a_damaged_cache_file_is_exported_again(tiny_repo: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    load(tiny_repo, cache)
    (path,) = cache.glob("*.onnx")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])          # a copy cut short
    caplog.set_level(logging.WARNING)
    loaded = load(tiny_repo, cache)
    assert loaded.backend == "onnxruntime"
    assert path.read_bytes() == good
    assert any("damaged" in r.getMessage() for r in caplog.records)
    agrees_with_torch(loaded)


def test_an_export_that_disagrees_with_torch_falls_back(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The cache file for model A's key holds model B's network: the check catches it."""
    cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
    repo_a, repo_b = repo_with(tmp_path / "a", seed=0), repo_with(tmp_path / "b", seed=9)
    load(repo_a, cache_a)
    load(repo_b, cache_b)
    (a_file,) = cache_a.glob("*.onnx")
    (b_file,) = cache_b.glob("*.onnx")
    shutil.copy(b_file, a_file)
    shutil.copy(b_file.with_suffix(".sha256"), a_file.with_suffix(".sha256"))
    caplog.set_level(logging.WARNING)
    loaded = load(repo_a, cache_a)
    assert loaded.backend == "torch"
    assert loaded.forward(0) is loaded.members[0]
    assert any("agrees with torch" in r.getMessage() and "backend: torch" in r.getMessage()
               for r in caplog.records)
    assert not a_file.exists()                         # exported again on the next load
    assert load(repo_a, cache_a).backend == "onnxruntime"


def test_torch_and_auto(tiny_repo: Path, tmp_path: Path) -> None:
    assert load(tiny_repo, tmp_path / "c1", "torch").backend == "torch"
    assert not (tmp_path / "c1").exists()
    assert load(tiny_repo, tmp_path / "c2", "auto").backend == "onnxruntime"
    assert load(tiny_repo, None, "auto").backend == "torch"       # nowhere to cache
    assert expected_backend("auto", "cuda:0") == "torch"
    assert device_key("cpu", "onnxruntime") == "cpu-ort"
    assert device_key("cpu", "torch") == "cpu"
    assert device_key("cpu", "torch", "bf16") == "cpu-bf16"      # kept apart from fp32's
    assert device_key("gpu", "torch", "fp16") == "gpu-fp16"
