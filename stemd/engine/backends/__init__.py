"""Engine backends: what runs a model member's forward pass (torch, or ONNX Runtime).

This module does not import torch: the supervisor uses it to predict which backend a
worker will end on (memory admission keys its measurements by it, and the allocator is
chosen per backend before the worker starts). ``stemd.engine.backends.select`` builds
the forwards inside the worker.
"""
from __future__ import annotations

import importlib.util
from typing import Literal

BackendSetting = Literal["auto", "torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
SHORT = {"torch": "", "onnxruntime": "ort"}


def ort_installed() -> bool:
    """ONNX Runtime is importable (the optional extra ``stemd[onnx]``)."""
    return importlib.util.find_spec("onnxruntime") is not None


def expected_backend(setting: str, device: str) -> str:
    """The backend a worker on ``device`` will try first: ONNX Runtime runs on CPU slots
    only, ``auto`` picks it there when it is installed."""
    if not device.startswith("cpu"):
        return "torch"
    if setting == "onnxruntime" or (setting == "auto" and ort_installed()):
        return "onnxruntime"
    return "torch"


def device_key(kind: str, backend: str, precision: str = "fp32") -> str:
    """The key measurements are kept under: ``cpu``, ``gpu``, ``cpu-ort``, and for another
    precision than fp32 ``cpu-bf16``, ``gpu-fp16`` ... (bf16 runs at about 0.6x fp32's
    time on a CPU: their figures are kept apart)."""
    short = SHORT.get(backend, backend)
    key = f"{kind}-{short}" if short else kind
    return key if precision == "fp32" else f"{key}-{precision}"
