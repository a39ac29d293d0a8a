"""HTDemucs cut in three: STFT in torch, the network (exportable), iSTFT in torch.

``HTDemucs.forward`` pads the mix to its training length, takes the STFT, runs both
branches (encoders, cross-transformer, decoders) and adds the iSTFT of the masked
spectrogram to the time branch. ``Network`` is the middle part with fixed shapes and
no complex numbers, so it exports to ONNX; ``split_forward`` runs the whole forward
with any implementation of it and equals ``HTDemucs.forward`` in eval mode.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

NetworkFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def is_splittable(model: Any) -> bool:
    """An HTDemucs that pads to its training length (all released ones do)."""
    from demucs.htdemucs import HTDemucs
    return isinstance(model, HTDemucs) and bool(model.use_train_segment) and bool(model.cac)


def training_length(model: Any) -> int:
    return int(model.segment * model.samplerate)


def network_inputs(model: Any, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's inputs (magnitude spectrogram, padded mix) for a ``[B, C, n]`` mix."""
    mix = F.pad(mix, (0, training_length(model) - mix.shape[-1]))
    return model._magnitude(model._spec(mix)), mix


def split_forward(model: Any, mix: torch.Tensor, network: NetworkFn) -> torch.Tensor:
    """``model(mix)`` with the network part run by ``network``."""
    length = mix.shape[-1]
    padded = F.pad(mix, (0, training_length(model) - length))
    z = model._spec(padded)
    spec, wave = network(model._magnitude(z), padded)
    out = model._ispec(model._mask(z, spec), padded.shape[-1]) + wave
    return out[..., :length]


class Network(torch.nn.Module):
    """The part of ``HTDemucs.forward`` between its STFT and its iSTFT.

    In: magnitude ``[B, 2C, F, T]`` and the padded mix ``[B, C, L]``. Out: the
    de-normalized spectral output ``[B, S, 2C, F, T]`` and time output ``[B, S, C, L]``.
    The arithmetic is demucs 4.1's, line for line.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.m = model

    def forward(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mean, std = _normalize(mag, (1, 2, 3))
        xt, meant, stdt = _normalize(mix, (1, 2))
        x, xt, saved, saved_t, lengths, lengths_t = self._encode(x, xt)
        x, xt = self._bottom(x, xt)
        x, xt = self._decode(x, xt, saved, saved_t, lengths, lengths_t)
        batch, _, freqs, frames = mag.shape
        sources = len(self.m.sources)
        x = x.view(batch, sources, -1, freqs, frames) * std[:, None] + mean[:, None]
        xt = xt.view(batch, sources, -1, mix.shape[-1]) * stdt[:, None] + meant[:, None]
        return x, xt

    def _encode(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[Any, ...]:
        m = self.m
        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)
        return x, xt, saved, saved_t, lengths, lengths_t

    def _bottom(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.m
        if not m.crosstransformer:
            return x, xt
        batch, channels, freqs, frames = x.shape
        if m.bottom_channels:
            x = m.channel_upsampler(x.reshape(batch, channels, freqs * frames))
            x = x.reshape(batch, -1, freqs, frames)
            xt = m.channel_upsampler_t(xt)
        x, xt = m.crosstransformer(x, xt)
        if m.bottom_channels:
            x = m.channel_downsampler(x.reshape(batch, x.shape[1], freqs * frames))
            x = x.reshape(batch, -1, freqs, frames)
            xt = m.channel_downsampler_t(xt)
        return x, xt

    def _decode(self, x: torch.Tensor, xt: torch.Tensor, saved: list[torch.Tensor],
                saved_t: list[torch.Tensor], lengths: list[int],
                lengths_t: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.m
        offset = m.depth - len(m.tdecoder)
        for idx, decode in enumerate(m.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            if idx < offset:
                continue
            tdec = m.tdecoder[idx - offset]
            length_t = lengths_t.pop(-1)
            if tdec.empty:
                xt, _ = tdec(pre[:, :, 0], None, length_t)
            else:
                xt, _ = tdec(xt, saved_t.pop(-1), length_t)
        return x, xt


def _normalize(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (1e-5 + std), mean, std
