"""The streaming, batched engine against demucs's apply_model on tiny models (every
backend: ``tiny_on`` runs each test once per backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from stemd.engine.models import LoadedModel
from stemd.errors import InvalidOption

from .audio import sdr
from .helpers import assert_matches, run_stemd


@pytest.mark.parametrize("seconds,rate,channels,shifts", [
    (1.3, 44100, 2, 1),        # shorter than one segment
    (5.3, 44100, 2, 0),        # not a multiple of the stride, no shift
    (4.1, 48000, 1, 2),        # mono, resampled, two shifts
    (3.0, 22050, 6, 1),        # multichannel (first two kept), upsampled
])
def test_matches_apply_model(monkeypatch: pytest.MonkeyPatch, tiny_on: LoadedModel,
                             make_wav: Callable[..., Path], tmp_path: Path, seconds: float,
                             rate: int, channels: int, shifts: int) -> None:
    path = make_wav(seconds, rate, channels)
    result = assert_matches(monkeypatch, tiny_on, path, tmp_path, shifts=shifts)
    assert result.sample_rate == 44100 and result.channels == 2


@pytest.mark.parametrize("batch_size", [2, 5])
def test_batched_matches_apply_model(monkeypatch: pytest.MonkeyPatch, tiny_on: LoadedModel,
                                     make_wav: Callable[..., Path], tmp_path: Path,
                                     batch_size: int) -> None:
    path = make_wav(6.7)
    assert_matches(monkeypatch, tiny_on, path, tmp_path, shifts=2, batch_size=batch_size)


def test_shorter_segment_and_overlap(monkeypatch: pytest.MonkeyPatch, tiny_on: LoadedModel,
                                     make_wav: Callable[..., Path], tmp_path: Path) -> None:
    path = make_wav(4.4)
    assert_matches(monkeypatch, tiny_on, path, tmp_path, segment=1.5, overlap=0.5)


@pytest.mark.parametrize("method", ["add", "minus", "none"])
def test_two_stems(monkeypatch: pytest.MonkeyPatch, tiny_on: LoadedModel,
                   make_wav: Callable[..., Path], tmp_path: Path, method: str) -> None:
    path = make_wav(3.2)
    result = assert_matches(monkeypatch, tiny_on, path, tmp_path, two_stems="vocals",
                            other_method=method)
    expected = {"vocals"} if method == "none" else {"vocals", "no_vocals"}
    assert set(result.stems) == expected


def test_unknown_two_stems_is_invalid(tiny: LoadedModel, make_wav: Callable[..., Path],
                                      tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="guitar"):
        run_stemd(tiny, make_wav(1.0), tmp_path, two_stems="guitar")


def test_segment_longer_than_model_is_invalid(tiny: LoadedModel,
                                              make_wav: Callable[..., Path],
                                              tmp_path: Path) -> None:
    with pytest.raises(InvalidOption, match="Segment"):
        run_stemd(tiny, make_wav(1.0), tmp_path, segment=3.0)


def test_memory_window_stays_bounded(monkeypatch: pytest.MonkeyPatch, tiny: LoadedModel,
                                     make_wav: Callable[..., Path], tmp_path: Path) -> None:
    """The overlap-add window never holds more than a few segments of a long track."""
    from stemd.engine import overlap
    sizes: list[int] = []
    grow = overlap.OverlapAdd._grow

    def spy(self: overlap.OverlapAdd, needed: int) -> None:
        grow(self, needed)
        sizes.append(self.buffer.shape[-1])

    monkeypatch.setattr(overlap.OverlapAdd, "_grow", spy)
    result = run_stemd(tiny, make_wav(24.0), tmp_path)
    segment = 2 * 44100
    assert result.frames == 24 * 44100
    assert max(sizes, default=1 << 16) <= 4 * segment


def test_progress_reaches_one(tiny: LoadedModel, make_wav: Callable[..., Path],
                              tmp_path: Path) -> None:
    from stemd.engine import separate
    from stemd.engine.types import SeparationOptions
    seen: list[float] = []
    separate(tiny, make_wav(2.5), SeparationOptions(), tmp_path / "o",
             lambda s: f"sub/{s}.wav", seen.append, tmp_path / "w")
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert sorted(p.name for p in (tmp_path / "o" / "sub").iterdir()) == [
        "bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert not list((tmp_path / "w").iterdir())


def test_plan_memory_does_not_grow_with_track_length(tiny: LoadedModel) -> None:
    """The plan lists every segment of the track up front; none may carry its own samples
    (a per-segment weight made a 10-minute track's worker 0.14 GB larger)."""
    import torch
    from stemd.engine.stream import build_plan

    def tensor_bytes(frames: int) -> tuple[int, int]:
        plan = build_plan(tiny, frames, [0, 1, 2, 3], 1, 0.25, None)
        segments = [s for q in plan.queues.values() for s in q]
        storages = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes()
                    for s in segments for v in vars(s).values() if isinstance(v, torch.Tensor)}
        return len(segments), sum(storages.values())

    short, long = tensor_bytes(60 * 44100), tensor_bytes(3600 * 44100)
    assert long[0] > 50 * short[0]
    assert long[1] == short[1]


@pytest.mark.parametrize("clip", ["clamp", "rescale"])
def test_stems_are_encoded_while_the_model_still_runs(tiny: LoadedModel,
                                                      make_wav: Callable[..., Path],
                                                      tmp_path: Path, clip: str) -> None:
    """Halfway through the model's work the stem files already hold samples: the
    encoder thread keeps up with the model instead of starting after it."""
    import time
    from stemd.engine import separate
    from stemd.engine.types import SeparationOptions
    out = tmp_path / "o"
    seen: list[int] = []

    def progress(fraction: float) -> None:
        if seen or not 0.5 <= fraction < 0.9:
            return
        deadline = time.monotonic() + 10       # the model waits while this looks
        while time.monotonic() < deadline:
            seen[:] = [p.stat().st_size for p in out.glob("*.wav")]
            if len(seen) == 4 and min(seen) > 44:
                return
            time.sleep(0.01)

    # a quiet mix keeps every stem below rescale's limit, so rescale streams too
    separate(tiny, make_wav(24.0, amplitude=0.01), SeparationOptions(clip=clip), out,
             lambda s: f"{s}.wav", progress, tmp_path / "w")
    assert len(seen) == 4 and min(seen) > 44, f"stem sizes halfway: {seen}"
    assert all(p.stat().st_size > max(seen) for p in out.glob("*.wav"))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_two_batches_in_flight_match_apply_model(monkeypatch: pytest.MonkeyPatch,
                                                 tiny: LoadedModel,
                                                 make_wav: Callable[..., Path],
                                                 tmp_path: Path, batch_size: int) -> None:
    """The loop CUDA runs (a second batch submitted before the first is collected), run on
    the CPU: samples are released only once no batch in flight can touch them."""
    import torch
    from stemd.engine.device import Runner
    from stemd.engine.rawfile import RawReader
    from stemd.engine.separation import prepare_input
    from stemd.engine.stream import MixWindows, StreamRunner, build_plan
    from .helpers import seeded_shifts
    from .reference import reference_stems
    path = make_wav(6.7)
    seeded_shifts(monkeypatch, 0)
    mix = prepare_input(tiny, path, tmp_path)
    plan = build_plan(tiny, mix.frames, [0, 1, 2, 3], 2, 0.25, None)
    pieces: list[tuple[int, torch.Tensor]] = []
    with RawReader(mix.path, mix.channels) as reader:
        stream = StreamRunner(tiny, Runner("cpu"), MixWindows(reader, mix.mean, mix.std),
                              batch_size, depth=2)
        stream.run(plan, lambda start, values: pieces.append((start, values)), lambda f: None)
    assert [p[0] for p in pieces] == sorted(p[0] for p in pieces)          # in track order
    ours = torch.cat([v for _, v in pieces], dim=-1) * mix.std + mix.mean
    seeded_shifts(monkeypatch, 0)
    reference = reference_stems(tiny, path, shifts=2)
    for k, name in enumerate(tiny.sources):
        theirs = reference[name].numpy()
        assert ours[k].shape == theirs.shape
        assert sdr(theirs, ours[k].numpy()) > 60, name
