"""GPTQ (Frantar et al., 2023): quantize a linear layer column by column, correcting as it goes.

Round-to-nearest (RTN) quantizes each weight on its own. GPTQ asks instead for the quantized
weight that keeps the layer's *outputs* on real inputs closest: minimise ||W X - Q X||² over the
calibration activations X. Its second-order information is the Hessian ``H = 2 X Xᵀ / n``
(in_features x in_features), the same for every output row. The algorithm:

1. quantize one column of W (one input feature, every output row at once);
2. spread that column's rounding error over the columns not yet quantized, in proportion to how
   the inputs co-vary (``H⁻¹``), so that later columns compensate for it;
3. repeat for the next column.

Details that make it work: a dampening term (1% of H's mean diagonal) keeps H invertible; the
inverse is used through its upper Cholesky factor, which gives every update in one row; columns
are processed in blocks (32 here; 128 in the paper, whose GPU prefers bigger matrices) with the
updates to later blocks applied once per block ("lazy batch updates"); with *activation order*,
columns with the largest ``H`` diagonal (the most active inputs) go first, while there are many
columns left to absorb their error; with groups, each run of ``group_size`` consecutive columns
(in processing order) gets its own scale and zero point, computed when the run starts from the
weights as updated so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from course_utils.quantization.integer import asymmetric_params, round_asymmetric

__all__ = ["GPTQResult", "HessianAccumulator", "gptq_quantize", "rtn_quantize", "rtn_round_trip"]


class HessianAccumulator:
    """``H = 2 / n * Σ x xᵀ`` over the n calibration rows fed to :meth:`add` (float64)."""

    def __init__(self, in_features: int):
        self.in_features = in_features
        self.sum: torch.Tensor | None = None  # on the device of the first inputs
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """x (..., in_features): the inputs one batch sends into the layer."""
        rows = x.detach().reshape(-1, self.in_features).double()
        product = rows.T @ rows
        self.sum = product if self.sum is None else self.sum + product
        self.count += rows.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        if not self.count:
            raise ValueError("no calibration inputs were added")
        return (2 / self.count * self.sum).float()


@dataclass
class GPTQResult:
    """A weight (out, in) as ``(q - zero[:, g]) * scale[:, g]`` with ``g = group_index[column]``.

    q: (out, in) uint8 codes; scale, zero: (out, n_groups) float32; group_index: (in,) long.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    group_index: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        g = self.group_index
        return (self.q.float() - self.zero[:, g]) * self.scale[:, g]

    def split(self, sizes: list[int]) -> list[GPTQResult]:
        """The results for consecutive runs of ``sizes`` output rows (of weights quantized stacked)."""
        return [GPTQResult(q, scale, zero, self.group_index, self.bits) for q, scale, zero in
                zip(self.q.split(sizes), self.scale.split(sizes), self.zero.split(sizes), strict=True)]


def _group_size(in_features: int, group_size: int | None) -> int:
    """Columns per group (all of them without groups); a last, shorter group takes any remainder."""
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be positive or None, got {group_size}")
    return min(group_size or in_features, in_features)


def rtn_quantize(weight: torch.Tensor, bits: int = 4, group_size: int | None = 128) -> GPTQResult:
    """Round-to-nearest with the same asymmetric groups as GPTQ: the baseline GPTQ improves on."""
    w = weight.detach().float()
    size = _group_size(w.shape[1], group_size)
    params = [asymmetric_params(w[:, s:s + size].amin(1), w[:, s:s + size].amax(1), bits)
              for s in range(0, w.shape[1], size)]
    scale, zero = torch.stack([p[0] for p in params], 1), torch.stack([p[1] for p in params], 1)
    group_index = torch.arange(w.shape[1], device=w.device) // size
    q = round_asymmetric(w, scale[:, group_index], zero[:, group_index], bits)
    return GPTQResult(q, scale, zero, group_index, bits)


def rtn_round_trip(weight: torch.Tensor, bits: int = 4, group_size: int = 128) -> torch.Tensor:
    """``rtn_quantize(weight, bits, group_size).dequantize()`` without storing codes: (out, in) float32.

    Several times faster (no per-column gathers of scales), for searches that round a weight many
    times over (AWQ). The last, shorter group is padded with copies of one of its own columns,
    which change neither its minimum nor its maximum.
    """
    w = weight.detach().float()
    out_features, in_features = w.shape
    size = _group_size(in_features, group_size)
    if pad := -in_features % size:
        w = torch.cat([w, w[:, -1:].expand(out_features, pad)], 1)
    groups = w.reshape(out_features, -1, size)
    scale, zero = asymmetric_params(groups.amin(2, keepdim=True), groups.amax(2, keepdim=True), bits)
    codes = round_asymmetric(groups, scale, zero, bits, dtype=torch.float32)
    return ((codes - zero) * scale).reshape(out_features, -1)[:, :in_features]


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                  act_order: bool = True, damp: float = 0.01, block_size: int = 32) -> GPTQResult:
    """GPTQ for one linear layer's weight (out, in) given the Hessian (in, in) of its inputs."""
    out_features, in_features = weight.shape
    if hessian.shape != (in_features, in_features):
        raise ValueError(f"the Hessian must be ({in_features}, {in_features}), got {tuple(hessian.shape)}")
    size = _group_size(in_features, group_size)
    # a group must start a block: there every earlier column's error has reached the weights
    block_size = math.gcd(size, block_size)
    # Work on Wᵀ (in, out): a column of W, one input feature, is then a contiguous row.
    Wt = weight.detach().float().T.clone()
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights do not matter
    H[dead, dead] = 1
    Wt[dead] = 0
    device = Wt.device
    order = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(in_features, device=device)
    Wt, H = Wt[order], H[order][:, order]
    identity = torch.eye(in_features, dtype=H.dtype, device=device)
    H += damp * torch.mean(torch.diag(H)) * identity
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()

    q = torch.zeros(in_features, out_features, device=device)  # codes as floats until the end
    n_groups = -(-in_features // size)
    scale = torch.zeros(n_groups, out_features, device=device)
    zero = torch.zeros(n_groups, out_features, device=device)
    for start in range(0, in_features, block_size):
        end = min(start + block_size, in_features)
        W1, Hinv1 = Wt[start:end].clone(), Hinv[start:end, start:end]
        pivots = Hinv1.diagonal().tolist()
        errors = torch.empty_like(W1)
        for i in range(end - start):
            column = start + i
            if column % size == 0:  # a group starts a block: W1 is Wt[start:end] and Wt is up to date
                span = Wt[column:column + size]
                g_scale, g_zero = asymmetric_params(span.amin(0), span.amax(0), bits)
                scale[column // size], zero[column // size] = g_scale, g_zero
            codes = round_asymmetric(W1[i], g_scale, g_zero, bits, dtype=torch.float32)
            q[column] = codes
            error = torch.addcmul(W1[i], codes - g_zero, g_scale, value=-1, out=errors[i]).div_(pivots[i])
            W1[i + 1:].addr_(Hinv1[i, i + 1:], error, alpha=-1)  # spread the error over the columns still to come
        Wt[end:].addmm_(Hinv[start:end, end:].T, errors, alpha=-1)

    codes = torch.empty(in_features, out_features, dtype=torch.uint8, device=device)
    codes[order] = q.to(torch.uint8)  # back to the original column order
    group_index = torch.empty(in_features, dtype=torch.long, device=device)
    group_index[order] = torch.arange(in_features, device=device) // size
    return GPTQResult(codes.T.contiguous(), scale.T.contiguous(), zero.T.contiguous(), group_index, bits)
