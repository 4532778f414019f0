"""What fine-tuning holds in memory: weights, gradients, optimizer state and activations.

:func:`measure_training_memory` takes one real training step and counts bytes: the model's
parameters and buffers, every gradient, AdamW's two moment tensors per trained parameter, and the
activations, i.e. every tensor autograd saved for the backward pass (found through
``torch.autograd.graph.saved_tensors_hooks``; weights it saves are not counted twice).

:func:`estimate_training_memory` does the same arithmetic for a published config, for a model
too big to run here. It counts bytes per parameter as mixed-precision training stores them:

* full fine-tuning: 16-bit weights (2 B) and gradients (2 B), a float32 master copy (4 B) and
  AdamW's two float32 moments (8 B): 16 bytes for every parameter;
* LoRA: the frozen base in 16 bits (2 B per parameter); the adapters at 16 bytes each;
* QLoRA: the frozen base in NF4 with double-quantized scales (about 4.13 bits per weight, the
  embeddings and output head in 16 bits); the adapters at 16 bytes each.

Activations depend on batch and sequence length, not on the method (the base must be run
forward and backward in all three), so they are reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from course_utils.architecture.sizing import parameter_count
from course_utils.finetune.lora import ALL_LINEAR, count_lora_params
from course_utils.finetune.sft import labelled_logprobs, trainable_parameters
from course_utils.quantization import model_bytes

__all__ = ["MemoryBreakdown", "estimate_training_memory", "measure_training_memory"]

NF4_BITS = 4.127  # stored bits per weight of NF4 with double quantization (measured in chapter 5)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of each part of a training step."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def measure_training_memory(model, batch: dict[str, torch.Tensor], lr: float = 1e-4) -> MemoryBreakdown:
    """Run one AdamW step of ``model`` on ``batch`` (see :func:`~course_utils.finetune.sft.collate`)
    and count the bytes it held. The step really updates the trainable parameters."""
    parameters = trainable_parameters(model)
    stored = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in stored:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = -labelled_logprobs(model, batch).sum() / int((batch["labels"] != -100).sum())
    loss.backward()
    gradients = sum(p.grad.numel() * p.grad.element_size() for p in parameters if p.grad is not None)
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)  # the moments; not the scalar step counters
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return MemoryBreakdown(model_bytes(model), gradients, state, sum(saved.values()))


def estimate_training_memory(config: Any, method: str, r: int = 16, targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                             activations: int = 0) -> MemoryBreakdown:
    """Bytes to fine-tune a Llama-family ``config`` by ``method`` ("full", "lora" or "qlora").

    ``activations`` (bytes) is passed through: it depends on batch and sequence, not on the method.
    """
    total = parameter_count(config)
    if method == "full":
        return MemoryBreakdown(weights=2 * total, gradients=2 * total, optimizer=12 * total, activations=activations)
    if method not in ("lora", "qlora"):
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', got {method!r}")
    adapters = count_lora_params(config, r, ALL_LINEAR if targets == "all-linear" else targets)
    if method == "lora":
        base = 2 * total
    else:
        embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
        base = round((total - embeddings) * NF4_BITS / 8) + 2 * embeddings
    # adapters: 16-bit weights and gradients, float32 master copy and two AdamW moments
    return MemoryBreakdown(weights=base + 2 * adapters, gradients=2 * adapters, optimizer=12 * adapters,
                           activations=activations)
