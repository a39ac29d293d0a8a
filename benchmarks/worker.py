"""A stemd worker for benchmarks: load the model once, separate files, print JSON lines.

``python -m benchmarks.worker --repo R --model M [--threads N] [--device D] FILE...``
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any, Optional


def main() -> None:
    args = _parser().parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from stemd.engine import load_model, separate
    from stemd.engine.types import ModelSource, OutputFormat, SeparationOptions
    began = time.perf_counter()
    model = load_model(args.model, ModelSource(repo=args.repo, offline=True), args.device,
                       args.backend, args.export_dir)
    from stemd.worker.allocator import in_use
    print(json.dumps({"event": "loaded", "seconds": time.perf_counter() - began,
                      "backend": model.backend, "malloc": in_use()}), flush=True)
    fmt = OutputFormat(wav_depth="float32") if args.float32 else OutputFormat()
    opts = SeparationOptions(model=args.model, precision=args.precision, shifts=args.shifts,
                             batch_size=args.batch_size, format=fmt, tf32=not args.no_tf32)
    cuda = args.device.startswith("cuda")
    for path in args.files:
        out = args.out / path.stem
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with GpuBusy(args.device) as busy:
            result = separate(model, path, opts, out, lambda s: f"{s}.wav", lambda f: None,
                              args.out / f".work-{path.stem}")
        vram = torch.cuda.max_memory_allocated() if cuda else 0
        print(json.dumps({"event": "done", "file": str(path), "timings": result.timings,
                          "frames": result.frames, "vram": vram, "gpu_busy": busy.share,
                          "batch_size": args.batch_size, "precision": result.precision}),
              flush=True)


class GpuBusy:
    """The GPU's mean utilization (NVML: share of time a kernel ran) while a file is
    separated, sampled every 20 ms in a thread; ``share`` is None without a CUDA GPU."""

    def __init__(self, device: str) -> None:
        self.share: Optional[float] = None
        self._handle, self._samples = _nvml_handle(device), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "GpuBusy":
        if self._handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._stop.set()
            self._thread.join()
            self.share = sum(self._samples) / len(self._samples) / 100 if self._samples else None

    def _sample(self) -> None:
        import pynvml
        while not self._stop.wait(0.02):
            self._samples.append(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)


def _nvml_handle(device: str) -> Any:
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
        pynvml.nvmlInit()
        index = int(device.partition(":")[2] or 0)
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:                          # no NVML: the share stays unknown
        return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="auto, fp32, bf16, fp16")
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--shifts", type=int, default=1, help="random shifts (0: none)")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--backend", default="torch", help="engine.backend: auto, torch, onnxruntime")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where exported networks are cached (engine.backend onnxruntime)")
    return parser


if __name__ == "__main__":
    main()
