"""QLoRA (Dettmers et al., 2023): LoRA adapters over a frozen base stored in 4-bit NF4.

The base model's linear layers become chapter 5's :class:`~course_utils.quantization.QuantizedLinear`
in NF4 (blocks of 64, double-quantized scales): they hold buffers only, so nothing in them can be
trained, and each forward pass de-quantizes the weight on the fly. The adapters stay in float32
and receive every gradient; gradients flow *through* the de-quantized base to reach the adapters
of earlier layers. The output head stays in float, as in chapter 5.
"""

from __future__ import annotations

from torch import nn

from course_utils.finetune.lora import LoRAConfig, inject_lora
from course_utils.quantization import quantize_model

__all__ = ["prepare_qlora"]


def prepare_qlora(model: nn.Module, config: LoRAConfig, skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Quantize every linear layer of ``model`` but ``skip`` to NF4 in place, then add LoRA adapters.

    Returns the names of the adapted layers (see :func:`~course_utils.finetune.lora.inject_lora`).
    """
    quantize_model(model, "nf4", skip=skip)
    return inject_lora(model, config)
