"""Bags of models: weights like apply_model, and only the members a job needs run."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

import modelkit
from stemd.engine import load_model
from stemd.engine.models import LoadedModel
from stemd.engine.types import ModelSource

from .helpers import assert_matches, run_stemd

DIAGONAL = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]


@pytest.fixture(scope="module")
def specialists(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Like htdemucs_ft: four members, each weighted for one source only."""
    folder = tmp_path_factory.mktemp("ft")
    folder.chmod(0o755)
    modelkit.make_repo(folder, "tiny_ft", n_models=4, weights=DIAGONAL)
    return load_model("tiny_ft", ModelSource(repo=folder, offline=True))


def count_calls(model: LoadedModel) -> list[int]:
    calls = [0] * len(model.members)
    for index, member in enumerate(model.members):
        member.register_forward_hook(
            lambda module, args, out, i=index: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_two_stems_runs_only_the_needed_member(monkeypatch: pytest.MonkeyPatch,
                                               specialists: LoadedModel,
                                               make_wav: Callable[..., Path],
                                               tmp_path: Path) -> None:
    path = make_wav(2.6)
    calls = count_calls(specialists)
    result = run_stemd(specialists, path, tmp_path / "a", two_stems="vocals",
                       other_method="none")
    assert result.members_run == 1
    assert calls[:3] == [0, 0, 0] and calls[3] > 0, calls
    assert_matches(monkeypatch, specialists, path, tmp_path / "b", two_stems="vocals",
                   other_method="minus")


def test_all_stems_run_every_member(monkeypatch: pytest.MonkeyPatch, specialists: LoadedModel,
                                    make_wav: Callable[..., Path], tmp_path: Path) -> None:
    result = assert_matches(monkeypatch, specialists, make_wav(2.6), tmp_path, shifts=2)
    assert result.members_run == 4


def test_mixed_weights_match(monkeypatch: pytest.MonkeyPatch, make_wav: Callable[..., Path],
                             tmp_path: Path, backend: str, export_cache: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir(mode=0o755)
    modelkit.make_repo(folder, "mixed", n_models=2, weights=[[1, 0.5, 0, 2], [1, 1, 1, 0]])
    model = load_model("mixed", ModelSource(repo=folder, offline=True), "cpu", backend,
                       export_cache)
    assert model.backend == backend
    torch.manual_seed(0)
    result = assert_matches(monkeypatch, model, make_wav(3.1), tmp_path, shifts=1)
    assert result.members_run == 2
