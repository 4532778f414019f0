"""Lab 06's reference solution agrees with course_utils.finetune (and so, through its tests, with peft)."""

import numpy as np
import pytest
import torch
from lab_solutions import solution_namespace
from torch import nn

from course_utils.architecture.sizing import published_config
from course_utils.finetune import LoRALinear, count_lora_params
from course_utils.finetune.dpo import dpo_loss


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("06_fine_tuning_lab.ipynb", {"np": np})


def test_the_lab_layer_and_merge_match_the_course_lora_layer(lab):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 7, bias=False).double(), r=3, alpha=5.0)
    with torch.no_grad():
        layer.lora_A.data = layer.lora_A.double()
        layer.lora_B.data = torch.randn(7, 3, dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    args = [t.detach().tolist() for t in (x, layer.base.weight, layer.lora_A, layer.lora_B)]
    with torch.no_grad():
        assert np.allclose(lab["lora_forward"](*args, 5.0), layer(x).numpy(), atol=1e-12)
        layer.merge()
        assert np.allclose(lab["lora_merge"](*args[1:], 5.0), layer.base.weight.numpy(), atol=1e-12)


@pytest.mark.parametrize("model", ["llama-2-7b", "llama-3.1-8b", "smollm2-135m", "mistral-7b"])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["k_proj", "down_proj"], "all-linear"])
def test_the_lab_count_matches_the_course_count(lab, model, targets):
    config = published_config(model)
    fields = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers")
    as_dict = {name: getattr(config, name) for name in fields}
    assert lab["count_lora_params"](as_dict, 16, targets) == count_lora_params(config, 16, targets)


def test_the_lab_dpo_loss_matches_the_course_loss(lab):
    rng = np.random.default_rng(1)
    logps = rng.normal(-40, 15, size=(4, 32))
    loss, accuracy = lab["dpo_loss"](*logps.tolist(), 0.3)
    course = dpo_loss(*(torch.tensor(row) for row in logps), beta=0.3)
    assert loss == pytest.approx(course.loss.item(), rel=1e-12) and accuracy == course.accuracy
