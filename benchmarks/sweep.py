"""What each backend setting costs: ms per segment and peak RSS, fresh process each.

``python -m benchmarks.sweep`` (also run by ``benchmarks.run``) times the full-size
htdemucs forward pass on one fixed segment (1 x 2 x 343,980) for torch and ONNX
Runtime under each allocator (glibc, tcmalloc, jemalloc) and ORT's memory settings
(arena, memory pattern). The figures choose the defaults of ``stemd.engine.backends``
and ``stemd.worker.allocator``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .measure import measure

from stemd.worker.allocator import find_jemalloc, find_tcmalloc

JEMALLOC = str(find_jemalloc() or "jemalloc-not-installed")
TCMALLOC = str(find_tcmalloc() or "tcmalloc-not-installed")
# (backend, allocator, ORT arena, ORT memory pattern, precision)
VARIANTS: list[tuple[str, str, bool, bool, str]] = [
    ("torch", "system", False, False, "fp32"), ("torch", TCMALLOC, False, False, "fp32"),
    ("torch", JEMALLOC, False, False, "fp32"),
    ("torch", TCMALLOC, False, False, "bf16"), ("torch", JEMALLOC, False, False, "bf16"),
    ("onnxruntime", "system", False, True, "fp32"), ("onnxruntime", TCMALLOC, False, True, "fp32"),
    ("onnxruntime", JEMALLOC, False, True, "fp32"), ("onnxruntime", JEMALLOC, True, True, "fp32"),
    ("onnxruntime", JEMALLOC, False, False, "fp32"),
]


def sweep(repo: Path, model: str, cache: Path, threads: int, segments: int,
          env_for: Any) -> list[dict[str, Any]]:
    """Run every variant in its own process; ``env_for(allocator)`` gives its environment."""
    rows = []
    for backend, malloc, arena, pattern, precision in VARIANTS:
        if not Path(malloc).exists() and malloc != "system":
            continue
        cmd = [sys.executable, "-m", "benchmarks.sweep", "--child", "--repo", str(repo),
               "--model", model, "--cache", str(cache), "--threads", str(threads),
               "--segments", str(segments), "--backend", backend,
               "--arena", str(int(arena)), "--pattern", str(int(pattern)),
               "--precision", precision]
        result = measure(cmd, env_for(malloc))
        lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        if result.returncode != 0 or not lines:
            print(f"sweep variant {backend} {malloc} failed", file=sys.stderr)
            continue
        row = {**lines[-1], "allocator": Path(malloc).name.split(".")[0].replace("lib", ""),
               "arena": arena, "pattern": pattern, "peak_rss": result.peak_rss,
               "precision": precision}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _child(args: argparse.Namespace) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from stemd.engine import load_model
    from stemd.engine.backends.ort import OrtSettings
    from stemd.engine.backends.select import choose
    from stemd.engine.types import ModelSource
    from stemd.worker.allocator import in_use
    loaded = load_model(args.model, ModelSource(repo=args.repo, offline=True), "cpu")
    began = time.perf_counter()
    chosen = choose(loaded.members, "cpu", args.backend, args.cache,
                    OrtSettings(arena=bool(args.arena), mem_pattern=bool(args.pattern)))
    ready = time.perf_counter() - began
    assert chosen.backend == args.backend, chosen.note
    forward = chosen.forwards[0]
    from stemd.engine.backends.split import training_length
    mix = 0.1 * torch.randn(1, loaded.audio_channels, training_length(loaded.members[0]),
                            generator=torch.Generator().manual_seed(0))
    times = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), autocast:
        for _ in range(args.segments + 1):
            started = time.perf_counter()
            forward(mix)
            times.append(time.perf_counter() - started)
    print(json.dumps({"backend": args.backend, "malloc": in_use(), "ready_s": ready,
                      "first_ms": times[0] * 1000,
                      "ms": statistics.median(times[1:]) * 1000}), flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--arena", type=int, default=0)
    parser.add_argument("--pattern", type=int, default=1)
    parser.add_argument("--precision", default="fp32", help="fp32, or bf16 (torch only)")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = _parser().parse_args(argv)
    if args.child:
        _child(args)
        return
    from .run import _env
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import modelkit
    work = Path(__file__).resolve().parent / "out" / "sweep"
    repo = args.repo or modelkit.make_repo(work / "models", args.model, full_size=True)
    sweep(repo, args.model, args.cache or work / "cache", args.threads, args.segments, _env)


if __name__ == "__main__":
    main()
