"""Integer quantization: a float tensor stored as small integers and a few float scales.

Two ways to map floats onto ``2**bits`` integer levels:

* **symmetric (absmax)**: ``q = round(x / s)`` with ``s = max|x| / (2**(bits-1) - 1)``; the levels are
  centred on zero (int8 uses -127..127), so zero is exact and no offset is stored.
* **asymmetric (zero-point)**: ``q = round(x / s) + z`` with ``s = (max - min) / (2**bits - 1)`` and
  an integer zero point ``z``; all ``2**bits`` levels cover the actual range ``[min, max]`` (widened
  to include 0, so that zero stays exact), which suits skewed data (say, after a ReLU) better.

Each scale (and zero point) covers a *granularity*: the whole tensor, one output channel (a row
of a weight matrix), or a group of ``group_size`` consecutive values of a row. Finer
granularity costs more stored scales and buys a smaller error: one outlier only stretches the
scale of its own group. Within its range, every value is reconstructed to within half a step,
``|x - dequantize(quantize(x))| <= s / 2``; the tests check this bound element by element.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["IntQuantized", "asymmetric_params", "dequantize_int", "pack_nibbles", "quantize_int", "round_asymmetric",
           "unpack_nibbles"]

Granularity = Literal["tensor", "channel", "group"]


@dataclass
class IntQuantized:
    """A quantized tensor: ``dequantized = (q - zero_point) * scale``, broadcast per group.

    q: the integers, the original shape (int8 for symmetric, uint8 for asymmetric);
    scale, zero_point: (rows, groups) float32 and int16 (zero_point is None when symmetric),
    with one row for ``"tensor"`` granularity and one group per row for ``"channel"``.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    group_size: int  # values per scale along the last dimension


def _grouped(x: torch.Tensor, granularity: Granularity, group_size: int | None) -> tuple[torch.Tensor, int]:
    """x (..., n) -> (rows, groups, values per group) and that group size."""
    if granularity == "tensor":
        return x.reshape(1, 1, -1), x.numel()
    if x.dim() < 2:
        raise ValueError(f"per-{granularity} quantization needs a matrix (rows, columns), got shape {tuple(x.shape)}")
    rows = x.reshape(-1, x.shape[-1])
    if granularity == "channel":
        return rows[:, None, :], x.shape[-1]
    if granularity != "group":
        raise ValueError(f"granularity must be 'tensor', 'channel' or 'group', got {granularity!r}")
    if not group_size or group_size < 1 or x.shape[-1] % group_size:
        raise ValueError(f"group_size must divide the last dimension ({x.shape[-1]}), got {group_size}")
    return rows.reshape(rows.shape[0], -1, group_size), group_size


def quantize_int(x: torch.Tensor, bits: int = 8, symmetric: bool = True, granularity: Granularity = "tensor",
                 group_size: int | None = None) -> IntQuantized:
    """Round-to-nearest quantization of ``x`` to ``bits``-bit integers (2 <= bits <= 8).

    ``granularity`` "channel" gives each row of a matrix its own scale; "group" gives every
    ``group_size`` consecutive values of a row their own (the last dimension must divide).
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8, got {bits}")
    if not x.is_floating_point():
        raise TypeError(f"can only quantize a floating-point tensor, got {x.dtype}")
    groups, size = _grouped(x.detach().float(), granularity, group_size)
    if symmetric:
        top = 2 ** (bits - 1) - 1  # e.g. 127: the levels -127..127 are symmetric around 0
        scale = groups.abs().amax(-1) / top
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero group stays zero
        q = torch.clamp(torch.round(groups / scale[..., None]), -top, top).to(torch.int8)
        zero_point = None
    else:
        scale, zero_point = asymmetric_params(groups.amin(-1), groups.amax(-1), bits)
        q = round_asymmetric(groups, scale[..., None], zero_point[..., None], bits)
        zero_point = zero_point.to(torch.int16)
    return IntQuantized(q.reshape(x.shape), scale, zero_point, bits, size)


def asymmetric_params(low: torch.Tensor, high: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and (float, integer-valued) zero point mapping [low, high], widened to include 0, onto 0..2**bits-1."""
    top = 2 ** bits - 1
    low, high = low.clamp(max=0), high.clamp(min=0)  # zero stays exactly representable
    scale = (high - low) / top
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # an all-zero group stays zero
    return scale, torch.clamp(torch.round(-low / scale), 0, top)


def round_asymmetric(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int,
                     dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, 0, 2**bits - 1)`` as ``dtype`` (scale, zero_point broadcast to x)."""
    return torch.round(x / scale).add_(zero_point).clamp_(0, 2 ** bits - 1).to(dtype)


def dequantize_int(t: IntQuantized) -> torch.Tensor:
    """The float32 tensor the integers stand for."""
    shape = t.q.shape
    q = t.q.reshape(t.scale.shape[0], t.scale.shape[1], t.group_size).float()
    if t.zero_point is not None:
        q = q - t.zero_point[..., None].float()
    return (q * t.scale[..., None]).reshape(shape)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """4-bit values (..., 2n) in a uint8 tensor -> (..., n) bytes, element 2i in the low nibble of byte i."""
    if q.shape[-1] % 2:
        raise ValueError(f"need an even number of 4-bit values to pack, got {q.shape[-1]}")
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: (..., n) bytes -> (..., 2n) values 0..15 (uint8)."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten(-2)
