"""InboxSpec: profiles of subfolders, settle time on network mounts, polling choice, validation."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemd.errors import ConfigError
from stemd.watch import Candidate, InboxSpec


def test_defaults(tmp_path: Path) -> None:
    spec = InboxSpec(path=tmp_path)
    assert (spec.profile, spec.settle_seconds, spec.network_settle_seconds) == ("default", None, 65.0)
    assert (spec.poll, spec.poll_interval, spec.rescan_interval) == ("auto", 5.0, 60.0)
    assert (spec.follow_symlinks, spec.extra_ignore, spec.exclude_dirs) == (False, (), ())
    assert spec.zero_tail_seconds == 60.0


def test_profile_from_the_first_matching_subfolder(tmp_path: Path) -> None:
    spec = InboxSpec(path=tmp_path, profile="base", subfolder_profiles={"karaoke": "kar", "six": "6s"})
    assert spec.profile_for(tmp_path / "song.wav") == "base"
    assert spec.profile_for(tmp_path / "karaoke" / "song.wav") == "kar"
    assert spec.profile_for(tmp_path / "Karaoke" / "deep" / "song.wav") == "kar"
    assert spec.profile_for(tmp_path / "other" / "six" / "karaoke" / "song.wav") == "6s"
    assert spec.profile_for(tmp_path / "karaoke.wav") == "base"      # a file, not a folder
    assert spec.profile_for(tmp_path / "elsewhere" / "song.wav") == "base"


def test_settle_time_on_network_mounts_unless_set(tmp_path: Path) -> None:
    unset = InboxSpec(path=tmp_path)
    assert (unset.settle_for(network=False), unset.settle_for(network=True)) == (5.0, 65.0)
    tuned = InboxSpec(path=tmp_path, network_settle_seconds=90)
    assert tuned.settle_for(network=True) == 90
    explicit = InboxSpec(path=tmp_path, settle_seconds=5.0)
    assert (explicit.settle_for(network=False), explicit.settle_for(network=True)) == (5.0, 5.0)


@pytest.mark.parametrize(("poll", "network", "polling"), [
    ("auto", False, False), ("auto", True, True), ("always", False, True), ("never", True, False),
])
def test_polling_choice(tmp_path: Path, poll: str, network: bool, polling: bool) -> None:
    assert InboxSpec(path=tmp_path, poll=poll).wants_polling(network) is polling  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", [
    {"poll": "sometimes"}, {"poll_interval": 0}, {"rescan_interval": -1}, {"settle_seconds": -1},
    {"extensions": frozenset()}, {"network_settle_seconds": 0},
])
def test_invalid_settings_are_config_errors(tmp_path: Path, fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        InboxSpec(path=tmp_path, **fields)  # type: ignore[arg-type]
    assert err.value.hint


def test_specs_and_candidates_are_frozen_and_hashable(tmp_path: Path) -> None:
    spec = InboxSpec(path=tmp_path, subfolder_profiles={"k": "karaoke"}, extensions=frozenset({".WAV"}))
    assert spec.extensions == {"wav"}
    with pytest.raises(AttributeError):
        spec.profile = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.subfolder_profiles["k"] = "y"  # type: ignore[index]
    candidate = Candidate(tmp_path / "a.wav", spec, "default", 1, 0.0)
    assert len({candidate, Candidate(tmp_path / "a.wav", spec, "default", 1, 0.0)}) == 1


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = InboxSpec(path=Path("in"), exclude_dirs=(Path("in/archive"),))
    assert spec.path == tmp_path / "in"
    assert spec.exclude_dirs == (tmp_path / "in" / "archive",)
