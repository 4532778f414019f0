"""LLM.int8() (Dettmers et al., 2022): int8 matrix multiplication that survives outlier features.

Int8 with one scale per row of the activations and one per row of the weight (vector-wise
quantization) is nearly lossless for small models. From about 6.7B parameters on, the paper found
a few hidden dimensions whose activations reach magnitudes of 20 to 60 in most tokens; one such
value stretches its row's scale until every other value in the row rounds to a handful of levels.
The fix is a decomposition by *columns* of the activations (hidden dimensions): the few columns
holding any value of magnitude at least ``threshold`` (6.0 in the paper) are multiplied in floating
point; everything else goes through int8, accumulated exactly in integers, then rescaled.
"""

from __future__ import annotations

import torch

from course_utils.quantization.integer import quantize_int

__all__ = ["OUTLIER_THRESHOLD", "int8_matmul", "outlier_columns"]

OUTLIER_THRESHOLD = 6.0


def outlier_columns(x: torch.Tensor, threshold: float = OUTLIER_THRESHOLD) -> torch.Tensor:
    """Indices of the hidden dimensions (last axis of x) where any |value| >= threshold."""
    return torch.nonzero((x.reshape(-1, x.shape[-1]).abs() >= threshold).any(0)).flatten()


def int8_matmul(x: torch.Tensor, weight_q: torch.Tensor, weight_scale: torch.Tensor,
                threshold: float = OUTLIER_THRESHOLD) -> torch.Tensor:
    """``x @ W.T`` for W stored as int8 rows, with LLM.int8()'s outlier decomposition.

    x: (..., in) float; weight_q: (out, in) int8; weight_scale: (out,) float32, so that
    W = weight_q * weight_scale[:, None]. Returns (..., out) in x's dtype. ``threshold=inf`` turns
    the decomposition off (plain vector-wise int8).
    """
    rows = x.reshape(-1, x.shape[-1]).float()
    outliers = outlier_columns(rows, threshold)
    regular = rows.clone()
    regular[:, outliers] = 0
    xq = quantize_int(regular, 8, symmetric=True, granularity="channel")  # one scale per token
    # int8 x int8 products summed over `in` are exact in float64 (|sum| < 2**53): the integer matmul
    accumulated = xq.q.double() @ weight_q.double().T  # (tokens, out)
    out = (accumulated * (xq.scale.double() * weight_scale.double()[None, :])).float()
    if len(outliers):
        weight_columns = weight_q[:, outliers].float() * weight_scale[:, None]  # (out, n_outliers)
        out = out + rows[:, outliers] @ weight_columns.T
    return out.reshape(*x.shape[:-1], -1).to(x.dtype)
