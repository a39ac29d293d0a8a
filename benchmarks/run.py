"""Benchmark stemd's engine against the demucs CLI on the same files and model.

``python -m benchmarks.run`` builds the full-size htdemucs architecture with random
weights, synthesizes tracks, and runs in one go: the backend sweep (``sweep.py``), the
demucs CLI against stemd on each backend (3 x 30 s and one 5-minute track, alternating
round by round), and the best backend's peak RSS by track length. It prints the tables
and writes ``docs/benchmarks.md``. ``--quick`` uses a tiny model and short tracks.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from stemd.worker.allocator import preload

from .machine import describe
from .measure import Measured, measure, measure_parallel
from .report import write_report
from .tracks import write_track

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench"


@dataclass
class Setup:
    args: argparse.Namespace
    folder: Path
    repo: Path
    threads: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    compare: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    batch: list[dict[str, Any]] = field(default_factory=list)
    precision: list[dict[str, Any]] = field(default_factory=list)
    gpu: list[dict[str, Any]] = field(default_factory=list)


def main(argv: Optional[list[str]] = None) -> None:
    args = _parser().parse_args(argv)
    setup = _prepare(args)
    if args.sweep and args.device == "cpu":
        from .sweep import sweep
        setup.sweep = sweep(setup.repo, MODEL, setup.folder / "exports", setup.threads,
                            args.sweep_segments, _env)
        _write(setup)
    _warm_exports(setup)
    if args.compare:
        _compare_rows(setup)
    best = _best_backend(setup)
    for seconds in args.lengths:
        _length_row(setup, seconds, best)
    if args.batch_tracks:
        _batch_rows(setup)
    if args.device.startswith("cuda") and args.gpu_batches:
        _gpu_batch_rows(setup)
    if args.precision:
        _precision_rows(setup)
    print(_write(setup))


def _write(setup: Setup) -> str:
    """Write the report with what has been measured so far (after every run)."""
    return write_report(setup.args.report, describe(setup.args), setup.rows, setup.batch,
                        setup.precision, vars(setup.args), setup.compare, setup.sweep,
                        setup.gpu)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="torch:fp32,torch:bf16,onnxruntime",
                        help="stemd's engine backends to compare with the CLI, comma-separated, "
                             "each BACKEND[:PRECISION] (precision fp32 unless given)")
    parser.add_argument("--compare", default="3x30,1x300",
                        help="track sets of the comparison: COUNTxSECONDS, comma-separated "
                             "(empty: skip the comparison)")
    parser.add_argument("--compare-repeat", default="2,1",
                        help="rounds per track set (CLI and each backend alternate)")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the backend x allocator x ORT memory settings sweep")
    parser.add_argument("--sweep-segments", type=int, default=3)
    parser.add_argument("--lengths", type=_floats, default=[60, 600],
                        help="track lengths in seconds for the best backend's memory by "
                             "length (the 5-minute comparison run adds its own point)")
    parser.add_argument("--lengths-cli", action="store_true",
                        help="also run the CLI on each --lengths track")
    parser.add_argument("--batch-tracks", type=int, default=0,
                        help="how many 60 s tracks in the many-files run (0: skip)")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--layouts", default="",
                        help="processes x threads to try on the many-files run, e.g. 1x2,2x1 "
                             "(default: 1xN and Nx1 for N cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-precision", dest="precision", action="store_false",
                        help="skip the precision run (each mode's stems against fp32's)")
    parser.add_argument("--precision-seconds", type=float, default=60.0,
                        help="length of the precision run's track")
    parser.add_argument("--gpu-batches", default="1,2,4,8,16",
                        help="on a CUDA device: the batch sizes (segments per forward pass) "
                             "to time on one track of --precision-seconds; empty to skip")
    parser.add_argument("--gpu-batch-precisions", default="fp32,bf16",
                        help="the precisions of the batch-size run")
    parser.add_argument("--quick", action="store_true", help="tiny model, short tracks")
    parser.add_argument("--no-cli", action="store_true", help="skip the demucs CLI")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of CLI and daemon on the several-tracks run")
    parser.add_argument("--no-daemon", action="store_true",
                        help="skip the run through a real stemd daemon")
    parser.add_argument("--allocator", default="auto",
                        help="stemd's workers.allocator for its runs: auto, system or a library")
    parser.add_argument("--cli-allocator", default="system",
                        help="the malloc the demucs CLI runs with (as installed: system)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--report", type=Path, default=None,
                        help="where the report goes (docs/benchmarks.md; with --quick, "
                             "benchmarks-quick.md in --work)")
    return parser


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _prepare(args: argparse.Namespace) -> Setup:
    if args.quick:
        args.lengths, args.batch_seconds = [5.0, 20.0], 10.0
        args.compare, args.compare_repeat = "2x5,1x20", "1,1"
    if args.report is None:
        args.report = (args.work / "benchmarks-quick.md" if args.quick
                       else ROOT / "docs" / "benchmarks.md")
    folder = args.work
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sys.path.insert(0, str(ROOT / "tests"))
    import modelkit
    repo = folder / "models"
    modelkit.make_repo(repo, MODEL, full_size=not args.quick)
    os.chmod(repo, 0o755)
    return Setup(args, folder, repo, os.cpu_count() or 1)


def _engine_cmd(setup: Setup, files: list[Path], threads: int, out: Path,
                extra: tuple[str, ...] = (), backend: str = "torch") -> list[str]:
    """``backend`` is BACKEND[:PRECISION] (``--backends``)."""
    name, _, precision = backend.partition(":")
    return [sys.executable, "-m", "benchmarks.worker", "--repo", str(setup.repo),
            "--model", MODEL, "--out", str(out), "--threads", str(threads),
            "--device", setup.args.device, "--backend", name,
            "--precision", precision or "fp32",
            "--export-dir", str(setup.folder / "exports"), *extra, *map(str, files)]


def _cli_cmd(setup: Setup, files: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "demucs.separate", "-n", MODEL, "--repo", str(setup.repo),
            "-o", str(out), "-d", setup.args.device, *map(str, files)]


def _env(malloc: str = "system") -> dict[str, str]:
    """The environment of a run; ``malloc`` as in ``workers.allocator``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    preload(malloc, env)
    return env


def _stemd_env(setup: Setup, backend: str = "torch") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    preload(setup.args.allocator, env, backend)
    return env


def _cli_env(setup: Setup) -> dict[str, str]:
    return _env(setup.args.cli_allocator)


def _backends(setup: Setup) -> list[str]:
    return [b for b in setup.args.backends.split(",") if b]


def _warm_exports(setup: Setup) -> None:
    """Export each backend's network before the timed runs (once per model, then cached)."""
    track = write_track(setup.folder / "warm.wav", 1.0, seed=1)
    for backend in _backends(setup):
        if not backend.startswith("torch"):
            _engine_run(setup, [track], backend, setup.folder / "warm")


def _engine_run(setup: Setup, files: list[Path], backend: str, out: Path) -> Measured:
    name = backend.partition(":")[0]
    result = _checked(measure(_engine_cmd(setup, files, setup.threads, out, backend=backend),
                              _stemd_env(setup, name)), f"stemd ({backend})")
    loaded = _events(result, "loaded")[0]
    if loaded["backend"] != name:
        raise SystemExit(f"stemd ran on {loaded['backend']} instead of {name}")
    return result


def _compare_rows(setup: Setup) -> None:
    """For each track set: the CLI, then stemd on each backend, round after round."""
    repeats = [int(x) for x in setup.args.compare_repeat.split(",")]
    for index, spec in enumerate(setup.args.compare.split(",")):
        count, seconds = (float(x) for x in spec.split("x"))
        files = [write_track(setup.folder / f"set{index}-{i}.wav", seconds, seed=200 + i)
                 for i in range(int(count))]
        label = f"{int(count)} x {seconds:g} s"
        for round_ in range(repeats[min(index, len(repeats) - 1)]):
            _compare_round(setup, files, label, round_, seconds * count)


def _compare_round(setup: Setup, files: list[Path], label: str, round_: int,
                   audio: float) -> None:
    cli_out = setup.folder / "cli-set"
    if not setup.args.no_cli:
        cli = _checked(measure(_cli_cmd(setup, files, cli_out), _cli_env(setup)), "demucs")
        _add_compare(setup, label, "demucs CLI", round_, cli, audio)
    for backend in _backends(setup):
        out = setup.folder / f"stemd-{backend.replace(':', '-')}"
        run = _engine_run(setup, files, backend, out)
        engine = f"stemd {backend.partition(':')[0]} {_ran_at(run)}"
        _add_compare(setup, label, engine, round_, run, audio, spec=backend)


def _events(run: Measured, event: str) -> list[dict[str, Any]]:
    """The worker's JSON lines of one kind (``loaded``, ``done``)."""
    lines = (json.loads(x) for x in run.stdout.splitlines() if x.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def _ran_at(run: Measured) -> str:
    """The precision the worker reports it ran at (``fp32``, ``bf16``, ...)."""
    done = _events(run, "done")
    return done[0].get("precision", "fp32") if done else "fp32"


def _add_compare(setup: Setup, label: str, engine: str, round_: int, run: Measured,
                 audio: float, spec: Optional[str] = None) -> None:
    loaded = _events(run, "loaded")
    row = {"set": label, "engine": engine, "spec": spec, "round": round_, "wall": run.wall,
           "rss": run.peak_rss, "audio": audio,
           "malloc": loaded[0]["malloc"] if loaded else setup.args.cli_allocator,
           "load": loaded[0]["seconds"] if loaded else None}
    setup.compare.append(row)
    print(json.dumps(row), flush=True)
    _write(setup)


def _best_backend(setup: Setup) -> str:
    """The backend spec with the lowest median wall time on the last (longest) track set."""
    last = [r for r in setup.compare if setup.compare and r["set"] == setup.compare[-1]["set"]]
    walls = {spec: statistics.median(r["wall"] for r in last if r["spec"] == spec)
             for spec in dict.fromkeys(r["spec"] for r in last if r["spec"])}
    return min(walls, key=walls.__getitem__) if walls else _backends(setup)[0]


def _length_row(setup: Setup, seconds: float, backend: str) -> None:
    track = write_track(setup.folder / f"track-{seconds:g}s.wav", seconds, seed=int(seconds))
    engine = _engine_run(setup, [track], backend, setup.folder / "stemd")
    cli = None if setup.args.no_cli or not setup.args.lengths_cli else _checked(
        measure(_cli_cmd(setup, [track], setup.folder / "cli"), _cli_env(setup)), "demucs")
    row = {**_row(seconds, engine, cli), "backend": backend}
    setup.rows.append(row)
    print(json.dumps(row), flush=True)
    _write(setup)


def _row(seconds: float, engine: Measured, cli: Optional[Measured]) -> dict[str, Any]:
    done = _events(engine, "done")
    per_minute = 60.0 / seconds
    row = {"seconds": seconds, "stemd_wall": engine.wall, "stemd_rss": engine.peak_rss,
           "stemd_separate": sum(d["timings"]["total"] for d in done),
           "stemd_vram": max((d["vram"] for d in done), default=0),
           "stemd_s_per_min": engine.wall * per_minute}
    if cli is not None:
        row.update(cli_wall=cli.wall, cli_rss=cli.peak_rss, cli_s_per_min=cli.wall * per_minute,
                   ratio=engine.wall / cli.wall)
    return row


def _checked(result: Measured, what: str) -> Measured:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed with exit status {result.returncode}")
    return result


def _batch_tracks(setup: Setup) -> list[Path]:
    return [write_track(setup.folder / f"batch-{i}.wav", setup.args.batch_seconds, seed=100 + i)
            for i in range(setup.args.batch_tracks)]


def _batch_rows(setup: Setup) -> None:
    """CLI and daemon alternate for ``--repeat`` rounds (the machine's speed drifts)."""
    files = _batch_tracks(setup)
    for round_ in range(setup.args.repeat):
        if not setup.args.no_cli:
            cli = _checked(measure(_cli_cmd(setup, files, setup.folder / "cli-batch"),
                                   _cli_env(setup)), "demucs")
            _add_batch(setup, {"layout": "demucs CLI", "wall": cli.wall, "rss": cli.peak_rss,
                               "round": round_})
        if not setup.args.no_daemon:
            from .daemon import run_daemon
            row = run_daemon(setup.folder / "daemon", setup.repo, files, setup.args.device,
                             setup.args.allocator, _env())
            _add_batch(setup, {**row, "round": round_})
    for procs, threads in _layouts(setup):
        _add_batch(setup, _batch_layout(setup, files, procs, threads))


def _add_batch(setup: Setup, row: dict[str, Any]) -> None:
    setup.batch.append(row)
    print(json.dumps(row), flush=True)


def _layouts(setup: Setup) -> list[tuple[int, int]]:
    if setup.args.layouts:
        return [tuple(int(x) for x in item.split("x")) for item in setup.args.layouts.split(",")]
    cores = setup.threads
    return [(1, cores)] + ([(cores, 1)] if cores > 1 else [])


def _batch_layout(setup: Setup, files: list[Path], procs: int, threads: int) -> dict[str, Any]:
    shares = [files[i::procs] for i in range(procs)]
    cmds = [_engine_cmd(setup, share, threads, setup.folder / f"stemd-{procs}x{threads}")
            for share in shares if share]
    wall, results = measure_parallel(cmds, _stemd_env(setup))
    if any(r.returncode for r in results):
        raise SystemExit(f"stemd {procs}x{threads} failed")
    return {"layout": f"stemd {procs} process(es) x {threads} thread(s)", "wall": wall,
            "rss": max(r.peak_rss for r in results)}


PRECISIONS = {"cpu": [("fp32", ()), ("bf16", ("--precision", "bf16"))],
              "cuda": [("fp32 (TF32 off)", ("--no-tf32",)), ("fp32 + TF32", ()),
                       ("bf16", ("--precision", "bf16")), ("fp16", ("--precision", "fp16"))]}


def _precision_track(setup: Setup) -> Path:
    """The track of the precision and GPU batch runs, written once per length."""
    seconds = setup.args.precision_seconds
    path = setup.folder / f"precision-{seconds:g}s.wav"
    return path if path.exists() else write_track(path, seconds, seed=7)


def _precision_rows(setup: Setup) -> None:
    """Each precision on one track without random shifts (so only the precision differs),
    float wav: times, peak VRAM and the SDR of each stem against the first mode's."""
    track = _precision_track(setup)
    stems: dict[str, Path] = {}
    for name, extra in PRECISIONS["cuda" if setup.args.device.startswith("cuda") else "cpu"]:
        out = setup.folder / f"prec-{len(stems)}"
        cmd = _engine_cmd(setup, [track], setup.threads, out, ("--float32", "--shifts", "0"))
        result = _checked(measure(cmd + list(extra), _stemd_env(setup)), name)
        stems[name] = out / track.stem
        setup.precision.append({"mode": name, "wall": result.wall, "ran": _ran_at(result),
                                **_done_figures(result)})
        _write(setup)
    reference = stems[next(iter(stems))]
    for row in setup.precision:
        row["stems"] = _stem_sdrs(reference, stems[row["mode"]])
        row["sdr"] = statistics.median(row["stems"].values())


def _done_figures(run: Measured) -> dict[str, Any]:
    """The worker's own figures for its (first) file: phase times, VRAM, GPU busy share."""
    done = _events(run, "done")
    if not done:
        return {}
    return {**done[0]["timings"], "vram": done[0].get("vram", 0),
            "gpu_busy": done[0].get("gpu_busy")}


def _gpu_batch_rows(setup: Setup) -> None:
    """On a CUDA GPU: each batch size on one track at fp32 and bf16 (shifts as in a job)."""
    track = _precision_track(setup)
    for precision in setup.args.gpu_batch_precisions.split(","):
        for size in (int(x) for x in setup.args.gpu_batches.split(",") if x):
            out = setup.folder / "gpu-batch"
            cmd = _engine_cmd(setup, [track], setup.threads, out,
                              ("--batch-size", str(size), "--precision", precision))
            result = _checked(measure(cmd, _stemd_env(setup)), f"batch size {size}")
            row = {"precision": precision, "batch": size, "wall": result.wall,
                   "rss": result.peak_rss, "audio": setup.args.precision_seconds,
                   **_done_figures(result)}
            setup.gpu.append(row)
            print(json.dumps(row), flush=True)
            _write(setup)


def _stem_sdrs(reference: Path, estimate: Path) -> dict[str, float]:
    """Each stem's SDR (dB) of ``estimate`` against ``reference``."""
    from tests.engine.audio import read_wav, sdr
    values = {}
    for ref in sorted(reference.glob("*.wav")):
        theirs, ours = read_wav(ref), read_wav(estimate / ref.name)
        frames = min(theirs.shape[-1], ours.shape[-1])
        values[ref.stem] = sdr(theirs[..., :frames], ours[..., :frames])
    return values


if __name__ == "__main__":
    main()
