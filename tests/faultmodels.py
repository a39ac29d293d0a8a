"""Test models that misbehave inside ``forward``: loaded through demucs's normal loaders.

They are the real HTDemucs with one change each, saved with ``modelkit.make_repo``
(the class is pickled by reference, so the worker imports this module: the
tests put this folder on ``PYTHONPATH``).
"""
from __future__ import annotations

import os
import signal
import time

import torch
from demucs.htdemucs import HTDemucs


class HangingHTDemucs(HTDemucs):
    """Never returns: a stuck driver or a deadlock."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        while True:
            time.sleep(1.0)


class CrashingHTDemucs(HTDemucs):
    """Kills its own process, as a segfault in a native library would."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGKILL)
        return mix


class OOMHTDemucs(HTDemucs):
    """Runs out of memory for batches of more than one segment."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        if mix.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().forward(mix)


class AlwaysOOMHTDemucs(HTDemucs):
    """Runs out of memory whatever the batch."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        raise MemoryError("cannot allocate")


class SlowHTDemucs(HTDemucs):
    """Takes its time (for tests that act while a job runs)."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        time.sleep(float(os.environ.get("STEMD_TEST_SLOW", "0.5")))
        return super().forward(mix)


class NoVocalsHTDemucs(HTDemucs):
    """Hears no vocals, as on an instrumental: its vocals source is always silent."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = super().forward(mix)
        out[:, self.sources.index("vocals")] = 0
        return out
