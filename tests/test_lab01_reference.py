"""Lab 01's reference solution agrees with transformers' RoPE and torch's scaled_dot_product_attention."""

import math

import pytest
import torch
import torch.nn.functional as F
from lab_solutions import solution_namespace
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from course_utils.architecture.rope import inverse_frequencies, rope_cos_sin


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("01_transformer_architecture_lab.ipynb", {"math": math, "torch": torch})


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("head_dim", "base"), [(4, 10.0), (16, 10000.0), (64, 500000.0)])
def test_rope_rotate_is_transformers_rotary_embedding(lab, head_dim, base):
    x = _randn(2, 3, 7, head_dim, seed=head_dim)
    positions = [0, 1, 5, 9, 100, 2047, 3]
    inv_freq, _ = inverse_frequencies(head_dim, base)  # tested against transformers in test_rope.py
    cos, sin = rope_cos_sin(torch.tensor(positions), inv_freq)  # (T, D)
    expected, _ = apply_rotary_pos_emb(x, x, cos[None], sin[None])  # transformers' Llama, (B, H, T, D)
    # float32 angles formed two ways (base ** -f vs 1 / base ** f) differ by a few ulp of pos * theta:
    # allow that much, growing with the position; a wrong rotation is off by O(|x|)
    slack = 4 * torch.finfo(torch.float32).eps * torch.tensor(positions, dtype=torch.float32)[:, None]
    tolerance = 1e-6 + slack * x.abs().amax(-1, keepdim=True)  # (B, H, T, 1)
    assert ((lab["rope_rotate"](x, positions, base) - expected).abs() <= tolerance).all()


@pytest.mark.parametrize(("heads", "kv_heads", "t"), [(4, 4, 5), (8, 2, 9), (6, 1, 1), (9, 3, 16)])
def test_causal_gqa_attention_is_sdpa_with_grouped_heads(lab, heads, kv_heads, t):
    q, k, v = _randn(2, heads, t, 16, seed=1), _randn(2, kv_heads, t, 16, seed=2), _randn(2, kv_heads, t, 16, seed=3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(lab["causal_gqa_attention"](q, k, v), expected, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "cached"), [(2, 1, 1), (8, 2, 7), (4, 4, 20)])
def test_decode_step_equals_the_last_row_of_full_attention(lab, heads, kv_heads, cached):
    k_all, v_all = _randn(1, kv_heads, cached + 1, 8, seed=4), _randn(1, kv_heads, cached + 1, 8, seed=5)
    q = _randn(1, heads, 1, 8, seed=6)
    out, k_cache, v_cache = lab["decode_step"](q, k_all[:, :, -1:], v_all[:, :, -1:], k_all[:, :, :-1],
                                                v_all[:, :, :-1])
    assert torch.equal(k_cache, k_all) and torch.equal(v_cache, v_all)
    expected = F.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)  # the new token sees everything
    assert torch.allclose(out, expected, atol=1e-5)
