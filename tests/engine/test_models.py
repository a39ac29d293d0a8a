"""Model lookup and loading through demucs's own loaders: repo folder, HF cache, refusals."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import modelkit
from stemd.engine import import_model, list_models, load_model, resolve_model
from stemd.engine.types import ModelSource
from stemd.errors import ModelUnavailable


def private_repo(folder: Path, name: str = "tiny", **kwargs: object) -> Path:
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    folder.chmod(0o755)
    return modelkit.make_repo(folder, name, **kwargs)  # type: ignore[arg-type]


def test_loads_th_from_private_repo(tmp_path: Path) -> None:
    repo = private_repo(tmp_path / "r")
    model = load_model("tiny", ModelSource(repo=repo, offline=True))
    assert model.sources == modelkit.SOURCES and model.samplerate == 44100
    assert model.max_segment == 2.0 and len(model.members) == 1
    assert resolve_model("tiny", ModelSource(repo=repo)).formats == ("th",)


def test_refuses_pickles_others_can_write(tmp_path: Path) -> None:
    repo = private_repo(tmp_path / "r")
    repo.chmod(0o777)
    with pytest.raises(ModelUnavailable, match="writable by other users") as caught:
        load_model("tiny", ModelSource(repo=repo, offline=True))
    assert "allow_pickle" in caught.value.hint
    assert load_model("tiny", ModelSource(repo=repo, offline=True, allow_pickle=True))


def test_prefers_safetensors(tmp_path: Path) -> None:
    repo = private_repo(tmp_path / "r")
    (th,) = repo.glob("*.th")
    sig = th.stem.split("-")[0]
    modelkit.save_safetensors(modelkit.build(seed=5), repo / f"{sig}.safetensors")
    th.write_bytes(b"not a pickle")            # would fail if it were loaded
    repo.chmod(0o777)                          # pickles refused, safetensors fine
    model = load_model("tiny", ModelSource(repo=repo, offline=True))
    assert model.info.formats == ("safetensors",)


def test_missing_model_says_how_to_get_it(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_hf_cache(tmp_path, monkeypatch)
    with pytest.raises(ModelUnavailable) as caught:
        load_model("htdemucs_ft", ModelSource(repo=tmp_path, offline=True))
    assert "stemd models fetch htdemucs_ft" in caught.value.hint
    assert "[models] repo" in caught.value.hint


def _empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as constants
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_loads_from_hf_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _empty_hf_cache(tmp_path, monkeypatch)
    members = [modelkit.build(seed=i) for i in range(2)]
    modelkit.install_in_hf_cache(cache, "htdemucs_ft", members)
    model = load_model("htdemucs_ft", ModelSource(offline=True))
    assert len(model.members) == 2 and model.info.where == "hf-cache"
    assert os.environ.get("HF_HUB_OFFLINE") != "1"    # restored after loading


def test_list_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_hf_cache(tmp_path, monkeypatch)
    repo = private_repo(tmp_path / "r", name="mine", n_models=2)
    found = {m.name: m for m in list_models(ModelSource(repo=repo, offline=True))}
    assert {"htdemucs", "htdemucs_ft", "mdx_extra_q", "mine"} <= set(found)
    assert found["mine"].available and found["mine"].members == 2
    assert not found["htdemucs"].available


def test_import_model(tmp_path: Path) -> None:
    src = private_repo(tmp_path / "src", name="mine")
    info = import_model(src, tmp_path / "dest")
    assert info.available and info.where == "repo"
    assert sorted(p.suffix for p in (tmp_path / "dest").iterdir()) == [".th", ".yaml"]
