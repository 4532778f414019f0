"""Rotary position embeddings (RoPE) and the scalings that stretch a model's context.

RoPE rotates each pair of channels (i, i + D/2) of a query or key at position p by the angle
p * theta_i, with theta_i = base^(-2i/D). A dot product of a rotated query at position m and a
rotated key at position n then depends on m - n only: attention sees relative positions.

Context extension changes the frequencies theta_i (and sometimes scales the logits):

* ``linear`` (position interpolation): every theta_i / factor, i.e. positions squeezed;
* ``dynamic`` (NTK-aware): a larger base once the sequence outgrows the trained length, which
  stretches the slow channels a lot and the fast ones barely;
* ``yarn``: interpolate the slow channels, keep the fast ones, blend in between, and scale the
  attention logits by 0.1 * ln(factor) + 1;
* ``llama3``: Llama 3.1's piecewise rule on wavelengths, with a smooth ramp between.

:func:`inverse_frequencies` reproduces transformers' ``ROPE_INIT_FUNCTIONS`` for each kind
(tests/test_rope.py compares them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = [
    "RopeScaling", "apply_rope", "inverse_frequencies", "rope_cos_sin", "rope_from_config", "rotate_half",
    "scaling_from_config",
]


@dataclass(frozen=True)
class RopeScaling:
    """How to stretch RoPE; ``original_max_position`` is the context the model was trained on."""

    kind: Literal["linear", "dynamic", "yarn", "llama3"]
    factor: float
    original_max_position: int
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "dynamic", "yarn", "llama3"):
            raise ValueError(f"unknown RoPE scaling {self.kind!r}: use linear, dynamic, yarn or llama3")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")


def _plain(head_dim: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def inverse_frequencies(head_dim: int, base: float = 10000.0, scaling: RopeScaling | None = None,
                        seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(theta_i for i < D/2 as a (D/2,) float32 tensor, attention factor applied to cos and sin).

    ``seq_len`` matters only for ``dynamic`` scaling (the base grows with the sequence).
    """
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    if scaling is None:
        return _plain(head_dim, base), 1.0
    factor, original = scaling.factor, scaling.original_max_position
    if scaling.kind == "linear":
        return _plain(head_dim, base) / factor, 1.0
    if scaling.kind == "dynamic":
        length = max(seq_len or original, original)
        grown = base * ((factor * length / original) - (factor - 1)) ** (head_dim / (head_dim - 2))
        return _plain(head_dim, grown), 1.0
    if scaling.kind == "llama3":
        theta = _plain(head_dim, base)
        wavelength = 2 * math.pi / theta
        slow = wavelength > original / scaling.low_freq_factor  # long wavelengths: interpolate fully
        fast = wavelength < original / scaling.high_freq_factor  # short wavelengths: leave alone
        ramp = (original / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        blended = (1 - ramp) * theta / factor + ramp * theta
        return torch.where(slow, theta / factor, torch.where(fast, theta, blended)), 1.0
    # yarn: ramp between interpolation (slow channels) and extrapolation (fast channels)
    def channel_for(rotations: float) -> float:  # the channel that turns `rotations` times in `original`
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(channel_for(scaling.beta_fast)), 0)
    high = min(math.ceil(channel_for(scaling.beta_slow)), head_dim - 1)
    if low == high:
        high += 0.001
    keep = 1 - torch.clamp((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    theta = _plain(head_dim, base)
    attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return theta / factor * (1 - keep) + theta * keep, attention_factor


def scaling_from_config(config: Any) -> tuple[float, RopeScaling | None]:
    """(base, scaling) described by a transformers Llama-family config."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    base = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    kind = params.get("rope_type", "default")
    if kind == "default":
        return base, None
    original = params.get("original_max_position_embeddings") or config.max_position_embeddings
    extra = {k: params[k] for k in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow") if params.get(k)}
    return base, RopeScaling(kind, float(params["factor"]), int(original), **extra)


def rope_from_config(config: Any, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention factor for a transformers Llama-family config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return inverse_frequencies(head_dim, *scaling_from_config(config), seq_len)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor,
                 attention_factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (T, D) for integer ``positions`` of shape (T,)."""
    angles = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # channel i and i + D/2 share an angle
    return angles.cos() * attention_factor, angles.sin() * attention_factor


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys by the (T, D) tables from :func:`rope_cos_sin`."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)
