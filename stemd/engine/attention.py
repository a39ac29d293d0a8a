"""Attention in blocks of queries for bf16 on the CPU.

torch's CPU scaled-dot-product attention (a flash kernel) runs no faster in bf16 than in
fp32, while bf16 matrix products run about twice as fast on a CPU with AVX512-BF16 or
AMX. So when a model runs under ``torch.autocast("cpu", bfloat16)`` its self- and
cross-attention are computed here as softmax(Q K^T / sqrt(d)) V, a block of queries at a
time so the score matrix stays small (docs/benchmarks.md: about 13 % less time per
segment of htdemucs on 2 cores, 108 -> 76 ms for the freq branch's 2688 tokens).

Everything else (fp32, CUDA, masks, training, asking for the weights) goes through
``nn.MultiheadAttention``'s own forward, so exports and GPU runs are unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_QUERIES = 512          # measured: 128-384 slower, 1024 alike; one block's scores 22 MB


def use_blocked_attention(model: nn.Module) -> int:
    """Make every ``nn.MultiheadAttention`` of ``model`` a ``BlockedAttention`` (same
    parameters, same state dict); returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = BlockedAttention
            changed += 1
    return changed


class BlockedAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose inference in CPU bf16 autocast runs in blocks."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor,  # type: ignore[override]
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        plain = (key_padding_mask is None and attn_mask is None and not need_weights
                 and not is_causal)
        if not (plain and self._blockable(query)):
            return super().forward(query, key, value, key_padding_mask, need_weights,
                                   attn_mask, average_attn_weights, is_causal)
        q, k, v = self._project(query, key, value)
        out = blocked_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2)), None

    def _blockable(self, query: Tensor) -> bool:
        return (query.device.type == "cpu" and not self.training and self.batch_first
                and self._qkv_same_embed_dim and self.bias_k is None
                and not self.add_zero_attn and cpu_autocast_dtype() == torch.bfloat16)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
        """Q, K, V as [batch, heads, tokens, head_dim] (one product per distinct input)."""
        weight, bias, dim = self.in_proj_weight, self.in_proj_bias, self.embed_dim
        if query is key and key is value:
            qkv: tuple[Tensor, ...] = F.linear(query, weight, bias).chunk(3, dim=-1)
        elif key is value:
            kv = F.linear(key, weight[dim:], None if bias is None else bias[dim:])
            qkv = (F.linear(query, weight[:dim], None if bias is None else bias[:dim]),
                   *kv.chunk(2, dim=-1))
        else:
            biases = (None,) * 3 if bias is None else bias.chunk(3)
            qkv = tuple(F.linear(x, w, b) for x, w, b in
                        zip((query, key, value), weight.chunk(3), biases))
        return tuple(x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                     for x in qkv)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, block: int = BLOCK_QUERIES) -> Tensor:
    """softmax(Q K^T / sqrt(d)) V for [..., tokens, d] tensors, ``block`` queries at a time."""
    keys_t = (k * q.shape[-1] ** -0.5).transpose(-2, -1)
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=v.dtype, device=q.device)
    for start in range(0, q.shape[-2], block):
        scores = torch.matmul(q[..., start:start + block, :], keys_t).softmax(-1)
        torch.matmul(scores, v, out=out[..., start:start + block, :])
    return out


def cpu_autocast_dtype() -> Optional[torch.dtype]:
    """The dtype CPU autocast casts to, or None when it is off."""
    try:
        enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except TypeError:                          # torch < 2.4 has the CPU-only calls
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if enabled else None
