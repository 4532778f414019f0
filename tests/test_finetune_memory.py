"""Memory of a training step, measured for full fine-tuning, LoRA and QLoRA, and estimated for 7B."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.architecture.sizing import published_config
from course_utils.finetune import LoRAConfig, inject_lora, prepare_qlora, trainable_parameter_count
from course_utils.finetune.memory import estimate_training_memory, measure_training_memory
from course_utils.finetune.sft import SFTExample, collate

CONFIG = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)


def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**CONFIG))


BATCH = collate([SFTExample(torch.arange(20) % 128, torch.cat([torch.full((10,), -100), torch.arange(10, 20)]))] * 2,
                pad_id=0)
ADAPT = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj"))


def test_full_fine_tuning_keeps_a_gradient_and_two_adam_moments_per_parameter():
    full = model()
    n = sum(p.numel() for p in full.parameters())
    buffers = sum(b.numel() * b.element_size() for b in full.buffers())  # the rotary frequencies
    memory = measure_training_memory(full, BATCH)
    assert memory.weights == 4 * n + buffers and memory.gradients == 4 * n and memory.optimizer == 8 * n
    assert memory.activations > 0 and memory.total == sum(
        (memory.weights, memory.gradients, memory.optimizer, memory.activations))


def test_lora_keeps_gradients_and_moments_for_the_adapters_only():
    lora = model()
    inject_lora(lora, ADAPT)
    adapters = trainable_parameter_count(lora)
    memory = measure_training_memory(lora, BATCH)
    assert memory.gradients == 4 * adapters and memory.optimizer == 8 * adapters


def test_qlora_stores_the_base_in_4_bits_and_keeps_no_float_weights_as_activations():
    lora, qlora = model(), model()
    inject_lora(lora, ADAPT)
    prepare_qlora(qlora, ADAPT)
    lora_memory, qlora_memory = measure_training_memory(lora, BATCH), measure_training_memory(qlora, BATCH)
    assert qlora_memory.weights < 0.6 * lora_memory.weights  # the embeddings and head stay float32
    assert qlora_memory.gradients == lora_memory.gradients
    # de-quantized weights are rebuilt in backward, not saved: the activations stay those of LoRA
    assert qlora_memory.activations <= 1.05 * lora_memory.activations


def test_the_7b_estimates_count_what_each_method_holds():
    llama = published_config("llama-2-7b")
    n = 6_738_415_616
    full = estimate_training_memory(llama, "full")
    assert (full.weights, full.gradients, full.optimizer) == (2 * n, 2 * n, 12 * n)  # 16 bytes per parameter
    assert full.total / 1e9 == pytest.approx(107.8, abs=0.1)
    lora = estimate_training_memory(llama, "lora", r=16)
    adapters = 16_777_216
    assert lora.total == 2 * n + 16 * adapters
    qlora = estimate_training_memory(llama, "qlora", r=16)
    embeddings = 2 * 32000 * 4096  # untied input and output embeddings stay 16-bit
    assert qlora.total == round((n - embeddings) * 4.127 / 8) + 2 * embeddings + 16 * adapters
    assert 3.5e9 < qlora.total < 4.5e9
    with pytest.raises(ValueError, match="method"):
        estimate_training_memory(llama, "adapters")
