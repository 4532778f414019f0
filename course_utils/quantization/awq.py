"""AWQ (Lin et al., 2024): protect the weights that meet large activations by scaling them up first.

Round-to-nearest gives every weight of a group the same absolute error budget. But a weight
that multiplies a large activation turns its rounding error into a large output error. AWQ
scales each *input channel* of a weight up before rounding and its activations down by the same
factor, which leaves the layer's function unchanged in exact arithmetic::

    y = x Wᵀ = (x / s) (W diag(s))ᵀ      s: (in,) one factor per input channel

After rounding, ``Q(W diag(s)) / s`` is the effective weight: a channel with ``s_j > 1`` is
rounded on a finer grid relative to its own size (its relative error shrinks by about ``s_j``),
while the group's scale grows only if that channel held the group's largest weight.

The factors come from the activations: ``s = mean|x|^α`` over the calibration tokens, with
``α`` in [0, 1) chosen by a grid search that keeps the layer's output closest to the float
output on those same tokens (``α = 0`` is plain round-to-nearest, so the search can only do
as well or better there). Layers that read the same tensor (q, k and v; gate and up) share
one ``s``. The ``1 / s`` is then *folded* into the operation that produced the activations
(the RMSNorm's weight, or the rows of the linear layer before), so inference costs nothing
extra. The paper also searches a clipping range for each group of weights; the course leaves
that step out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from course_utils.quantization.gptq import rtn_round_trip

__all__ = ["AWQSearch", "activation_magnitude", "awq_weight", "fold_scales", "search_scales"]

GRID = 10  # values of α tried: 0, 0.1, ..., 0.9 (the paper's code tries 20; 10 halve the time on a CPU)
SEARCH_TOKENS = 512  # calibration tokens the output error is measured on (evenly spaced), to bound the time


@dataclass
class AWQSearch:
    """The outcome of :func:`search_scales` for one weight.

    scales: (in,) the chosen factors; alpha: their exponent; alphas: the values tried, from 0;
    errors: the mean squared output error for each of them (``errors[0]`` is round-to-nearest's).
    """

    scales: torch.Tensor
    alpha: float
    alphas: list[float]
    errors: list[float]

    @property
    def error(self) -> float:
        return min(self.errors)

    @property
    def rtn_error(self) -> float:
        return self.errors[0]


def activation_magnitude(x: torch.Tensor) -> torch.Tensor:
    """x (..., in) -> (in,) the mean absolute value of each input channel over all tokens."""
    return x.detach().reshape(-1, x.shape[-1]).float().abs().mean(0)


def _scales(magnitude: torch.Tensor, alpha: float) -> torch.Tensor:
    """magnitude^α, normalised so that the largest and smallest factor multiply to 1 (as the paper's code)."""
    s = magnitude.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def awq_weight(weight: torch.Tensor, scales: torch.Tensor, bits: int = 4, group_size: int = 128) -> torch.Tensor:
    """The effective (out, in) weight ``Q(W diag(s)) / s`` that AWQ's layer applies to the unscaled input."""
    return rtn_round_trip(weight * scales, bits, group_size) / scales


@torch.no_grad()
def search_scales(weight: torch.Tensor, x: torch.Tensor, bits: int = 4, group_size: int = 128,
                  grid: int = GRID, tokens: int = SEARCH_TOKENS) -> AWQSearch:
    """The per-input-channel factors for ``weight`` (out, in) given the inputs ``x`` (..., in) it reads.

    The error of each α is the mean squared difference between ``x Wᵀ`` and ``x Ŵᵀ`` with
    ``Ŵ = Q(W diag(s)) / s``, on up to ``tokens`` rows of x (the magnitudes use all of them).
    """
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"inputs have {x.shape[-1]} channels, the weight reads {weight.shape[1]}")
    w = weight.detach().float()
    rows = x.detach().reshape(-1, x.shape[-1]).float()
    magnitude = activation_magnitude(rows)
    sample = rows[torch.linspace(0, len(rows) - 1, min(tokens, len(rows))).long()]
    reference = sample @ w.T
    alphas = [i / grid for i in range(grid)]
    errors = [float((sample @ awq_weight(w, _scales(magnitude, a), bits, group_size).T - reference).pow(2).mean())
              for a in alphas]
    best = min(range(grid), key=errors.__getitem__)
    return AWQSearch(_scales(magnitude, alphas[best]), alphas[best], alphas, errors)


@torch.no_grad()
def fold_scales(previous: nn.Module, layers: list[nn.Linear], scales: torch.Tensor) -> None:
    """Scale the input channels of ``layers`` by ``scales`` and divide them out of ``previous``'s output.

    ``previous`` is what computes the layers' input: a module with a (in,) ``weight`` that
    multiplies its output elementwise (RMSNorm), or an ``nn.Linear`` whose output rows feed the
    layers directly (up_proj before down_proj). The composed function does not change.
    """
    if isinstance(previous, nn.Linear):
        previous.weight.div_(scales[:, None])
        if previous.bias is not None:
            previous.bias.div_(scales)
    elif getattr(previous, "weight", None) is not None and previous.weight.shape == scales.shape:
        previous.weight.div_(scales)
    else:
        raise TypeError(f"cannot fold scales into {type(previous).__name__}: it needs a per-channel weight "
                        f"of shape {tuple(scales.shape)} or to be an nn.Linear")
    for layer in layers:
        layer.weight.mul_(scales[None, :])
