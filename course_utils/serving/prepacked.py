"""Weight matrices laid out once, ahead of time, for the CPU's matrix-multiply library.

A decode step multiplies a handful of activation rows (one per running sequence) by every
weight matrix of the model. With so few rows, a general matrix multiply spends a large share of
its time re-arranging ("packing") the *weight* into the cache-friendly tiles its inner loop reads,
and it does that again on every call. oneDNN, the library behind PyTorch's CPU kernels, can pack
a weight once and keep it packed; vLLM's CPU backend and ``torch.compile``'s freezing pass both
do this. On the course's 2-core test machine it makes the 135M model's decode matmuls at 16
sequences about a quarter faster (``benchmarks/serving_bench.py`` records the engine's step time).

The engine runs a *prepacked copy* of the model: every module is shared with the original except
the ``nn.Linear`` layers, which become :class:`PrepackedLinear`. A packed weight is refreshed
whenever its source weight changes (say, after a fine-tuning step), so the engine never
serves stale weights. Where oneDNN packing is unavailable (a GPU, a dtype other than float32, a
PyTorch built without oneDNN) the model is used as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["PrepackedLinear", "can_prepack", "prepacked_copy"]


def can_prepack(model: nn.Module) -> bool:
    """Whether this PyTorch build can prepack ``model``'s weights: float32 on the CPU, with oneDNN."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


class PrepackedLinear(nn.Module):
    """``linear(x)`` with the weight kept in oneDNN's packed layout; same result up to float rounding.

    ``rows_hint`` is the number of activation rows the packing is tuned for (the batch of a
    decode step); other row counts are computed correctly, a little less quickly.
    """

    def __init__(self, linear: nn.Linear, rows_hint: int):
        super().__init__()
        self.source, self.rows_hint = linear, rows_hint
        self._pack()

    def _pack(self) -> None:
        weight = self.source.weight
        self._packed_weight, self._packed_version = weight, weight._version
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), self.rows_hint)
        self.bias = None if self.source.bias is None else self.source.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features)."""
        weight = self.source.weight
        if weight is not self._packed_weight or weight._version != self._packed_version:  # changed since packed
            self._pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def prepacked_copy(model: nn.Module, rows_hint: int) -> nn.Module:
    """A copy of ``model`` in which each ``nn.Linear`` is a :class:`PrepackedLinear` reading the
    same weight; every module without a linear layer inside is the original one, shared."""
    if isinstance(model, nn.Linear):
        return PrepackedLinear(model, rows_hint)
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return model
    clone = copy.copy(model)  # a new module object over the same parameters and buffers
    clone._modules = {name: None if child is None else prepacked_copy(child, rows_hint)
                      for name, child in model._modules.items()}
    return clone
