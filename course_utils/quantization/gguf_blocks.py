"""llama.cpp's simplest GGUF block formats, byte for byte: Q8_0, Q4_0 and Q4_1.

A tensor is cut into blocks of 32 consecutive values (along its rows); each block is stored as
its own little record of one or two float16 numbers followed by the quantized values:

========  =====================================  =====  =====================================
format    record                                 bytes  value
========  =====================================  =====  =====================================
Q8_0      d (f16), 32 x int8 q                   34     d * q
Q4_0      d (f16), 16 bytes of 4-bit q           18     d * (q - 8)
Q4_1      d (f16), m (f16), 16 bytes of 4-bit q  20     d * q + m
========  =====================================  =====  =====================================

so Q8_0 spends 8.5 bits per weight, Q4_0 4.5 and Q4_1 5. The 4-bit values of a block are
packed two to a byte, *not* neighbour with neighbour: byte j holds value j in its low nibble
and value j + 16 in its high nibble.

Rounding follows llama.cpp's reference quantizer (``quantize_row_*_ref`` in ggml-quants.c)
exactly, float32 operation by float32 operation, so the bytes match the ``gguf`` package's
``gguf.quants``, which mirrors it:

* Q8_0: ``d = max|x| / 127``; ``q = roundf(x / d)``, halves rounded away from zero (C's ``roundf``,
  not Python's or PyTorch's round-half-to-even);
* Q4_0: ``d = m / -8`` where ``m`` is the value of largest magnitude *with its sign*, so that value
  lands exactly on the level -8 and the levels reach to +7 on the other side;
  ``q = min(15, trunc(x / d + 8.5))``;
* Q4_1: ``d = (max - min) / 15``, ``m = min``; ``q = min(15, trunc((x - min) / d + 0.5))``.

The scale is computed in float32 and only *stored* as float16, so the stored ``d`` differs
slightly from the one the values were rounded with; dequantization uses the stored one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GGUF_FORMATS", "GGUFFormat", "dequantize_gguf", "quantize_gguf"]

BLOCK = 32  # values per block, in all three formats


@dataclass(frozen=True)
class GGUFFormat:
    name: str
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.block_bytes / BLOCK


GGUF_FORMATS = {f.name: f for f in (GGUFFormat("Q8_0", 34), GGUFFormat("Q4_0", 18), GGUFFormat("Q4_1", 20))}


def _format(name: str) -> GGUFFormat:
    try:
        return GGUF_FORMATS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown GGUF block format {name!r}; choose from {sorted(GGUF_FORMATS)}") from None


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    """(n, 1) float32 -> (n, 2) the little-endian bytes of its float16 rounding."""
    return x.to(torch.float16).view(torch.uint8)


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """C's roundf: to the nearest integer, halves away from zero (a - floor(a) is exact in float32)."""
    a = x.abs()
    whole = torch.floor(a)
    return torch.sign(x) * (whole + (a - whole >= 0.5).float())


def _inverse(d: torch.Tensor) -> torch.Tensor:
    """1 / d, and 0 where d is 0 (an all-zero block quantizes to zeros)."""
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _pack_halves(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) values 0..15 -> (n, 16) bytes: value j low nibble, value j + 16 high nibble."""
    q = q.to(torch.uint8)
    return q[:, :BLOCK // 2] | (q[:, BLOCK // 2:] << 4)


def _unpack_halves(packed: torch.Tensor) -> torch.Tensor:
    """(n, 16) bytes -> (n, 32) float32 values 0..15."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=1).float()


def quantize_gguf(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Float tensor (..., n), n a multiple of 32 -> uint8 (..., n // 32, block_bytes), llama.cpp's bytes."""
    f = _format(fmt)
    if x.dim() == 0 or x.shape[-1] % BLOCK:
        raise ValueError(f"{f.name} quantizes rows of a multiple of {BLOCK} values; got shape {tuple(x.shape)}")
    blocks = x.detach().to(torch.float32).reshape(-1, BLOCK)
    if f.name == "Q8_0":
        d = blocks.abs().amax(1, keepdim=True) / 127
        q = _roundf(blocks * _inverse(d)).to(torch.int8).view(torch.uint8)
        out = torch.cat([_f16_bytes(d), q], dim=1)
    elif f.name == "Q4_0":
        signed_max = blocks.gather(1, blocks.abs().argmax(1, keepdim=True))
        d = signed_max / -8
        q = torch.trunc(blocks * _inverse(d) + 8.5).clamp(0, 15)
        out = torch.cat([_f16_bytes(d), _pack_halves(q)], dim=1)
    else:  # Q4_1
        low, high = blocks.amin(1, keepdim=True), blocks.amax(1, keepdim=True)
        d = (high - low) / 15
        q = torch.trunc((blocks - low) * _inverse(d) + 0.5).clamp(0, 15)
        out = torch.cat([_f16_bytes(d), _f16_bytes(low), _pack_halves(q)], dim=1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // BLOCK, f.block_bytes)


def dequantize_gguf(data: torch.Tensor, fmt: str) -> torch.Tensor:
    """uint8 (..., n_blocks, block_bytes) -> float32 (..., n_blocks * 32)."""
    f = _format(fmt)
    if data.dtype != torch.uint8 or data.dim() < 2 or data.shape[-1] != f.block_bytes:
        raise ValueError(f"{f.name} data must be uint8 (..., blocks, {f.block_bytes}), got {data.dtype} "
                         f"{tuple(data.shape)}")
    records = data.reshape(-1, f.block_bytes)
    d = records[:, :2].contiguous().view(torch.float16).float()  # (n, 1)
    if f.name == "Q8_0":
        values = d * records[:, 2:].contiguous().view(torch.int8).float()
    elif f.name == "Q4_0":
        values = d * (_unpack_halves(records[:, 2:]) - 8)
    else:
        m = records[:, 2:4].contiguous().view(torch.float16).float()
        values = d * _unpack_halves(records[:, 4:]) + m
    return values.reshape(*data.shape[:-2], data.shape[-2] * BLOCK)
