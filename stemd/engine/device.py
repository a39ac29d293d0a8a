"""Run batches of segments through a model on the CPU, a CUDA GPU or Apple's MPS.

On CUDA the input is staged in pinned host memory and copied asynchronously;
the output comes back the same way, so the host prepares the next batch and
accumulates the previous one while the GPU computes (``submit`` returns before
the work is done; ``Pending.result`` waits). TF32 is CUDA-only. Autocast: bf16/fp16
on CUDA; bf16 on a CPU that computes it natively (AVX512-BF16 or AMX, where it
measured about 0.6x fp32's time at ~50 dB SDR against fp32: docs/benchmarks.md), fp32 elsewhere (``effective_precision``). On MPS each batch is copied to the
device and back (PyTorch's MPS backend has the FFTs demucs needs; the worker sets
``PYTORCH_ENABLE_MPS_FALLBACK=1`` so that any operator it lacks runs on the CPU).
A device that fails (not for lack of memory) is a ``DeviceError``: never permanent,
the next attempt runs on the CPU.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager, Optional

import numpy as np
import torch

from stemd.engine.precision import choose_precision


log = logging.getLogger(__name__)

CPU_MAX_BATCH = 1               # measured: batching segments is slower per segment on CPU
GPU_MAX_BATCH = 4               # measured on an H200: 4 beats 1, 2, 8 and 16 (docs/benchmarks.md)
MPS_MAX_BATCH = 16              # not measured on Apple GPUs
BYTES_PER_WINDOW_SAMPLE = 3000  # peak working memory of full-size htdemucs, fp32, per sample
MEMORY_SHARE = 0.5              # of free memory a batch may take
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_FALLBACK_HINT = "stemd retries the job on the CPU."
_DEVICE_WORDS = ("cuda", "mps", "metal", "device", "cublas", "cudnn", "nvrtc")


def auto_batch_size(device: str, window: int, requested: int = 0) -> int:
    """Segments per forward pass: ``requested``, else sized from free (V)RAM."""
    if requested > 0:
        return requested
    per_segment = BYTES_PER_WINDOW_SAMPLE * window
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        cap = GPU_MAX_BATCH
    elif device == "mps":                    # unified memory: the GPU shares the RAM
        import psutil
        free, cap = psutil.virtual_memory().available, MPS_MAX_BATCH
    else:
        import psutil
        free, cap = psutil.virtual_memory().available, CPU_MAX_BATCH
    return max(1, min(cap, int(free * MEMORY_SHARE // per_segment)))


class Pending:
    """A submitted batch; ``result()`` is ``[B, S, C, T]`` float32 on the CPU."""

    def __init__(self, out: torch.Tensor, event: Optional[Any] = None) -> None:
        self._out, self._event = out, event

    def result(self) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()
        return self._out


def effective_precision(device: str, precision: str, backend: str = "torch") -> str:
    """``choose_precision`` (stemd/engine/precision.py), with a log line when the job gets
    another precision than the one it asked for."""
    chosen = choose_precision(device, precision, backend)
    if precision not in ("auto", chosen):
        log.info("precision %s was asked for; running %s on %s (%s): bf16 needs a CPU with "
                 "AVX512-BF16 or AMX, fp16 a CUDA GPU, and ONNX Runtime runs fp32",
                 precision, chosen, device, backend)
    return chosen


class Runner:
    """Runs batches at ``precision`` as ``effective_precision`` resolved it."""

    def __init__(self, device: str, precision: str = "fp32", tf32: bool = True) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.precision = precision
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    def submit(self, model: Any, batch: np.ndarray) -> Pending:
        if self.cuda:
            return self._submit_cuda(model, batch)
        with torch.inference_mode(), self._autocast():   # the CPU, or MPS there and back
            return Pending(model(torch.from_numpy(batch).to(self.device)).float().cpu())

    def _submit_cuda(self, model: Any, batch: np.ndarray) -> Pending:
        host = torch.from_numpy(batch).pin_memory()
        with torch.inference_mode(), self._autocast():
            out = model(host.to(self.device, non_blocking=True)).float()
        back = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        back.copy_(out, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return Pending(back, event)

    def _autocast(self) -> ContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])


def is_device_error(exc: BaseException, device: str) -> bool:
    """An accelerator's own failure (a driver, an operator it lacks), not the input's."""
    if device == "cpu" or not isinstance(exc, (RuntimeError, NotImplementedError)):
        return False
    text = str(exc).lower()
    return any(word in text for word in _DEVICE_WORDS)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)
