"""Scaled dot-product attention three ways, with the masks and head layouts real models use.

Shapes (batch B, query heads H, key/value heads H_kv, query length T, key length S, head size D):

    q: (B, H, T, D)      k, v: (B, H_kv, S, D)      output: (B, H, T, D)

H must be a multiple of H_kv: H_kv == H is multi-head attention (MHA), 1 < H_kv < H grouped-query
attention (GQA), H_kv == 1 multi-query attention (MQA). When T < S the queries are the *last* T
positions of the sequence (decoding with a KV cache), so query i sits at position S - T + i.

* :func:`naive_attention` builds the full (B, H, T, S) score matrix: memory grows as T * S.
* :func:`tiled_attention` walks over tiles of keys with the online-softmax recurrence (running
  max and running sum, rescaled per tile), as FlashAttention does: extra memory grows as T, not
  T * S. Pure torch, so it teaches the algorithm, not the speed of a fused kernel.
* :func:`sdpa_attention` calls ``torch.nn.functional.scaled_dot_product_attention``.

All three agree to 1e-5 in float32 (tests/test_attention.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["attention_mask", "naive_attention", "repeat_kv", "sdpa_attention", "tiled_attention"]


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, heads, length, D); got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"more queries ({q.shape[2]}) than keys ({k.shape[2]})")
    return heads // kv_heads, k.shape[2] - q.shape[2]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D): each key/value head serves n_rep query heads."""
    if n_rep == 1:
        return x
    b, h_kv, s, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_rep, s, d).reshape(b, h_kv * n_rep, s, d)


def attention_mask(t: int, s: int, causal: bool = True, window: int | None = None,
                   device: torch.device | str | None = None, q_start: int | None = None) -> torch.Tensor | None:
    """Boolean (t, s) mask, True where query i may attend to key j; None when nothing is masked.

    Query i is at position ``q_start + i`` (default ``s - t``, the last t positions). ``causal``
    hides keys after the query; ``window`` (sliding-window attention, as in Mistral) also hides
    keys more than ``window - 1`` positions before it, so each query sees at most ``window`` keys.
    """
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not causal and window is None:
        return None
    start = s - t if q_start is None else q_start
    q_pos = torch.arange(start, start + t, device=device)[:, None]
    k_pos = torch.arange(s, device=device)[None, :]
    keep = torch.ones(t, s, dtype=torch.bool, device=device)
    if causal:
        keep &= k_pos <= q_pos
    if window is not None:
        keep &= k_pos > q_pos - window
    return keep


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    window: int | None = None, return_weights: bool = False):
    """softmax(q k^T / sqrt(D) + mask) v, materialising the (B, H, T, S) weights.

    Returns the output (B, H, T, D), and the weights too if ``return_weights``.
    """
    n_rep, _ = _check(q, k, v)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    mask = attention_mask(q.shape[2], k.shape[2], causal, window, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    window: int | None = None, q_tile: int = 128, k_tile: int = 128) -> torch.Tensor:
    """The same result as :func:`naive_attention`, one (q_tile, k_tile) block of scores at a time.

    For each block of queries we keep a running row maximum ``m``, a running sum of exponentials
    ``l`` and an unnormalised output ``acc``. A new block of keys with scores ``s`` updates them as

        m_new = max(m, rowmax(s));  c = exp(m - m_new)
        l = c * l + rowsum(exp(s - m_new));  acc = c * acc + exp(s - m_new) @ v_block

    and the output is ``acc / l``. Blocks the mask hides entirely are skipped.
    """
    if q_tile < 1 or k_tile < 1:
        raise ValueError(f"tile sizes must be >= 1, got q_tile={q_tile}, k_tile={k_tile}")
    n_rep, offset = _check(q, k, v)
    b, h, t, d = q.shape
    s = k.shape[2]
    scale = 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for q0 in range(0, t, q_tile):
        q1 = min(q0 + q_tile, t)
        qb = q[:, :, q0:q1] * scale  # (B, H, tq, D)
        first_pos, last_pos = offset + q0, offset + q1 - 1  # absolute positions of this query block
        m = torch.full((b, h, q1 - q0, 1), float("-inf"), dtype=q.dtype, device=q.device)
        row_sum = torch.zeros((b, h, q1 - q0, 1), dtype=q.dtype, device=q.device)
        acc = torch.zeros_like(qb)
        k_lo = max(0, first_pos - window + 1) if window is not None else 0
        k_hi = last_pos + 1 if causal else s
        for k0 in range(k_lo - k_lo % k_tile, k_hi, k_tile):
            k1 = min(k0 + k_tile, s)
            kb = repeat_kv(k[:, :, k0:k1], n_rep)  # (B, H, tk, D): one tile, so small
            vb = repeat_kv(v[:, :, k0:k1], n_rep)
            scores = qb @ kb.transpose(-2, -1)  # (B, H, tq, tk)
            mask = attention_mask(q1 - q0, k1 - k0, causal, window, q.device, q_start=first_pos - k0)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
            # Rows whose keys are all masked so far keep m = -inf; use 0 there to avoid inf - inf.
            safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(scores - safe)
            correction = torch.exp(m - safe)
            row_sum = correction * row_sum + p.sum(dim=-1, keepdim=True)
            acc = correction * acc + p @ vb
            m = m_new
        out[:, :, q0:q1] = acc / row_sum
    return out


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                   window: int | None = None) -> torch.Tensor:
    """PyTorch's fused scaled_dot_product_attention with the same conventions as the others.

    Grouped-query heads are left to SDPA (``enable_gqa``): the keys and values are read where they
    are, never copied once per query head as :func:`repeat_kv` does for the other two.
    """
    n_rep, _ = _check(q, k, v)
    gqa = n_rep > 1
    t, s = q.shape[2], k.shape[2]
    if causal and window is None and t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    # is_causal aligns the mask to the top-left corner, which is wrong when t < s (decoding),
    # so pass an explicit mask aligned to the bottom-right.
    mask = attention_mask(t, s, causal, window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
