"""The ONNX Runtime backend: a member's network in an ORT session, STFT/iSTFT in torch.

One session per member, created once per worker with the settings measured in
docs/benchmarks.md: threads as torch's, no spin-waiting (spinning ORT threads slow
the torch STFT between calls), and ORT's own CPU arena off unless asked for (it
kept about 4 GB of RSS for the full-size htdemucs; the process allocator serves
ORT instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemd.engine.backends.split import network_inputs, split_forward, training_length

VERIFY_DB = 60.0        # the exported network must agree with torch's to this SDR
VERIFY_SEED = 1234


@dataclass(frozen=True)
class OrtSettings:
    arena: bool = False          # ORT's CPU memory arena
    mem_pattern: bool = True     # ORT's memory-pattern planning (fixed shapes)
    threads: int = 0             # intra-op threads; 0 = torch.get_num_threads()


def open_session(path: Path, settings: OrtSettings) -> Any:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = settings.arena
    options.enable_mem_pattern = settings.mem_pattern
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtForward:
    """Callable like the member: ``[B, C, n]`` mix -> ``[B, S, C, n]`` stems."""

    def __init__(self, model: Any, session: Any) -> None:
        self.model, self.session = model, session

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        return split_forward(self.model, mix, self.network)

    def network(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported network, one batch item per run (it is exported for batch 1)."""
        outs = [self.session.run(None, {"mag": _numpy(mag[i:i + 1]),
                                        "mix": _numpy(mix[i:i + 1])})
                for i in range(mag.shape[0])]
        if len(outs) == 1:
            return torch.from_numpy(outs[0][0]), torch.from_numpy(outs[0][1])
        return (torch.from_numpy(np.concatenate([o[0] for o in outs])),
                torch.from_numpy(np.concatenate([o[1] for o in outs])))


def agreement_db(model: Any, forward: OrtForward) -> float:
    """The lower SDR of the session's two outputs against torch's on a fixed input."""
    from stemd.engine.backends.split import Network
    generator = torch.Generator().manual_seed(VERIFY_SEED)
    mix = 0.1 * torch.randn(1, model.audio_channels, training_length(model),
                            generator=generator)
    with torch.inference_mode():
        mag, padded = network_inputs(model, mix)
        expected = Network(model).eval()(mag, padded)
        got = forward.network(mag, padded)
    return min(_sdr(e, g) for e, g in zip(expected, got))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().numpy(), dtype=np.float32)


def _sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    noise = float(((reference - estimate) ** 2).sum())
    signal = float((reference ** 2).sum())
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-20) / noise))
