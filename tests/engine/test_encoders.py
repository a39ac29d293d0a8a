"""Encoders fed chunk by chunk write the same files as demucs's whole-track save_audio."""
from __future__ import annotations

import subprocess
from typing import Optional
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs.audio import save_audio

from stemd.engine.encoders import Encoder, open_encoder
from stemd.engine.sinks import DirectSink, RescaleSink, SinkPump
from stemd.engine.types import OutputFormat

RATE = 44100
FORMATS = {
    "wav16": (OutputFormat("wav", "int16"), dict(bits_per_sample=16)),
    "wav24": (OutputFormat("wav", "int24"), dict(bits_per_sample=24)),
    "wavf32": (OutputFormat("wav", "float32"), dict(as_float=True)),
    "flac16": (OutputFormat("flac", "int16"), dict(bits_per_sample=16)),
    "flac24": (OutputFormat("flac", "int24"), dict(bits_per_sample=24)),
    "mp3": (OutputFormat("mp3", mp3_bitrate=192, mp3_preset=5), dict(bitrate=192, preset=5)),
}


def loud_stem(seconds: float = 2.3, peak: float = 1.7, at: int = 1234,
              level: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    wav = (torch.randn(2, int(seconds * RATE), generator=gen) * level).clamp(-0.9, 0.9)
    wav[0, at] = peak
    return wav


def write_chunked(path: Path, fmt: OutputFormat, wav: torch.Tensor, clip: str,
                  tmp: Path, sizes: tuple[int, ...] = (1000, 7777, 44100),
                  opened: Optional[list[Path]] = None) -> Path:
    def opener() -> Encoder:
        (opened if opened is not None else []).append(path)
        return open_encoder(path, fmt, RATE, wav.shape[0], wav.shape[1])
    sink = (RescaleSink(opener, tmp / "spool.f32", wav.shape[0]) if clip == "rescale"
            else DirectSink(opener(), clip))
    start, i = 0, 0
    while start < wav.shape[1]:
        step = sizes[i % len(sizes)]
        sink.write(wav[:, start:start + step].clone())
        start, i = start + step, i + 1
    sink.close()
    return path


def decoded(path: Path) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s32le", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, "<i4")


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("clip", ["rescale", "clamp", "none"])
def test_incremental_equals_whole_track(tmp_path: Path, name: str, clip: str) -> None:
    if name == "mp3" and clip != "rescale":
        pytest.skip("one clip mode is enough for the slow mp3 encoder")
    fmt, kwargs = FORMATS[name]
    wav = loud_stem()
    ext = fmt.kind
    whole = tmp_path / f"whole.{ext}"
    save_audio(wav.clone(), whole, RATE, clip=clip, **kwargs)
    ours = write_chunked(tmp_path / f"ours.{ext}", fmt, wav, clip, tmp_path)
    if fmt.kind == "flac":
        assert np.array_equal(decoded(ours), decoded(whole))
    else:
        assert ours.read_bytes() == whole.read_bytes()
    assert not (tmp_path / "spool.f32").exists()


SHAPES = {"quiet": dict(peak=0.95), "peak early": dict(peak=1.7, at=1234),
          "peak in the last chunk": dict(peak=1.3, at=int(2.3 * RATE) - 10)}


@pytest.mark.parametrize("name", ["wav16", "flac16", "mp3"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_rescale_streams_or_encodes_again_as_the_peak_requires(tmp_path: Path, name: str,
                                                               shape: str) -> None:
    """Streamed while no scaling is needed; encoded again from the spool once it is."""
    fmt, kwargs = FORMATS[name]
    wav = loud_stem(**SHAPES[shape])
    whole = tmp_path / f"whole.{fmt.kind}"
    save_audio(wav.clone(), whole, RATE, clip="rescale", **kwargs)
    opened: list[Path] = []
    ours = write_chunked(tmp_path / f"ours.{fmt.kind}", fmt, wav, "rescale", tmp_path,
                         opened=opened)
    if fmt.kind == "flac":
        assert np.array_equal(decoded(ours), decoded(whole))
    else:
        assert ours.read_bytes() == whole.read_bytes()
    assert len(opened) == (1 if shape == "quiet" else 2)     # encoded once, or again scaled
    assert not (tmp_path / "spool.f32").exists()


def test_rescale_is_whole_stem(tmp_path: Path) -> None:
    """The peak in the first chunk scales samples of every later chunk."""
    from .audio import read_wav
    wav = loud_stem(peak=3.0)
    path = write_chunked(tmp_path / "s.wav", OutputFormat("wav", "float32"), wav, "rescale",
                         tmp_path)
    assert np.allclose(read_wav(path), (wav / (1.01 * 3.0)).numpy(), atol=1e-7)


def _pump_of_loud_stems(out: Path, spools: Path, fmt: OutputFormat, count: int = 4,
                        seconds: float = 2.3) -> tuple["SinkPump", dict[str, torch.Tensor]]:
    from functools import partial
    stems = {f"s{n}": loud_stem(seconds=seconds, peak=1.2 + n, at=100 * n) for n in range(count)}
    frames = next(iter(stems.values())).shape[1]
    sinks = {name: RescaleSink(partial(open_encoder, out / f"{name}.{fmt.kind}", fmt, RATE, 2,
                                       frames), spools / f"{name}.f32", 2) for name in stems}
    return SinkPump(sinks), stems


def _feed(pump: "SinkPump", stems: dict[str, torch.Tensor]) -> None:
    frames = next(iter(stems.values())).shape[1]
    for start in range(0, frames, 30000):
        pump.put({name: wav[:, start:start + 30000].clone() for name, wav in stems.items()})


def test_several_stems_needing_scaling_are_each_encoded_right(tmp_path: Path) -> None:
    """The stems that are encoded again at the end (side by side) each equal demucs's
    whole-stem rescale."""
    fmt, kwargs = FORMATS["wav16"]
    pump, stems = _pump_of_loud_stems(tmp_path, tmp_path, fmt)
    _feed(pump, stems)
    pump.finish()
    for name, wav in stems.items():
        whole = tmp_path / f"whole-{name}.wav"
        save_audio(wav.clone(), whole, RATE, clip="rescale", **kwargs)
        assert (tmp_path / f"{name}.wav").read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob("*.f32"))


@pytest.mark.parametrize("full", ["stems", "spools"])
def test_a_disk_filling_up_leaves_no_stem_and_no_spool(tmp_path: Path, full: str,
                                                       mount_tmpfs) -> None:
    """A real full disk (a small tmpfs) under the stems (while they are encoded again at
    the end) or under the spools (while the samples arrive): the error is the disk's, and
    after the abort no stem and no spool is left."""
    small = mount_tmpfs(tmp_path / "small", "2m")
    out, spools = (small, tmp_path) if full == "stems" else (tmp_path, small)
    pump, stems = _pump_of_loud_stems(out, spools, FORMATS["wav16"][0], seconds=6.0)
    with pytest.raises(OSError) as caught:       # 4 stems of 1 MB (spools 2 MB) into 2 MB
        _feed(pump, stems)
        pump.finish()
    assert caught.value.errno == 28              # ENOSPC
    pump.abort()
    assert not list(out.glob("*.wav")) and not list(spools.glob("*.f32"))


def test_a_stalled_encoder_holds_back_the_model_not_the_memory(tmp_path: Path) -> None:
    """On a fast GPU the model outruns the encoders; while an encoder is stalled (its
    ffmpeg stopped with SIGSTOP, as on a hung network share) the pump takes in only
    about two large chunks besides the one being written, however large the chunks a
    big batch makes, so a long track cannot pile up in memory. Once ffmpeg goes on,
    every chunk is written."""
    import os
    import signal
    import threading
    import time
    from stemd.engine.sinks import MAX_QUEUED_FRAMES
    chunk = MAX_QUEUED_FRAMES // 2
    encoder = open_encoder(tmp_path / "s.flac", OutputFormat("flac"), RATE, 2, 5 * chunk)
    pump = SinkPump({"s": DirectSink(encoder, "clamp")})
    os.kill(encoder._proc.pid, signal.SIGSTOP)
    accepted: list[int] = []

    def produce() -> None:
        for n in range(5):
            pump.put({"s": torch.full((2, chunk), 0.01 * (n + 1))})
            accepted.append(n)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        time.sleep(2.0)
        held = len(accepted)
    finally:
        os.kill(encoder._proc.pid, signal.SIGCONT)
    producer.join(60)
    pump.finish()
    assert held == 3                       # one being written, two waiting (2 x chunk)
    assert len(accepted) == 5
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=duration_ts",
                          "-of", "csv=p=0", str(tmp_path / "s.flac")], capture_output=True,
                         text=True, check=True).stdout
    assert int(out.strip()) == 5 * chunk
