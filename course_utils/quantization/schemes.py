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
* ``gptq4-g128``: GPTQ 4-bit with the same groups (plus a group index per input column); it needs
  calibration inputs, so only :func:`~course_utils.quantization.model.quantize_model` can apply it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import GPTQResult, rtn_quantize
from course_utils.quantization.integer import pack_nibbles, quantize_int, unpack_nibbles
from course_utils.quantization.nf4 import NF4Quantized, dequantize_nf4, quantize_nf4

__all__ = ["GROUP", "SCHEMES", "Scheme", "get_scheme", "grouped_tensors", "register_scheme"]

GROUP = 128  # input columns per scale of the grouped 4-bit schemes (rtn4-g128, gptq4-g128)
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Scheme:
    """How one format stores an (out, in) weight.

    ``store(weight)`` returns the tensors a layer keeps (``None`` for schemes that need calibration
    data); ``load(tensors, (out, in))`` rebuilds the float32 weight. ``int8_compute`` marks schemes
    whose layers multiply in int8 (LLM.int8()) instead of de-quantizing the weight first.
    """

    name: str
    summary: str
    load: Callable[[Tensors, tuple[int, int]], torch.Tensor]
    store: Callable[[torch.Tensor], Tensors] | None = None
    int8_compute: bool = False

    @property
    def needs_calibration(self) -> bool:
        return self.store is None

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


def _grouped_weight(t: Tensors, shape: tuple[int, int]) -> torch.Tensor:
    return GPTQResult(unpack_nibbles(t["packed"]), t["scale"], t["zero"], t["group_index"].long(), 4).dequantize()


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


def _gguf(name: str, summary: str) -> Scheme:
    return Scheme(name, summary, load=lambda t, shape: dequantize_gguf(t["blocks"], name).reshape(shape),
                  store=lambda w: {"blocks": quantize_gguf(w, name)})


register_scheme(_gguf("q8_0", "GGUF Q8_0: blocks of 32 int8 with a float16 scale (8.5 bits)"))
register_scheme(_gguf("q4_0", "GGUF Q4_0: blocks of 32 symmetric 4-bit with a float16 scale (4.5 bits)"))
register_scheme(_gguf("q4_1", "GGUF Q4_1: blocks of 32 4-bit with float16 scale and minimum (5.0 bits)"))
register_scheme(Scheme("nf4", "QLoRA NF4, blocks of 64, double-quantized scales (about 4.13 bits)",
                       load=_nf4_weight, store=_nf4_tensors))
register_scheme(Scheme("int8", "int8 absmax per output channel, de-quantized for the matmul",
                       load=_int8_weight, store=_int8_tensors))
register_scheme(Scheme("llm.int8", "the int8 weights, multiplied with LLM.int8() (outlier columns in float)",
                       load=_int8_weight, store=_int8_tensors, int8_compute=True))
register_scheme(Scheme("rtn4-g128", f"round-to-nearest 4-bit, asymmetric, groups of {GROUP}",
                       load=_grouped_weight, store=lambda w: grouped_tensors(rtn_quantize(w, 4, GROUP))))
register_scheme(Scheme("gptq4-g128", f"GPTQ 4-bit, groups of {GROUP}, calibrated block by block",
                       load=_grouped_weight))
