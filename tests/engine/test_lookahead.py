"""Lookahead: an input decoded ahead is used only for its job and an unchanged file."""
from __future__ import annotations

import os

import numpy as np

from stemd.engine import prepare_input
from stemd.engine.rawfile import RawReader
from stemd.worker.lookahead import Lookahead


def test_the_decoded_input_is_the_same_as_decoding_it_for_the_task(tiny, make_wav, tmp_path):
    track = make_wav(3.0, rate=48000, channels=1)
    ahead = Lookahead()
    ahead.start(tiny, "tiny", 7, str(track), str(tmp_path / "work" / "ahead"))
    mix = ahead.take(7, str(track), "tiny")
    direct = prepare_input(tiny, track, tmp_path / "direct")
    assert mix is not None and (mix.frames, mix.mean, mix.std) == (direct.frames, direct.mean, direct.std)
    with RawReader(mix.path, mix.channels) as a, RawReader(direct.path, direct.channels) as b:
        assert np.array_equal(a.read(0, a.frames), b.read(0, b.frames))


def test_another_job_or_model_throws_the_decoded_input_away(tiny, make_wav, tmp_path):
    track = make_wav(1.0)
    ahead = Lookahead()
    for job_id, model in ((8, "tiny"), (7, "htdemucs")):
        folder = tmp_path / f"ahead-{job_id}-{model}"
        ahead.start(tiny, "tiny", 7, str(track), str(folder))
        assert ahead.take(job_id, str(track), model) is None
        assert not folder.exists() and ahead.current is None


def test_an_input_changed_after_decoding_ahead_is_decoded_again(tiny, make_wav, tmp_path):
    track = make_wav(1.0)
    ahead = Lookahead()
    ahead.start(tiny, "tiny", 7, str(track), str(tmp_path / "ahead"))
    ahead.current.done.wait()
    make_wav(1.5, seed=3)                                # the same name, new content
    os.utime(track, ns=(0, 10**18))
    assert ahead.take(7, str(track), "tiny") is None
    assert not (tmp_path / "ahead").exists()


def test_an_undecodable_input_is_left_to_the_task(tiny, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really audio")
    ahead = Lookahead()
    ahead.start(tiny, "tiny", 7, str(bad), str(tmp_path / "ahead"))
    assert ahead.take(7, str(bad), "tiny") is None
