"""The schemes that need calibration inputs: GPTQ and AWQ, applied to a course Llama block by block.

Both run the calibration token ids through the model one block at a time. Each block's linear
layers are quantized from the inputs they actually read there, and the next block is then fed the
outputs of the block *as quantized*, so that later blocks calibrate on what they will really see.
:func:`calibration_walk` does this walk once for both; each scheme only says what to do with a
block and its recorded inputs. Registering the two here (with :func:`register_scheme`) is all it
takes for :func:`~course_utils.quantization.model.quantize_model`, notebook 05 and the benchmark to
offer them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from course_utils.quantization.awq import fold_scales, search_scales
from course_utils.quantization.gptq import HessianAccumulator, gptq_quantize, rtn_quantize
from course_utils.quantization.model import QuantizedLinear, linear_layers
from course_utils.quantization.schemes import (
    GROUP,
    Scheme,
    grouped_bits,
    grouped_tensors,
    grouped_weight,
    register_scheme,
)

__all__ = ["GPTQ_DAMP", "awq_model", "calibration_walk", "gptq_model"]

# GPTQ's dampening, as a share of the Hessian's mean diagonal. The paper's 1% assumes 128 x 2048
# calibration tokens; with the few thousand the course uses, 10% keeps GPTQ from fitting the
# calibration text instead of the layer (notebook 05 measures both on held-out text).
GPTQ_DAMP = 0.1

Layers = list[tuple[nn.Module, str, nn.Linear]]


def _recording(inputs: dict[int, torch.Tensor]):
    """A forward hook that keeps the tensor a layer read in ``inputs``, under the layer's id."""
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        inputs[id(module)] = args[0]
    return hook


def calibration_walk(model: nn.Module, calibration: torch.Tensor | None, skip: tuple[str, ...],
                     scheme: str) -> Iterator[tuple[nn.Module, Layers, dict[int, torch.Tensor]]]:
    """For each block of the course Llama ``model``: (block, its linear layers, each one's input by id).

    The caller quantizes the block before asking for the next one; the walk then runs the
    calibration activations through the block as it has become. calibration: (batch, length) ids.
    """
    from course_utils.architecture.rope import rope_cos_sin
    from course_utils.architecture.transformer import Llama

    if not isinstance(model, Llama):
        raise TypeError(f"{scheme} quantizes a course Llama: pass "
                        "course_utils.architecture.transformer.Llama.from_hf(model)")
    if calibration is None or calibration.dim() != 2:
        raise ValueError(f"{scheme} needs calibration token ids of shape (batch, length)")
    positions = torch.arange(calibration.shape[1], device=calibration.device)
    cos, sin = rope_cos_sin(positions, model.inv_freq, model.attention_factor)
    hidden = model.embed_tokens(calibration)
    for index, block in enumerate(model.layers):
        layers, inputs = linear_layers(block, skip), {}
        hooks = [linear.register_forward_hook(_recording(inputs)) for _, _, linear in layers]
        try:
            block(hidden, cos, sin, index, None)
        finally:
            for hook in hooks:
                hook.remove()
        yield block, layers, inputs
        hidden = block(hidden, cos, sin, index, None)  # what the next block sees: quantized outputs


@torch.no_grad()
def gptq_model(model: nn.Module, calibration: torch.Tensor | None, skip: tuple[str, ...] = ("lm_head",)) -> None:
    """GPTQ on every linear layer of ``model`` but ``skip``, in place.

    Layers that read the same tensor (q, k and v; gate and up) share its Hessian, so their weights
    are quantized stacked, in one pass: GPTQ treats output rows independently, so this gives what
    quantizing them one by one would, with one matrix inverse instead of three.
    """
    for _block, layers, inputs in calibration_walk(model, calibration, skip, "gptq4-g128"):
        readers: dict[int, Layers] = {}
        for parent, name, linear in layers:
            readers.setdefault(id(inputs[id(linear)]), []).append((parent, name, linear))
        for group in readers.values():
            accumulator = HessianAccumulator(group[0][2].in_features)
            accumulator.add(inputs[id(group[0][2])])
            stacked = torch.cat([linear.weight for _, _, linear in group])
            result = gptq_quantize(stacked, accumulator.hessian, 4, GROUP, damp=GPTQ_DAMP)
            parts = result.split([linear.out_features for _, _, linear in group])
            for (parent, name, linear), rows in zip(group, parts, strict=True):
                setattr(parent, name, QuantizedLinear.from_tensors(linear, "gptq4-g128", grouped_tensors(rows)))


def _awq_groups(block: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """(the operation whose output they read, the layers sharing one set of AWQ factors) in a Llama block.

    o_proj reads the attention output, which v_proj's rows produce; with grouped-query attention
    one v row serves several query heads, so a factor per o_proj input cannot be folded into it:
    there (as in the AutoAWQ code) o_proj is rounded without factors.
    """
    attention, mlp = block.self_attn, block.mlp
    groups = [(block.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj]),
              (block.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]),
              (mlp.up_proj, [mlp.down_proj])]
    if attention.v_proj.out_features == attention.o_proj.in_features:
        groups.append((attention.v_proj, [attention.o_proj]))
    return groups


@torch.no_grad()
def awq_model(model: nn.Module, calibration: torch.Tensor | None, skip: tuple[str, ...] = ("lm_head",)) -> None:
    """AWQ on every linear layer of ``model`` but ``skip``, in place: factors searched per group of
    layers on their recorded inputs, folded into the operation before, then 4-bit round-to-nearest."""
    for block, layers, inputs in calibration_walk(model, calibration, skip, "awq4-g128"):
        searched = []
        for previous, group in _awq_groups(block):
            if any(id(layer) not in inputs for layer in group):
                continue  # a skipped layer: left as it is
            stacked = torch.cat([layer.weight for layer in group])
            searched.append((previous, group, search_scales(stacked, inputs[id(group[0])], 4, GROUP).scales))
        for previous, group, scales in searched:  # every search saw the block's original weights
            fold_scales(previous, group, scales)
        for parent, name, linear in layers:
            tensors = grouped_tensors(rtn_quantize(linear.weight, 4, GROUP))
            setattr(parent, name, QuantizedLinear.from_tensors(linear, "awq4-g128", tensors))


register_scheme(Scheme("gptq4-g128", f"GPTQ 4-bit, groups of {GROUP}, calibrated block by block",
                       load=grouped_weight, bits=grouped_bits, calibrate=gptq_model))
register_scheme(Scheme("awq4-g128", f"AWQ: activation-aware factors folded in, then 4-bit, groups of {GROUP}",
                       load=grouped_weight, bits=grouped_bits, calibrate=awq_model))
