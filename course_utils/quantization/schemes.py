"""The registry of weight-quantization schemes: one entry says how a scheme stores and rebuilds a matrix.

A :class:`Scheme` turns an (out, in) float weight into named tensors (what a quantized layer keeps
as buffers) and back. :class:`~course_utils.quantization.model.QuantizedLinear`,
:func:`~course_utils.quantization.model.quantize_model`, notebook 05 and ``benchmarks/quant_bench.py``
all look schemes up here, so a new format is one :func:`register_scheme` call, not a new branch in
each of them.

Registered (name: bits per weight of the linear layers):

* ``q8_0``, ``q4_0``, ``q4_1``: llama.cpp's GGUF blocks of 32 (8.5, 4.5, 5.0);
* ``nf4``: QLoRA's NormalFloat with double-quantized scales (about 4.13);
* ``int8``: per-channel absmax int8, weights only, computed in float (8 + 32 / in_features);
* ``llm.int8``: the same weights, multiplied with LLM.int8() (int8 activations, outliers in float);
* ``rtn4-g128``: round-to-nearest 4-bit, asymmetric, groups of 128 (4 + 2 x 32/128 = 4.5 stored here
  as float32 scale and zero point);
* ``gptq4-g128`` and ``awq4-g128``: GPTQ and AWQ, 4-bit with the same groups (plus a group index per
  input column); they need calibration inputs, so they are registered with a whole-model
  ``calibrate`` function by :mod:`~course_utils.quantization.calibrated` and only
  :func:`~course_utils.quantization.model.quantize_model` can apply them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import GPTQResult, rtn_quantize
from course_utils.quantization.integer import pack_nibbles, quantize_int, unpack_nibbles
from course_utils.quantization.llm_int8 import int8_matmul
from course_utils.quantization.nf4 import NF4_BLOCK, SCALE_BLOCK, NF4Quantized, dequantize_nf4, quantize_nf4

__all__ = ["GROUP", "SCHEMES", "Scheme", "get_scheme", "grouped_bits", "grouped_tensors", "grouped_weight",
           "register_scheme"]

GROUP = 128  # input columns per scale of the grouped 4-bit schemes (rtn4-g128, gptq4-g128)
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Scheme:
    """How one format stores an (out, in) weight, rebuilds it and multiplies with it.

    ``store(weight)`` returns the tensors a layer keeps; ``load(tensors, (out, in))`` rebuilds the
    float32 weight; ``bits(out, in)`` is the stored bits per weight, scales included, that the
    format's layout implies (tests compare it with what a layer really stores). ``matmul(x,
    tensors)``, where given, computes ``x Wᵀ`` from the stored tensors (LLM.int8()'s int8
    product); otherwise a layer de-quantizes the weight and multiplies in float. A scheme that
    needs calibration inputs has no ``store`` but a ``calibrate(model, calibration, skip)`` that
    quantizes a whole model in place.
    """

    name: str
    summary: str
    load: Callable[[Tensors, tuple[int, int]], torch.Tensor]
    bits: Callable[[int, int], float]
    store: Callable[[torch.Tensor], Tensors] | None = None
    matmul: Callable[[torch.Tensor, Tensors], torch.Tensor] | None = None
    calibrate: Callable[..., None] | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.calibrate is not None

    def quantize(self, weight: torch.Tensor) -> Tensors:
        """weight (out, in) -> the tensors a layer of this scheme keeps."""
        if self.store is None:
            raise ValueError(f"{self.name} needs calibration inputs: use quantize_model(model, {self.name!r}, "
                             "calibration=...)")
        return self.store(weight)

    def round_trip(self, weight: torch.Tensor) -> torch.Tensor:
        """weight (out, in) -> the float32 (out, in) matrix this scheme would store in its place."""
        return self.load(self.quantize(weight), tuple(weight.shape))


SCHEMES: dict[str, Scheme] = {}


def register_scheme(scheme: Scheme) -> Scheme:
    """Add ``scheme`` to :data:`SCHEMES` (a name can be registered once)."""
    if scheme.name in SCHEMES:
        raise ValueError(f"a scheme named {scheme.name!r} is already registered")
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> Scheme:
    """The registered scheme ``name``, or a ValueError that lists the names there are."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}") from None


def grouped_tensors(result: GPTQResult) -> Tensors:
    """What a grouped 4-bit layer keeps: nibbles, per-group scale and zero, and each column's group."""
    return {"packed": pack_nibbles(result.q), "scale": result.scale, "zero": result.zero,
            "group_index": result.group_index.to(torch.int16)}


def grouped_weight(t: Tensors, shape: tuple[int, int]) -> torch.Tensor:
    """The float32 weight of :func:`grouped_tensors`' tensors."""
    return GPTQResult(unpack_nibbles(t["packed"]), t["scale"], t["zero"], t["group_index"].long(), 4).dequantize()


def grouped_bits(out_features: int, in_features: int) -> float:
    """4-bit codes, a float32 scale and zero per group of GROUP, an int16 group index per input column."""
    return 4 + 2 * 32 / GROUP + 16 / out_features


def _nf4_tensors(weight: torch.Tensor) -> Tensors:
    q = quantize_nf4(weight)
    return {"packed": q.packed, "absmax": q.absmax, "scale_absmax": q.scale_absmax, "offset": q.offset}


def _nf4_weight(t: Tensors, shape: tuple[int, int]) -> torch.Tensor:
    return dequantize_nf4(NF4Quantized(t["packed"], t["absmax"], shape, t["scale_absmax"], t["offset"]))


def _int8_tensors(weight: torch.Tensor) -> Tensors:
    q = quantize_int(weight, 8, symmetric=True, granularity="channel")
    return {"q": q.q, "scale": q.scale[:, 0]}


def _int8_weight(t: Tensors, shape: tuple[int, int]) -> torch.Tensor:
    return t["q"].float() * t["scale"][:, None]


def _nf4_bits(out_features: int, in_features: int) -> float:
    """4-bit codes, a uint8 absmax per block of 64, a float32 scale per 256 blocks, one float32 offset."""
    return 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * SCALE_BLOCK) + 32 / (out_features * in_features)


def _int8_bits(out_features: int, in_features: int) -> float:
    return 8 + 32 / in_features  # int8 codes and a float32 scale per output row


def _gguf(name: str, summary: str, bits: float) -> Scheme:
    return Scheme(name, summary, load=lambda t, shape: dequantize_gguf(t["blocks"], name).reshape(shape),
                  bits=lambda out_features, in_features: bits, store=lambda w: {"blocks": quantize_gguf(w, name)})


register_scheme(_gguf("q8_0", "GGUF Q8_0: blocks of 32 int8 with a float16 scale (8.5 bits)", 8.5))
register_scheme(_gguf("q4_0", "GGUF Q4_0: blocks of 32 symmetric 4-bit with a float16 scale (4.5 bits)", 4.5))
register_scheme(_gguf("q4_1", "GGUF Q4_1: blocks of 32 4-bit with float16 scale and minimum (5.0 bits)", 5.0))
register_scheme(Scheme("nf4", "QLoRA NF4, blocks of 64, double-quantized scales (about 4.13 bits)",
                       load=_nf4_weight, bits=_nf4_bits, store=_nf4_tensors))
register_scheme(Scheme("int8", "int8 absmax per output channel, de-quantized for the matmul",
                       load=_int8_weight, bits=_int8_bits, store=_int8_tensors))
register_scheme(Scheme("llm.int8", "the int8 weights, multiplied with LLM.int8() (outlier columns in float)",
                       load=_int8_weight, bits=_int8_bits, store=_int8_tensors,
                       matmul=lambda x, t: int8_matmul(x, t["q"], t["scale"])))
register_scheme(Scheme("rtn4-g128", f"round-to-nearest 4-bit, asymmetric, groups of {GROUP}",
                       load=grouped_weight, bits=grouped_bits,
                       store=lambda w: grouped_tensors(rtn_quantize(w, 4, GROUP))))
