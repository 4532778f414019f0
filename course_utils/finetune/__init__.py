"""Fine-tuning: LoRA from scratch, QLoRA over NF4, supervised instruction tuning and DPO."""

from course_utils.finetune.lora import (
    LoRAConfig,
    LoRALinear,
    count_lora_params,
    inject_lora,
    load_adapter,
    lora_disabled,
    lora_parameters,
    merge_lora,
    save_adapter,
    trainable_parameter_count,
)
from course_utils.finetune.qlora import prepare_qlora

__all__ = [
    "LoRAConfig", "LoRALinear", "count_lora_params", "inject_lora", "load_adapter", "lora_disabled", "lora_parameters",
    "merge_lora", "prepare_qlora", "save_adapter", "trainable_parameter_count",
]
