"""Quantizing a whole model: every linear layer's weight really stored in its quantized form.

:func:`quantize_model` replaces each ``nn.Linear`` (except the output head) with a
:class:`QuantizedLinear` that keeps only the packed data as buffers (so ``model_bytes`` measures
the memory, it does not assume it) and computes with it: its forward pass dequantizes the
weight, except ``llm.int8``, which multiplies in int8 with outlier decomposition. These are
reference implementations for measuring quality and memory, not fast kernels: on a GPU, use a
library's fused kernels (bitsandbytes, llama.cpp, GPTQ/Marlin kernels in vLLM).

Schemes (name: bits per weight of the linear layers):

* ``q8_0``, ``q4_0``, ``q4_1``: llama.cpp's GGUF blocks of 32 (8.5, 4.5, 5.0);
* ``nf4``: QLoRA's NormalFloat with double-quantized scales (about 4.13);
* ``int8``: per-channel absmax int8, weights only, computed in float (8 + 32 / in_features);
* ``llm.int8``: the same weights, multiplied with LLM.int8() (int8 activations, outliers in float);
* ``rtn4-g128``: round-to-nearest 4-bit, asymmetric, groups of 128 (4 + 2 x 32/128 = 4.5 stored here
  as float32 scale and zero point);
* ``gptq4-g128``: GPTQ 4-bit with the same groups (plus a group index per input column),
  calibrated on ``calibration`` token ids, one transformer block after another.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import GPTQResult, HessianAccumulator, gptq_quantize, rtn_quantize
from course_utils.quantization.integer import pack_nibbles, quantize_int, unpack_nibbles
from course_utils.quantization.llm_int8 import int8_matmul
from course_utils.quantization.nf4 import NF4Quantized, dequantize_nf4, quantize_nf4

__all__ = ["SCHEMES", "QuantizedLinear", "dequantize_model", "linear_bits_per_weight", "model_bytes", "quantize_model"]

SCHEMES = ("q8_0", "q4_0", "q4_1", "nf4", "int8", "llm.int8", "rtn4-g128", "gptq4-g128")
GROUP = 128
# GPTQ's dampening, as a share of the Hessian's mean diagonal. The paper's 1% assumes 128 x 2048
# calibration tokens; with the few thousand the course uses, 10% keeps GPTQ from fitting the
# calibration text instead of the layer (notebook 05 measures both on held-out text).
GPTQ_DAMP = 0.1


def _grouped_tensors(result: GPTQResult) -> dict[str, torch.Tensor]:
    return {"packed": pack_nibbles(result.q), "scale": result.scale, "zero": result.zero,
            "group_index": result.group_index.to(torch.int16)}


def _grouped_weight(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return GPTQResult(unpack_nibbles(t["packed"]), t["scale"], t["zero"], t["group_index"].long(), 4).dequantize()


def _nf4_tensors(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    q = quantize_nf4(weight)
    return {"packed": q.packed, "absmax": q.absmax, "scale_absmax": q.scale_absmax, "offset": q.offset}


def _int8_tensors(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    q = quantize_int(weight, 8, symmetric=True, granularity="channel")
    return {"q": q.q, "scale": q.scale[:, 0]}


def _quantizer(scheme: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    if scheme in ("q8_0", "q4_0", "q4_1"):
        return lambda w: {"blocks": quantize_gguf(w, scheme)}
    if scheme == "nf4":
        return _nf4_tensors
    if scheme in ("int8", "llm.int8"):
        return _int8_tensors
    if scheme == "rtn4-g128":
        return lambda w: _grouped_tensors(rtn_quantize(w, 4, GROUP))
    raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")


class _DequantizedMatmul(torch.autograd.Function):
    """``x Wᵀ`` with W de-quantized in the forward pass and again in the backward pass.

    Plain ``F.linear`` would keep the float32 weight alive for the backward pass, so training
    through quantized layers (QLoRA) would hold a float32 copy of every weight and lose the
    memory it quantized for. This keeps only the packed data and rebuilds W when it is needed.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight().to(x.dtype))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output @ ctx.layer.dequantized_weight().to(grad_output.dtype), None


class QuantizedLinear(nn.Module):
    """A linear layer whose weight (out, in) exists only as the quantized buffers of ``scheme``."""

    def __init__(self, scheme: str, in_features: int, out_features: int, tensors: dict[str, torch.Tensor],
                 bias: torch.Tensor | None = None):
        super().__init__()
        self.scheme, self.in_features, self.out_features = scheme, in_features, out_features
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._names = tuple(tensors)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str, result: GPTQResult | None = None) -> QuantizedLinear:
        """Quantize ``linear`` (or store an already computed GPTQ ``result``)."""
        tensors = _grouped_tensors(result) if result is not None else _quantizer(scheme)(linear.weight.detach())
        return cls(scheme, linear.in_features, linear.out_features, tensors, linear.bias)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._names}

    def dequantized_weight(self) -> torch.Tensor:
        """The (out, in) float32 weight the stored data stands for."""
        t = self._tensors()
        if self.scheme in ("q8_0", "q4_0", "q4_1"):
            weight = dequantize_gguf(t["blocks"], self.scheme)
        elif self.scheme == "nf4":
            shape = (self.out_features, self.in_features)
            weight = dequantize_nf4(NF4Quantized(t["packed"], t["absmax"], shape, t["scale_absmax"], t["offset"]))
        elif self.scheme in ("int8", "llm.int8"):
            weight = t["q"].float() * t["scale"][:, None]
        else:
            weight = _grouped_weight(t)
        return weight.reshape(self.out_features, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the de-quantized weight (float32) and the bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight.data = self.dequantized_weight()
        if self.bias is not None:
            linear.bias.data = self.bias.clone()
        return linear

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        if self.scheme == "llm.int8":
            out = int8_matmul(x, self.q, self.scale)
            return out if self.bias is None else out + self.bias
        if torch.is_grad_enabled() and x.requires_grad:  # training through this layer (QLoRA)
            out = _DequantizedMatmul.apply(x, self)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.scheme}, in_features={self.in_features}, out_features={self.out_features}"


def _linear_layers(model: nn.Module, skip: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, layer) for every nn.Linear whose name does not end with one of ``skip``."""
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and not full.endswith(skip):
                found.append((module, child_name, child))
    return found


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: str, calibration: torch.Tensor | None = None,
                   skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace the linear layers of ``model`` in place with :class:`QuantizedLinear`; returns it.

    The output head (``lm_head``, often tied to the embeddings) stays in float, as in GPTQ and
    llama.cpp's usual mixes. ``gptq4-g128`` needs ``calibration`` token ids (batch, length) and a
    course :class:`~course_utils.transformer.Llama`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if scheme == "gptq4-g128":
        return _gptq_model(model, calibration, skip)
    for parent, name, linear in _linear_layers(model, skip):
        setattr(parent, name, QuantizedLinear.from_linear(linear, scheme))
    return model


def _recording(inputs: dict[int, torch.Tensor]):
    """A forward hook that keeps the tensor a layer read in ``inputs``, under the layer's id."""
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        inputs[id(module)] = args[0]
    return hook


def _gptq_model(model: nn.Module, calibration: torch.Tensor | None, skip: tuple[str, ...]) -> nn.Module:
    """GPTQ block by block: each block is calibrated on the outputs of the blocks already quantized.

    Layers that read the same tensor (q, k and v; gate and up) share its Hessian, so their weights
    are quantized stacked, in one pass: GPTQ treats output rows independently, so this gives what
    quantizing them one by one would, with one matrix inverse instead of three.
    """
    from course_utils.rope import rope_cos_sin
    from course_utils.transformer import Llama

    if not isinstance(model, Llama):
        raise TypeError("gptq4-g128 quantizes a course Llama (course_utils.transformer.Llama.from_hf(model))")
    if calibration is None or calibration.dim() != 2:
        raise ValueError("gptq4-g128 needs calibration token ids of shape (batch, length)")
    positions = torch.arange(calibration.shape[1], device=calibration.device)
    cos, sin = rope_cos_sin(positions, model.inv_freq, model.attention_factor)
    hidden = model.embed_tokens(calibration)
    for index, block in enumerate(model.layers):
        layers, inputs = _linear_layers(block, skip), {}
        hooks = [linear.register_forward_hook(_recording(inputs)) for _, _, linear in layers]
        try:
            block(hidden, cos, sin, index, None)
        finally:
            for hook in hooks:
                hook.remove()
        readers: dict[int, list[tuple[nn.Module, str, nn.Linear]]] = {}
        for parent, name, linear in layers:
            readers.setdefault(id(inputs[id(linear)]), []).append((parent, name, linear))
        for group in readers.values():
            accumulator = HessianAccumulator(group[0][2].in_features)
            accumulator.add(inputs[id(group[0][2])])
            stacked = torch.cat([linear.weight for _, _, linear in group])
            result = gptq_quantize(stacked, accumulator.hessian, 4, GROUP, damp=GPTQ_DAMP)
            parts = result.split([linear.out_features for _, _, linear in group])
            for (parent, name, linear), rows in zip(group, parts, strict=True):
                setattr(parent, name, QuantizedLinear.from_linear(linear, "gptq4-g128", rows))
        inputs.clear()
        hidden = block(hidden, cos, sin, index, None)  # what the next block sees: quantized outputs
    return model


def dequantize_model(model: nn.Module) -> nn.Module:
    """Replace every :class:`QuantizedLinear` in place with an ``nn.Linear`` of its dequantized weight."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QuantizedLinear):
                setattr(module, child_name, child.to_linear())
    return model


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, counting shared (tied) tensors once."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def linear_bits_per_weight(model: nn.Module) -> float:
    """Stored bits per weight of the model's quantized layers: packed data, scales and all."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    if not layers:
        raise ValueError("the model has no quantized layers; call quantize_model first")
    return 8 * sum(m.nbytes for m in layers) / sum(m.in_features * m.out_features for m in layers)
