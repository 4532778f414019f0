"""naive, tiled and SDPA attention agree with torch's SDPA (the reference) to 1e-5 in float32."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.architecture.attention import (
    attention_mask,
    naive_attention,
    repeat_kv,
    sdpa_attention,
    tiled_attention,
)


def reference(q, k, v, causal, window):
    """torch SDPA with the mask built independently of course_utils (a plain double loop)."""
    t, s = q.shape[2], k.shape[2]
    keep = torch.ones(t, s, dtype=torch.bool)
    for i in range(t):
        pos = s - t + i
        for j in range(s):
            if (causal and j > pos) or (window is not None and j <= pos - window):
                keep[i, j] = False
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)
    v = v.repeat_interleave(n_rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def qkv(b, h, h_kv, t, s, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, t, d, generator=g), torch.randn(b, h_kv, s, d, generator=g),
            torch.randn(b, h_kv, s, d, generator=g))


IMPLS = {
    "naive": naive_attention,
    "tiled": lambda q, k, v, causal, window: tiled_attention(q, k, v, causal, window, q_tile=16, k_tile=24),
    "sdpa": sdpa_attention,
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("heads", [(8, 8), (8, 2), (8, 1)], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("t, s", [(61, 61), (5, 61), (1, 61)], ids=["prefill", "chunk", "decode"])
def test_matches_torch_sdpa(impl, causal, window, heads, t, s):
    q, k, v = qkv(2, heads[0], heads[1], t, s, 32)
    expected = reference(q, k, v, causal, window)
    assert torch.allclose(IMPLS[impl](q, k, v, causal, window), expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 70), extra=st.integers(0, 20), h_kv=st.sampled_from([1, 2, 4]), rep=st.sampled_from([1, 3]),
       q_tile=st.integers(1, 33), k_tile=st.integers(1, 33), causal=st.booleans(),
       window=st.one_of(st.none(), st.integers(1, 40)))
def test_tiled_matches_reference_on_random_shapes(t, extra, h_kv, rep, q_tile, k_tile, causal, window):
    q, k, v = qkv(1, h_kv * rep, h_kv, t, t + extra, 8, seed=t + extra)
    got = tiled_attention(q, k, v, causal, window, q_tile=q_tile, k_tile=k_tile)
    assert torch.allclose(got, reference(q, k, v, causal, window), atol=1e-5, rtol=1e-5)


def test_weights_are_causal_and_rows_sum_to_one():
    q, k, v = qkv(1, 2, 2, 6, 6, 4)
    _, w = naive_attention(q, k, v, causal=True, return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 6))
    assert torch.all(w[0, :, torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)] == 0)


def test_sliding_window_sees_at_most_w_keys():
    mask = attention_mask(10, 10, causal=True, window=3)
    assert mask.sum(-1).tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    assert attention_mask(4, 4, causal=False) is None


def test_repeat_kv_matches_repeat_interleave():
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(repeat_kv(x, 4), x.repeat_interleave(4, dim=1))


def test_bad_shapes_are_explained():
    q, k, v = qkv(1, 6, 4, 3, 3, 8)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        naive_attention(q, k, v)
    q, k, v = qkv(1, 4, 4, 5, 3, 8)
    with pytest.raises(ValueError, match="more queries"):
        tiled_attention(q, k, v)
    with pytest.raises(ValueError, match="tile sizes"):
        tiled_attention(*qkv(1, 2, 2, 3, 3, 4), q_tile=0)
    with pytest.raises(ValueError, match="window"):
        attention_mask(3, 3, window=0)


def test_attention_cost_reports_time_and_a_quadratic_naive_peak():
    from course_utils.architecture.measure import attention_cost

    # in a fresh interpreter: the high-water mark is the whole process's, and in a test worker other
    # tests' threads (a server's engine loop, say) allocate meanwhile: 216 MB there, 144 MB alone
    script = ("import json; from course_utils.architecture.measure import attention_cost, peak_memory_supported\n"
              "costs = [attention_cost(impl, t, repeats=2) for impl, t in (('naive', 1024), ('naive', 2048), "
              "('tiled', 2048))]\n"
              "print(json.dumps({'supported': peak_memory_supported(), 'costs': costs}))")
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                    timeout=300).stdout)
    small, big, tiled = out["costs"]
    assert small["seconds"] > 0 and big["seconds"] > 0
    if out["supported"]:
        assert 3.0 < big["peak_bytes"] / small["peak_bytes"] < 5.0  # twice the length, ~4x the scores
        assert tiled["peak_bytes"] < 0.2 * big["peak_bytes"]
    with pytest.raises(ValueError, match="impl"):
        attention_cost("flash", 64)
