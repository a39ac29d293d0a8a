"""Attention in blocks for bf16 on the CPU (stemd/engine/attention.py): the same results as
torch's ``nn.MultiheadAttention``, exactly in fp32, within bf16's accuracy in bf16."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from stemd.engine.attention import BlockedAttention, blocked_attention, use_blocked_attention
from stemd.engine.models import LoadedModel

from .audio import sdr


def _mha(dim: int = 64, heads: int = 4, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    return nn.MultiheadAttention(dim, heads, batch_first=True).eval()


def _tokens(count: int, dim: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, count, dim, generator=torch.Generator().manual_seed(seed))


def _db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return sdr(reference.double().numpy(), estimate.double().numpy())


@pytest.mark.parametrize("block", [1, 7, 512, 10_000])
def test_blocked_attention_is_softmax_attention_in_any_block_size(block: int) -> None:
    q, k, v = (_tokens(300, 32, seed).unflatten(-1, (4, 8)).transpose(1, 2)
               for seed in (1, 2, 3))
    k, v = k[..., :211, :], v[..., :211, :]              # fewer keys than queries
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert _db(expected, blocked_attention(q, k, v, block)) > 120


def test_the_loaded_model_runs_blocked_attention_with_its_own_weights(
        tiny: LoadedModel) -> None:
    modules = [m for m in tiny.members[0].modules() if isinstance(m, nn.MultiheadAttention)]
    assert modules and all(type(m) is BlockedAttention for m in modules)
    state = modules[0].state_dict()
    assert set(state) == set(_mha(modules[0].embed_dim, modules[0].num_heads).state_dict())


@pytest.mark.parametrize("kind", ["self", "cross", "three inputs"])
def test_in_fp32_it_is_torchs_multihead_attention(kind: str) -> None:
    original = _mha()
    blocked = copy.deepcopy(original)
    assert use_blocked_attention(blocked) == 1
    query, key, value = _inputs(kind)
    with torch.inference_mode():
        expected = original(query, key, value, need_weights=False)[0]
        assert torch.equal(blocked(query, key, value, need_weights=False)[0], expected)


@pytest.mark.parametrize("kind", ["self", "cross", "three inputs"])
def test_in_cpu_bf16_it_runs_in_blocks_close_to_fp32(kind: str) -> None:
    original = _mha()
    blocked = copy.deepcopy(original)
    use_blocked_attention(blocked)
    query, key, value = _inputs(kind)
    with torch.inference_mode():
        exact = original(query, key, value, need_weights=False)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = blocked(query, key, value, need_weights=False)[0]
            q, k, v = blocked._project(query, key, value)
            by_hand = blocked.out_proj(blocked_attention(q, k, v).transpose(1, 2).flatten(2))
    assert fast.dtype == torch.bfloat16 and torch.equal(fast, by_hand)
    assert 35 < _db(exact, fast.float()) < 90          # bf16's accuracy, not fp32's


def test_masks_and_weights_go_through_torchs_own_path() -> None:
    original = _mha()
    blocked = copy.deepcopy(original)
    use_blocked_attention(blocked)
    query = _tokens(50)
    mask = torch.rand(50, 50, generator=torch.Generator().manual_seed(4)) > 0.3
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for options in ({"attn_mask": mask, "need_weights": False}, {"need_weights": True}):
            ours, theirs = blocked(query, query, query, **options), \
                original(query, query, query, **options)
            assert torch.equal(ours[0], theirs[0])
            assert (ours[1] is None) == (theirs[1] is None)


def _inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    query = _tokens(600, seed=1)
    if kind == "self":
        return query, query, query
    other = _tokens(333, seed=2)
    if kind == "cross":
        return query, other, other
    return query, other, _tokens(333, seed=3)
