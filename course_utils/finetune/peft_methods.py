"""The parameter-efficient rows of the article's table through peft, the library used at work.

The course writes LoRA itself (:mod:`~course_utils.finetune.lora`) and checks it against peft. The
other two methods are run through peft only, since the course does not teach their internals
beyond what fits in a sentence each:

* **IA3** (Liu et al., 2022) learns one vector per adapted layer that rescales the layer's
  activations elementwise: the output of k and v, the input of the MLP's down projection. Nothing
  else trains, so the count is the sum of those layers' widths.
* **Prompt tuning** (Lester et al., 2021) learns ``num_virtual_tokens`` input embeddings that peft
  puts before every prompt; the model itself stays frozen.

:func:`expected_trainable` computes each method's trainable parameter count from the model's
shapes, so a notebook can set it beside what peft reports (``get_nb_trainable_parameters``).

Generating from a prompt-tuned model goes through :class:`PromptTunedGenerator`: with the
transformers release the course pins, peft's own ``generate`` for prompt tuning drops the
position and cache bookkeeping and returns text unrelated to the learned prompt (peft issues
2123 and 2131 describe the family of problems); the wrapper puts the learned embeddings before
the prompt's and calls the base model's ``generate`` on the embeddings, which transformers
supports directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peft
import torch
from torch import nn

from course_utils.architecture.sizing import config_shape
from course_utils.finetune.lora import ALL_LINEAR, count_lora_params, lora_parameters

__all__ = ["IA3_FEEDFORWARD", "IA3_TARGETS", "METHODS", "PromptTunedGenerator", "attach", "copy_course_lora",
           "expected_trainable", "peft_config"]

METHODS = ("lora", "ia3", "prompt_tuning")
IA3_TARGETS = ("k_proj", "v_proj", "down_proj")  # peft's default for Llama models
IA3_FEEDFORWARD = ("down_proj",)  # scaled on their input (the MLP's hidden units), the others on their output


def peft_config(method: str, *, r: int = 16, alpha: float = 32.0, targets: Sequence[str] = ("q_proj", "v_proj"),
                layers: Sequence[int] | None = None, num_virtual_tokens: int = 20, init_text: str | None = None,
                tokenizer_name: str | None = None):
    """The peft config of ``method`` (one of :data:`METHODS`) for a causal language model.

    lora: rank ``r``, ``alpha`` and ``targets`` in ``layers`` (all blocks when None), as the
    course's :class:`~course_utils.finetune.lora.LoRAConfig`; ia3: :data:`IA3_TARGETS`; prompt_tuning:
    ``num_virtual_tokens`` embeddings, random or (with ``init_text`` and ``tokenizer_name``)
    initialised from the embeddings of a text, as the paper recommends.
    """
    if method == "lora":
        return peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                               layers_to_transform=None if layers is None else list(layers), task_type="CAUSAL_LM")
    if method == "ia3":
        return peft.IA3Config(target_modules=list(IA3_TARGETS), feedforward_modules=list(IA3_FEEDFORWARD),
                              task_type="CAUSAL_LM")
    if method == "prompt_tuning":
        if init_text is not None:
            if tokenizer_name is None:
                raise ValueError("prompt tuning from a text needs tokenizer_name (a path or hub name peft can load)")
            return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens,
                                           prompt_tuning_init=peft.PromptTuningInit.TEXT,
                                           prompt_tuning_init_text=init_text, tokenizer_name_or_path=tokenizer_name)
        return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def attach(model, method: str, **options) -> peft.PeftModel:
    """``model`` (a transformers causal LM) wrapped by peft with ``method``'s adapter; only that trains."""
    return peft.get_peft_model(model, peft_config(method, **options))


def expected_trainable(config: Any, method: str, *, r: int = 16, targets: Sequence[str] = ("q_proj", "v_proj"),
                       layers: Sequence[int] | None = None, num_virtual_tokens: int = 20, **_ignored) -> int:
    """Trainable parameters of ``method`` on a Llama-family ``config``, from its shapes alone.

    lora: r·(in + out) per adapted layer, in ``layers`` (all blocks when None); ia3: the output
    width of k and v plus the input width of down_proj, per block; prompt_tuning: virtual tokens x
    hidden size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    _, d, blocks, _heads, kv, head_dim, ff = config_shape(config)
    if method == "lora":
        every_block = count_lora_params(config, r, "all-linear" if tuple(targets) == ALL_LINEAR else targets)
        return every_block if layers is None else every_block // blocks * len(set(layers))
    if method == "ia3":
        return blocks * (2 * kv * head_dim + ff)
    return num_virtual_tokens * d  # prompt tuning



@torch.no_grad()
def copy_course_lora(course_model: nn.Module, peft_model: peft.PeftModel) -> int:
    """Copy the course's LoRA tensors (A, B) into the matching layers of a peft LoRA model; returns
    how many tensors were copied. With the same A, B, rank and alpha the two compute the same function."""
    copied = 0
    for name, tensor in lora_parameters(course_model).items():
        layer_name, part = name.rsplit(".", 1)  # e.g. model.layers.3.self_attn.q_proj, lora_A
        layer = peft_model.base_model.model.get_submodule(layer_name)
        getattr(layer, part)[peft_model.active_adapter].weight.copy_(tensor)
        copied += 1
    return copied


class PromptTunedGenerator(nn.Module):
    """``generate`` for a peft prompt-tuned model: the learned embeddings, then the prompt's.

    Takes and returns what transformers' ``generate`` does for a decoder-only model given
    ``input_ids`` (B, T) and ``attention_mask`` (B, T): the prompt ids followed by the new ones, so
    it can stand in for the model in :func:`~course_utils.chat.generate_batch`.
    """

    def __init__(self, model: peft.PeftModel):
        super().__init__()
        if not model.active_peft_config.is_prompt_learning:
            raise ValueError("PromptTunedGenerator needs a prompt-tuned peft model; call generate on other models")
        self.model = model
        self.device = model.device
        self.generation_config = model.base_model.generation_config

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **options) -> torch.Tensor:
        batch = input_ids.shape[0]
        prefix = self.model.get_prompt(batch_size=batch).to(self.model.get_input_embeddings().weight.dtype)
        embeds = torch.cat([prefix, self.model.get_input_embeddings()(input_ids)], 1)  # (B, n + T, d)
        mask = torch.cat([attention_mask.new_ones(batch, prefix.shape[1]), attention_mask], 1)
        new = self.model.base_model.generate(inputs_embeds=embeds, attention_mask=mask, **options)
        return torch.cat([input_ids, new], 1)
