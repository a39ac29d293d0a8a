"""The reference: demucs's own pipeline (ffmpeg decode, convert_audio, apply_model)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import torch
from demucs.apply import apply_model
from demucs.audio import AudioFile, convert_audio

from stemd.engine.models import LoadedModel


def reference_stems(model: LoadedModel, path: Path, shifts: int = 1, overlap: float = 0.25,
                    segment: Optional[float] = None, seed: int = 0,
                    two_stems: Optional[str] = None, other_method: str = "add",
                    device: Optional[str] = None) -> dict[str, torch.Tensor]:
    """What ``demucs.separate`` computes for ``path`` (before clipping and encoding), on
    ``device`` (the model's own device is kept; the audio stays on the CPU)."""
    audio = AudioFile(path)
    wav = audio.read(streams=0)
    wav = convert_audio(wav, audio.samplerate(), model.samplerate, model.audio_channels)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    random.seed(seed)
    out = apply_model(model.model, ((wav - mean) / std)[None], shifts=shifts, split=True,
                      overlap=overlap, segment=segment, device=device)
    res = dict(zip(model.sources, (out * std + mean)[0]))
    if two_stems is None:
        return res
    stem = res.pop(two_stems)
    stems = {two_stems: stem}
    if other_method == "add":
        other = torch.zeros_like(stem)
        for value in res.values():
            other += value
        stems[f"no_{two_stems}"] = other
    elif other_method == "minus":
        stems[f"no_{two_stems}"] = wav - stem
    return stems
