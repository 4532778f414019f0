"""Weight matrices laid out once, ahead of time, for the CPU's matrix-multiply library.

A decode step multiplies a handful of activation rows (one per running sequence) by every
weight matrix of the model. With so few rows, a general matrix multiply spends a large share of
its time re-arranging ("packing") the *weight* into the cache-friendly tiles its inner loop reads,
and it does that again on every call. oneDNN, the library behind PyTorch's CPU kernels, can pack
a weight once and keep it packed; vLLM's CPU backend and ``torch.compile``'s freezing pass both
do this. On the course's 2-core test machine it makes the 135M model's decode matmuls at 16
sequences about a quarter faster (``benchmarks/serving_bench.py`` records the engine's step time).

Intel's MKL packs weights too (``cblas_sgemm_pack``), but for one fixed number of rows only. A
:class:`PrepackedLinear` can keep an MKL copy beside the oneDNN one and use it for steps of exactly
``rows_hint`` rows (a full decode batch), oneDNN for any other; on the course's Intel test machine
MKL's packed kernels took about a fifth less time than oneDNN's for the 135M model's weights at 64
rows (``weights_alone`` in ``benchmarks/results/serving.json``).
Which library serves the full batch is measured, not assumed: see
:class:`~course_utils.serving.fused_model.FusedLlama`. The MKL copy costs as much memory again as
the weights it packs.

The engine runs a *prepacked copy* of the model: every module is shared with the original except
the ``nn.Linear`` layers, which become :class:`PrepackedLinear`. A packed weight is refreshed
whenever its source weight changes (say, after a fine-tuning step), so the engine never
serves stale weights. Where oneDNN packing is unavailable (a GPU, a dtype other than float32, a
PyTorch built without oneDNN) the model is used as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PrepackedLinear", "can_pack_for_mkl", "can_prepack", "prepacked_copy"]


def can_prepack(model: nn.Module) -> bool:
    """Whether this PyTorch build can prepack ``model``'s weights: float32 on the CPU, with oneDNN."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def can_pack_for_mkl() -> bool:
    """Whether this PyTorch build has MKL's packed matrix multiply (x86 builds with MKL do)."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


class PrepackedLinear(nn.Module):
    """``linear(x)`` with the weight kept in oneDNN's packed layout; same result up to float rounding.

    Given several linear layers that read the same input (a layer's q, k and v projections, say),
    it packs their weights stacked as one matrix and returns their outputs side by side: one
    matrix multiply instead of several, as vLLM's fused QKV and gate-up layers do.
    ``rows_hint`` is the number of activation rows the packing is tuned for (the batch of a
    decode step); other row counts are computed correctly, a little less quickly. With
    ``full_batch_mkl`` (see :meth:`use_mkl_for_full_batch`) products of exactly ``rows_hint`` rows
    go to an MKL-packed copy of the weight instead of the oneDNN one.
    """

    def __init__(self, linears: nn.Linear | Sequence[nn.Linear], rows_hint: int, full_batch_mkl: bool = False):
        super().__init__()
        self.sources = (linears,) if isinstance(linears, nn.Linear) else tuple(linears)
        if not self.sources or len({lin.in_features for lin in self.sources}) != 1:
            raise ValueError("PrepackedLinear needs one or more linear layers with the same in_features")
        if len({lin.bias is None for lin in self.sources}) != 1:
            raise ValueError("PrepackedLinear cannot stack layers with a bias and layers without one")
        self.rows_hint, self.full_batch_mkl = rows_hint, False
        self._pack()
        if full_batch_mkl:
            self.use_mkl_for_full_batch(True)

    def use_mkl_for_full_batch(self, on: bool) -> None:
        """Serve products of exactly ``rows_hint`` rows from an MKL-packed copy (``on``), or drop that
        copy; the oneDNN copy is kept as it is."""
        if on and not can_pack_for_mkl():
            raise ValueError("full_batch_mkl needs a PyTorch built with MKL (torch.backends.mkl.is_available())")
        self.full_batch_mkl = on
        self._pack_mkl(self._stacked())

    def _stacked(self) -> torch.Tensor:
        """The sources' weights as one matrix: (out_features summed, in_features)."""
        return torch.cat([lin.weight for lin in self.sources]).detach()

    def _pack(self) -> None:
        # each source's parameter dict, the weight packed and its version: read at every call, so kept flat
        self._packed_from = [(lin._parameters, lin.weight, lin.weight._version) for lin in self.sources]
        stacked = self._stacked()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(stacked, self.rows_hint)
        self._pack_mkl(stacked)
        biases = [lin.bias for lin in self.sources]
        self.bias = None if biases[0] is None else torch.cat(biases).detach()

    def _pack_mkl(self, stacked: torch.Tensor) -> None:
        self.mkl_packed = self._shape = None
        if self.full_batch_mkl:
            self.mkl_packed = torch.ops.mkl._mkl_reorder_linear_weight(stacked, self.rows_hint)
            # MKL's op reads the weight's shape from this argument (and computes with it only for other
            # row counts, which never reach it here): a zero-stride view stands in for the stacked weight
            self._shape = stacked.new_zeros(()).expand(stacked.shape)

    def _stale(self) -> bool:
        """Whether a source weight changed since it was packed (replaced, or updated in place)."""
        for parameters, old, version in self._packed_from:
            if parameters.get("weight") is not old or old._version != version:
                return True
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., sum of the sources' out_features)."""
        if self._stale():
            self._pack()
        if self.mkl_packed is not None and x.numel() == self.rows_hint * x.shape[-1]:
            return torch.ops.mkl._mkl_linear(x, self.mkl_packed, self._shape, self.bias, self.rows_hint)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def prepacked_copy(model: nn.Module, rows_hint: int) -> nn.Module:
    """A copy of ``model`` in which each ``nn.Linear`` is a :class:`PrepackedLinear` reading the
    same weight; every module without a linear layer inside is the original one, shared."""
    if isinstance(model, nn.Linear):
        return PrepackedLinear(model, rows_hint=rows_hint)
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return model
    clone = copy.copy(model)  # a new module object over the same parameters and buffers
    clone._modules = {name: None if child is None else prepacked_copy(child, rows_hint)
                      for name, child in model._modules.items()}
    return clone
