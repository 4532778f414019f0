"""NF4, the 4-bit "NormalFloat" of QLoRA (Dettmers et al., 2023), stored as bitsandbytes stores it.

Trained weights are roughly normally distributed, so evenly spaced levels (int4) waste precision
in the tails and starve the crowded middle. NF4 places its 16 levels at quantiles of the
standard normal instead, rescaled to [-1, 1]: 8 on the positive side, 7 on the negative side, and
an exact zero. Quantizing a block of 64 weights divides them by the block's absolute maximum and
picks the nearest level for each; the 4-bit indices are packed two per byte, the *first* value of
each pair in the high nibble (the opposite of GGUF's order).

Each block also stores its absmax, a float32: 32 bits per 64 weights, half a bit per weight.
**Double quantization** stores these scales in 8 bits instead: subtract their mean, then
quantize them in blocks of 256 with bitsandbytes' signed 8-bit "dynamic" map (levels spaced
evenly within each decade from 1e-6 to 1, so small and large scales both keep about two
significant digits), keeping one float32 scale per 256 blocks. That brings the overhead from
0.5 to about 8/64 + 32/(64 * 256) = 0.127 bits per weight.

The 4-bit codes, their packing and the float32 block scales reproduce bitsandbytes'
``quantize_4bit(..., quant_type="nf4")`` byte for byte (the tests compare them). For the 8-bit
codes of the scales we take the nearest level; bitsandbytes' CPU kernel finds it with an
approximate binary search that, on a fraction of a percent of the scales, lands one level off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NF4_BLOCK", "NF4_CODE", "NF4Quantized", "dequantize_nf4", "dynamic_map", "nf4_levels_from_normal",
           "quantize_nf4"]

NF4_BLOCK = 64  # weights per absmax
SCALE_BLOCK = 256  # absmax values per second-level scale, with double quantization

# The 16 NF4 levels as bitsandbytes ships them (float32). nf4_levels_from_normal() rebuilds them
# from the normal quantiles to within float32 rounding; the shipped values are kept so that
# codes and dequantized weights match bitsandbytes exactly.
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=torch.float32)


def nf4_levels_from_normal() -> torch.Tensor:
    """The NF4 levels from their definition: normal quantiles, 8 positive, 7 negative, and zero.

    The outermost quantile is taken at probability ``delta``, halfway between 1 - 1/(2*15) and
    1 - 1/(2*16) (the extreme probabilities for 15 and 16 levels), since the normal's 0 and 1
    quantiles are infinite.
    """
    from scipy.stats import norm

    delta = 0.5 * ((1 - 1 / 30) + (1 - 1 / 32))
    positive = norm.ppf(np.linspace(delta, 0.5, 9)[:-1])
    negative = -norm.ppf(np.linspace(delta, 0.5, 8)[:-1])
    levels = np.sort(np.concatenate([negative, [0.0], positive]))
    return torch.tensor(levels / levels.max(), dtype=torch.float32)


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (256 sorted float32 levels in [-1, 1]).

    For the decade 10^(i-6), i = 0..6, it holds 2^i levels: the midpoints of 2^i equal steps
    from 0.1 to 1, times 10^(i-6), with both signs; plus 0 and 1.
    """
    levels = [0.0, 1.0]
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        midpoints = (edges[:-1] + edges[1:]) / 2.0
        levels += (10 ** (i - 6) * midpoints).tolist() + (-(10 ** (i - 6)) * midpoints).tolist()
    return torch.tensor(sorted(levels), dtype=torch.float32)


def _nearest(scaled: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the level nearest to each value, as uint8: the count of midpoints between sorted
    levels that lie below it (a value exactly on a midpoint takes the lower level)."""
    levels = levels.to(scaled.device)
    midpoints = (levels[:-1] + levels[1:]) / 2
    return torch.bucketize(scaled, midpoints).to(torch.uint8)


def _blockwise(x: torch.Tensor, block: int, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat x (n,), n a multiple of ``block`` -> (indices (n,) uint8, absmax (n // block,) float32)."""
    blocks = x.reshape(-1, block)
    absmax = blocks.abs().amax(1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1).reshape(-1)  # zeros stay 0
    return _nearest(scaled, levels), absmax


@dataclass
class NF4Quantized:
    """An NF4 tensor. packed: (n / 2,) uint8; absmax: (n / 64,) float32, or with double quantization
    absmax: (n / 64,) uint8 codes of the dynamic map, scale_absmax: (n / 16384,) float32 and offset."""

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, ...]
    scale_absmax: torch.Tensor | None = None
    offset: torch.Tensor | None = None  # () float32, the mean subtracted from the block scales

    @property
    def nbytes(self) -> int:
        extra = 0 if self.scale_absmax is None else self.scale_absmax.numel() * 4 + 4
        return self.packed.numel() + self.absmax.numel() * self.absmax.element_size() + extra

    def block_scales(self) -> torch.Tensor:
        """(n / 64,) float32 absmax of each block, decoding the double quantization if any."""
        if self.scale_absmax is None:
            return self.absmax
        codes = dynamic_map().to(self.absmax.device)[self.absmax.long()]
        padding = -len(codes) % SCALE_BLOCK
        codes = torch.cat([codes, codes.new_zeros(padding)]).reshape(-1, SCALE_BLOCK)
        return (codes * self.scale_absmax[:, None]).reshape(-1)[:self.absmax.numel()] + self.offset


def quantize_nf4(x: torch.Tensor, double_quant: bool = True) -> NF4Quantized:
    """Quantize a float tensor (numel a multiple of 64) to NF4 in blocks of 64."""
    if x.numel() % NF4_BLOCK:
        raise ValueError(f"NF4 quantizes blocks of {NF4_BLOCK} values; {tuple(x.shape)} has {x.numel()}")
    codes, absmax = _blockwise(x.detach().float().reshape(-1), NF4_BLOCK, NF4_CODE)
    packed = (codes[0::2] << 4) | codes[1::2]  # first of each pair in the high nibble
    if not double_quant:
        return NF4Quantized(packed, absmax, tuple(x.shape))
    offset = absmax.mean()
    centred = absmax - offset
    padding = -len(centred) % SCALE_BLOCK  # zeros leave a short last block's absmax unchanged
    scale_codes, scale_absmax = _blockwise(torch.cat([centred, centred.new_zeros(padding)]), SCALE_BLOCK,
                                           dynamic_map())
    return NF4Quantized(packed, scale_codes[:len(centred)], tuple(x.shape), scale_absmax, offset)


def dequantize_nf4(t: NF4Quantized) -> torch.Tensor:
    """The float32 tensor an :class:`NF4Quantized` stands for."""
    codes = torch.stack([t.packed >> 4, t.packed & 0x0F], dim=1).reshape(-1)
    values = NF4_CODE.to(t.packed.device)[codes.long()].reshape(-1, NF4_BLOCK) * t.block_scales()[:, None]
    return values.reshape(t.shape)
