"""A file cut off by an unfinished copy is refused, whatever its format, not separated."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stemd.engine.models import LoadedModel
from stemd.errors import InputError

from .helpers import run_stemd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audio import info, make_track  # noqa: E402


@pytest.mark.parametrize("ext,keep", [("mp3", 700), ("flac", 60_000)])
def test_a_cut_off_file_fails_permanently_saying_so(tiny: LoadedModel, tmp_path: Path,
                                                     ext: str, keep: int) -> None:
    whole = make_track(tmp_path / f"whole.{ext}", 3.0)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole.read_bytes()[:keep])
    assert info(cut)["duration"] > 2.9                 # the header still says 3 s
    with pytest.raises(InputError, match="looks cut off") as caught:
        run_stemd(tiny, cut, tmp_path)
    assert caught.value.permanent and "deliver the file again" in caught.value.hint
    assert not list((tmp_path / "out").glob("*.wav"))


def test_the_whole_file_separates(tiny: LoadedModel, tmp_path: Path) -> None:
    whole = make_track(tmp_path / "whole.mp3", 3.0)
    result = run_stemd(tiny, whole, tmp_path)
    assert abs(result.frames / result.sample_rate - 3.0) < 0.1
