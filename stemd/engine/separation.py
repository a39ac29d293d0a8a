"""``separate``: one input file to stem files, streaming, in bounded memory."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch

from stemd.errors import DeviceError, EngineError, InvalidOption, OutOfMemory, StemdError
from stemd.engine.device import (CPU_FALLBACK_HINT, Runner, auto_batch_size, effective_precision,
                                 is_device_error, is_out_of_memory)
from stemd.engine.analysis import Metering
from stemd.engine.encoders import disk_full, is_disk_full, open_encoder
from stemd.engine.mixfile import PreparedMix, prepare_mix
from stemd.engine.models import LoadedModel
from stemd.engine.probing import probe
from stemd.engine.rawfile import RawReader
from stemd.engine.sinks import DirectSink, RescaleSink, SinkPump
from stemd.engine.stems import StemLayout, stem_layout
from stemd.engine.stream import MixWindows, StreamRunner, build_plan
from stemd.engine.types import ProgressFn, SeparationOptions, SeparationResult, StemAnalysis

log = logging.getLogger(__name__)

DECODE_SHARE, SEPARATE_SHARE = 0.05, 0.9


def prepare_input(model: LoadedModel, input: Path, workdir: Path) -> PreparedMix:
    """Probe and decode ``input`` for ``model`` (can run ahead of ``separate``)."""
    info = probe(input, decodable_check=False)
    return prepare_mix(input, info, model.samplerate, model.audio_channels, workdir)


def separate(model: LoadedModel, input: Path, opts: SeparationOptions, out_dir: Path,
             filename: Callable[[str], str], progress: ProgressFn, workdir: Path,
             prepared: Optional[PreparedMix] = None) -> SeparationResult:
    """Separate ``input`` into ``out_dir / filename(stem)`` for every stem."""
    check_options(model, opts)
    began = time.perf_counter()
    try:
        mix = prepared or prepare_input(model, input, workdir)
        progress(DECODE_SHARE)
        return _separate_mix(model, mix, opts, out_dir, filename, progress, workdir, began)
    except StemdError:
        raise
    except Exception as exc:
        raise _translate(exc, model.device) from exc


def check_options(model: LoadedModel, opts: SeparationOptions) -> None:
    if opts.two_stems is not None and opts.two_stems not in model.sources:
        raise InvalidOption(f"Stem {opts.two_stems!r} is not produced by model {model.name}.",
                            f"Use one of: {', '.join(model.sources)}.")
    if opts.segment is not None and not 0 < opts.segment <= model.max_segment:
        raise InvalidOption(f"Segment {opts.segment} s is not allowed for model {model.name}"
                            f" (at most {model.max_segment:g} s).",
                            "Leave segment unset, or lower it.")
    if not 0 <= opts.overlap < 1 or opts.shifts < 0 or opts.batch_size < 0:
        raise InvalidOption("overlap must be in [0, 1), shifts and batch_size >= 0.",
                            "Fix the profile's separation options.")


def _separate_mix(model: LoadedModel, mix: PreparedMix, opts: SeparationOptions,
                  out_dir: Path, filename: Callable[[str], str], progress: ProgressFn,
                  workdir: Path, began: float) -> SeparationResult:
    layout = stem_layout(model.sources, opts.two_stems, opts.other_method)
    opts = replace(opts, precision=effective_precision(model.device, opts.precision,
                                                       model.backend))
    pump = _open_sinks(layout, mix, opts, out_dir, filename, workdir)
    try:
        with RawReader(mix.path, mix.channels) as reader:
            members, sep_time = _run_model(model, mix, reader, opts, layout, pump, progress)
        started = time.perf_counter()
        pump.finish()
        encode_time = time.perf_counter() - started
    except BaseException:
        pump.abort()
        raise
    finally:
        mix.path.unlink(missing_ok=True)
    progress(1.0)
    timings = {"decode": mix.seconds, "separate": sep_time, "encode": encode_time,
               "total": time.perf_counter() - began}
    stems = {name: out_dir / filename(name) for name in layout.outputs}
    analysis = pump.analysis()
    skipped = _skip_silent(stems, analysis) if opts.skip_silent else ()
    return SeparationResult(
        stems, model.samplerate, model.audio_channels, mix.frames, mix.info, model.device,
        timings, tuple(model.sources), members, analysis, pump.quality_estimate(), skipped,
        provenance=provenance(model), backend=model.backend, precision=opts.precision)


def _skip_silent(stems: dict[str, Path], analysis: dict[str, StemAnalysis]) -> tuple[str, ...]:
    """Remove the files of silent stems (``skip_silent``); their names."""
    silent = tuple(name for name in stems if analysis[name].silent)
    for name in silent:
        stems[name].unlink(missing_ok=True)
        log.info("stem %s is silent: left out", name)
    return silent


def provenance(model: LoadedModel) -> dict[str, str]:
    """How the stems were made: the library versions and the model files' checksum."""
    import demucs
    return {"demucs": str(getattr(demucs, "__version__", "")), "torch": str(torch.__version__),
            "model_sha256": model.checksum}


def _open_sinks(layout: StemLayout, mix: PreparedMix, opts: SeparationOptions,
                out_dir: Path, filename: Callable[[str], str], workdir: Path) -> SinkPump:
    sinks: dict[str, DirectSink | RescaleSink] = {}
    try:
        for name in layout.outputs:
            opener = partial(open_encoder, out_dir / filename(name), opts.format,
                             mix.samplerate, mix.channels, mix.frames)
            sinks[name] = (RescaleSink(opener, workdir / f"stem-{name}.f32", mix.channels)
                           if opts.clip == "rescale" else DirectSink(opener(), opts.clip))
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    metering = Metering(mix.samplerate, mix.channels, layout.outputs, _sums_to_mix(layout))
    return SinkPump(sinks, metering=metering)


def _sums_to_mix(layout: StemLayout) -> bool:
    """Whether mix - sum of stems says something: not when one stem is mix minus the
    other (``minus``) or the rest is dropped (``none``)."""
    return layout.two_stems is None or layout.other_method == "add"


def _run_model(model: LoadedModel, mix: PreparedMix, reader: RawReader,
               opts: SeparationOptions, layout: StemLayout, pump: SinkPump,
               progress: ProgressFn) -> tuple[int, float]:
    started = time.perf_counter()
    plan = build_plan(model, mix.frames, layout.needed, opts.shifts, opts.overlap,
                      opts.segment)
    window = max(q[0].window for q in plan.queues.values() if q)
    runner = Runner(model.device, opts.precision, opts.tf32)
    batch = auto_batch_size(model.device, window, opts.batch_size)
    depth = 2 if runner.cuda else 1
    stream = StreamRunner(model, runner, MixWindows(reader, mix.mean, mix.std), batch, depth)
    log.debug("%d segments, batch %d, members %s", plan.total, batch, sorted(plan.queues))

    def emit(start: int, values: torch.Tensor) -> None:
        raw = torch.from_numpy(reader.read(start, start + values.shape[-1]))
        pump.put(layout.finish(values, mix.mean, mix.std, raw), raw)

    def tick(done: float) -> None:
        progress(DECODE_SHARE + (SEPARATE_SHARE - DECODE_SHARE) * done)

    stream.run(plan, emit, tick)
    return len(stream.members_run), time.perf_counter() - started


def _translate(exc: BaseException, device: str) -> Exception:
    if is_out_of_memory(exc):
        return OutOfMemory(f"Ran out of memory while separating: {exc}".strip(),
                           "Lower the batch size or the number of workers; the job is "
                           "retried with a smaller batch or on the CPU.")
    if is_device_error(exc, device):
        return DeviceError(f"The device {device} failed while separating: "
                           f"{type(exc).__name__}: {exc}", CPU_FALLBACK_HINT)
    if is_disk_full(exc):
        return disk_full(getattr(exc, "filename", None) and Path(exc.filename))
    return EngineError(f"Separation failed: {type(exc).__name__}: {exc}",
                       "The job will be retried; if it keeps failing, check the log.")
