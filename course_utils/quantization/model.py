"""Quantizing a whole model: every linear layer's weight really stored in its quantized form.

:func:`quantize_model` replaces each ``nn.Linear`` (except the output head) with a
:class:`QuantizedLinear` that keeps only the packed data as buffers (so ``model_bytes`` measures
the memory, it does not assume it) and computes with it: its forward pass dequantizes the
weight, unless its scheme has its own ``matmul`` (``llm.int8`` multiplies in int8 with outlier
decomposition). These are
reference implementations for measuring quality and memory, not fast kernels: on a GPU, use a
library's fused kernels (bitsandbytes, llama.cpp, GPTQ/Marlin kernels in vLLM).

The schemes and their bits per weight are listed in :mod:`~course_utils.quantization.schemes`;
the calibrated ones (GPTQ, AWQ) in :mod:`~course_utils.quantization.calibrated`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.quantization.schemes import SCHEMES, Tensors, get_scheme

__all__ = ["QuantizedLinear", "dequantize_model", "linear_bits_per_weight", "linear_layers", "model_bytes",
           "quantize_model"]


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
    def from_linear(cls, linear: nn.Linear, scheme: str) -> QuantizedLinear:
        """Quantize ``linear`` with ``scheme``'s ``store``."""
        return cls.from_tensors(linear, scheme, get_scheme(scheme).quantize(linear.weight.detach()))

    @classmethod
    def from_tensors(cls, linear: nn.Linear, scheme: str, tensors: Tensors) -> QuantizedLinear:
        """The layer that replaces ``linear`` (its shape and bias) with already quantized ``tensors``."""
        return cls(scheme, linear.in_features, linear.out_features, tensors, linear.bias)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._names}

    def dequantized_weight(self) -> torch.Tensor:
        """The (out, in) float32 weight the stored data stands for."""
        shape = (self.out_features, self.in_features)
        return SCHEMES[self.scheme].load(self._tensors(), shape).reshape(shape)

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
        if (matmul := SCHEMES[self.scheme].matmul) is not None:
            out = matmul(x, self._tensors())
            return out if self.bias is None else out + self.bias
        if torch.is_grad_enabled() and x.requires_grad:  # training through this layer (QLoRA)
            out = _DequantizedMatmul.apply(x, self)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.scheme}, in_features={self.in_features}, out_features={self.out_features}"


def linear_layers(model: nn.Module, skip: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Linear]]:
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
    llama.cpp's usual mixes. The calibrated schemes (``gptq4-g128``, ``awq4-g128``) need
    ``calibration`` token ids (batch, length) and a course
    :class:`~course_utils.architecture.transformer.Llama`.
    """
    chosen = get_scheme(scheme)
    if chosen.calibrate is not None:  # calibrated on the activations of the model itself
        chosen.calibrate(model, calibration, skip)
        return model
    for parent, name, linear in linear_layers(model, skip):
        setattr(parent, name, QuantizedLinear.from_linear(linear, scheme))
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
