"""Where finished stem samples go: the clip strategy in front of an encoder.

``rescale`` (demucs's default) divides the whole stem by ``max(1.01 * max|x|, 1)``,
which is known only at the end. The samples are encoded as they arrive and also
spooled as raw float32 to the work folder while the maximum is tracked; only a stem
that turns out to need scaling is read back and encoded again. ``clamp`` and
``none`` encode as the samples arrive. With a ``Metering``, each stem's levels are
measured on the way, as written (see ``analysis.py``).
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import torch

from stemd.engine.analysis import Metering
from stemd.engine.encoders import Encoder
from stemd.engine.rawfile import RawReader, RawWriter
from stemd.engine.types import QualityEstimate, StemAnalysis

log = logging.getLogger(__name__)

READBACK_FRAMES = 1 << 18
# What the model may run ahead of the encoders by (~48 s at 44.1 kHz; one larger chunk is
# always taken): a fast GPU outruns them, and a count of chunks would let a big batch's
# chunks (~94 s each at 16 segments) pile up by the gigabyte (measured: docs/benchmarks.md).
MAX_QUEUED_FRAMES = 1 << 21


class DirectSink:
    """``clamp`` / ``none``: clip each chunk and encode it at once."""

    def __init__(self, encoder: Encoder, clip: str) -> None:
        self.encoder, self.clip = encoder, clip

    def write(self, chunk: torch.Tensor) -> None:
        if self.clip == "clamp":
            chunk = chunk.clamp(-0.99, 0.99)
        self.encoder.write(chunk)

    def written(self, chunk: torch.Tensor) -> torch.Tensor:
        """The samples the file gets for ``chunk`` (encoders clip at full scale)."""
        return chunk.clamp(-0.99, 0.99) if self.clip == "clamp" else chunk.clamp(-1, 1)

    def gain(self) -> float:
        return 1.0

    def close(self) -> None:
        self.encoder.close()

    def abort(self) -> None:
        self.encoder.abort()


class RescaleSink:
    """``rescale``: encode the samples as they arrive while tracking the peak and spooling
    them. A stem whose peak stays below 1 / 1.01 is not scaled, so that encoding is the
    file; once the peak passes it, the streamed file is dropped and the stem is encoded
    again from the spool at the end, divided by 1.01 x its peak."""

    def __init__(self, open_encoder: Callable[[], Encoder], spool: Path, channels: int) -> None:
        self.open_encoder, self.spool = open_encoder, spool
        self.encoder: Optional[Encoder] = open_encoder()        # None once scaling is needed
        self._writer: Optional[RawWriter] = RawWriter(spool, channels)
        self.channels = channels
        self.peak = torch.zeros((), dtype=torch.float32)

    def write(self, chunk: torch.Tensor) -> None:
        assert self._writer is not None
        self.peak = torch.maximum(self.peak, chunk.abs().max())
        self._writer.write(chunk.numpy())
        if self.encoder is not None and 1.01 * self.peak >= 1:
            self.encoder.abort()
            self.encoder = None
        if self.encoder is not None:
            self.encoder.write(chunk)

    def close(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        if self.encoder is None:
            self._encode_scaled(self.open_encoder())
        else:
            self.encoder.close()
        self.spool.unlink(missing_ok=True)

    def written(self, chunk: torch.Tensor) -> torch.Tensor:
        """The samples the file gets for ``chunk``, before the final ``gain()``."""
        return chunk

    def gain(self) -> float:
        """1, or 1 / (1.01 x peak) for a stem that needed scaling (known at the end)."""
        scale = 1.01 * self.peak
        return 1.0 / float(scale) if bool(scale >= 1) else 1.0

    def _encode_scaled(self, encoder: Encoder) -> None:
        self.encoder = encoder
        scale = 1.01 * self.peak
        with RawReader(self.spool, self.channels) as reader:
            for start in range(0, reader.frames, READBACK_FRAMES):
                chunk = torch.from_numpy(reader.read(start, start + READBACK_FRAMES)[
                    :, : reader.frames - start])
                encoder.write(chunk / scale)
        encoder.close()

    def abort(self) -> None:
        self.spool.unlink(missing_ok=True)
        if self.encoder is not None:
            self.encoder.abort()
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:  # a full disk cannot take the buffered rest; the spool is gone
                pass


Chunks = tuple[dict[str, torch.Tensor], Optional[torch.Tensor], int]   # stems, mix, frames


class SinkPump:
    """Feeds the sinks from a background thread so encoding overlaps the model's work;
    the stems of a chunk are written side by side, and with a ``Metering`` measured beside
    the encoders. ``put`` waits while more than ``max_frames`` wait to be written."""

    def __init__(self, sinks: dict[str, "DirectSink | RescaleSink"],
                 max_frames: int = MAX_QUEUED_FRAMES,
                 metering: Optional[Metering] = None) -> None:
        self.sinks = sinks
        self.metering = metering
        self._queue: queue.Queue[Optional[Chunks]] = queue.Queue()
        self._room = FrameBudget(max_frames)
        self._error: Optional[BaseException] = None
        self._writers = ThreadPoolExecutor(max_workers=max(1, len(sinks)),
                                           thread_name_prefix="stemd-write")
        self._thread = threading.Thread(target=self._loop, name="stemd-encode", daemon=True)
        self._thread.start()

    def put(self, chunks: dict[str, torch.Tensor], mix: Optional[torch.Tensor] = None) -> None:
        """The next finished samples of every stem (before clipping), and of the mix."""
        self._raise()
        frames = max((chunk.shape[-1] for chunk in chunks.values()), default=0)
        self._room.take(frames)
        self._queue.put((chunks, mix, frames))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._writers.shutdown()
        if self.metering is not None:
            self.metering.close()
        self._raise()
        _close_all(list(self.sinks.values()))

    def analysis(self) -> dict[str, StemAnalysis]:
        """Each stem's levels as written (after ``finish``); empty without a ``Metering``."""
        if self.metering is None:
            return {}
        return self.metering.results({name: sink.gain() for name, sink in self.sinks.items()})

    def quality_estimate(self) -> Optional[QualityEstimate]:
        return self.metering.quality.result() if self.metering is not None else None

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._writers.shutdown()
        if self.metering is not None:
            self.metering.close(wait=False)
        for sink in self.sinks.values():
            try:
                sink.abort()
            except Exception as exc:  # cleanup of a failed job: log and go on
                log.warning("could not remove a partial stem: %s", exc)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            chunks, mix, frames = item
            self._room.give(frames)
            if self._error is not None:
                continue
            try:
                if self.metering is not None:
                    self.metering.add({name: self.sinks[name].written(chunk)
                                       for name, chunk in chunks.items()}, chunks, mix)
                self._write(chunks)
            except BaseException as exc:
                self._error = exc

    def _write(self, chunks: dict[str, torch.Tensor]) -> None:
        """Each stem's chunk on its own thread (the encoders release the GIL); all done
        before the next chunk, so each file gets its chunks in order."""
        writing = [self._writers.submit(self.sinks[name].write, chunk)
                   for name, chunk in chunks.items()]
        for done in writing:
            done.result()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class FrameBudget:
    """How many frames may wait in the queue; one chunk is always let in when none wait."""

    def __init__(self, limit: int) -> None:
        self.limit, self.queued = limit, 0
        self._changed = threading.Condition()

    def take(self, frames: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.queued == 0
                                   or self.queued + frames <= self.limit)
            self.queued += frames

    def give(self, frames: int) -> None:
        with self._changed:
            self.queued -= frames
            self._changed.notify_all()


def _close_all(sinks: list["DirectSink | RescaleSink"]) -> None:
    """Close the sinks side by side: a stem that needs scaling is encoded again from its
    spool on close, and several such stems share the job's tail instead of queueing."""
    with ThreadPoolExecutor(max_workers=max(1, len(sinks)),
                            thread_name_prefix="stemd-close") as pool:
        closing = [pool.submit(sink.close) for sink in sinks]
    for done in closing:
        done.result()
