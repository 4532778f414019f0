"""LLM.int8() (Dettmers et al., 2022): int8 matrix multiplication that survives outlier features.

Int8 with one scale per row of the activations and one per row of the weight (vector-wise
quantization) is nearly lossless for small models. From about 6.7B parameters on, the paper found
a few hidden dimensions whose activations reach magnitudes of 20 to 60 in most tokens; one such
value stretches its row's scale until every other value in the row rounds to a handful of levels.
The fix is a decomposition by *columns* of the activations (hidden dimensions): the few columns
holding any value of magnitude at least ``threshold`` (6.0 in the paper) are multiplied in floating
point; everything else goes through int8, accumulated exactly in integers, then rescaled.

Whether a model needs this is measured, not assumed: :func:`linear_inputs` records what its linear
layers read on some text, and :func:`outlier_census` says, per layer, how large those inputs get
and how many hidden dimensions and tokens cross the threshold.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from course_utils.quantization.integer import quantize_int

__all__ = ["OUTLIER_THRESHOLD", "OutlierStats", "int8_matmul", "linear_inputs", "outlier_census", "outlier_columns"]

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


@torch.no_grad()
def linear_inputs(model: nn.Module, layers: Mapping[Hashable, nn.Module],
                  batches: Iterable[torch.Tensor]) -> dict[Hashable, torch.Tensor]:
    """What each of ``layers`` reads while ``model`` runs on ``batches`` of token ids.

    ``layers`` maps any key to a module of ``model`` (e.g. ``(3, "attention input")`` to block 3's
    ``q_proj``); each batch is (T,) or (B, T) ids. Returns, per key, the inputs of every call
    flattened to (tokens, in_features), in the order the batches came. Hooks are removed even when
    the model raises.
    """
    seen: dict[Hashable, list[torch.Tensor]] = {key: [] for key in layers}

    def recorder(key: Hashable):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            seen[key].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        return hook

    hooks = [layer.register_forward_hook(recorder(key)) for key, layer in layers.items()]
    try:
        for ids in batches:
            model(ids if ids.dim() == 2 else ids[None])
    finally:
        for hook in hooks:
            hook.remove()
    empty = [key for key, chunks in seen.items() if not chunks]
    if empty:
        raise ValueError(f"these layers were never called by the model: {empty}; pass modules of `model`")
    return {key: torch.cat(chunks) for key, chunks in seen.items()}


@dataclass(frozen=True)
class OutlierStats:
    """Outlier features in one layer's inputs (tokens, in): the quantities LLM.int8() reacts to."""

    max_abs: float  # largest |activation|
    dims: int  # hidden dimensions with at least one |value| >= threshold
    token_share: float  # share of tokens with at least one |value| >= threshold
    top_dim: int  # the hidden dimension holding the largest |activation|


def outlier_census(inputs: Mapping[Hashable, torch.Tensor],
                   threshold: float = OUTLIER_THRESHOLD) -> dict[Hashable, OutlierStats]:
    """:class:`OutlierStats` for each (tokens, in) tensor of ``inputs`` (e.g. :func:`linear_inputs`' result)."""
    census = {}
    for key, x in inputs.items():
        magnitude = x.abs()
        over = magnitude >= threshold
        census[key] = OutlierStats(max_abs=float(magnitude.max()), dims=int(over.any(0).sum()),
                                   token_share=float(over.any(1).float().mean()),
                                   top_dim=int(magnitude.max(0).values.argmax()))
    return census
