"""LoRA from scratch: equal to peft's given the same A and B, merge round trip, adapter files,
parameter counts against the article's figures, QLoRA over NF4, and what one training step touches."""

import copy

import peft
import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from course_utils.architecture.sizing import published_config
from course_utils.finetune import (
    LoRAConfig,
    LoRALinear,
    count_lora_params,
    inject_lora,
    load_adapter,
    lora_disabled,
    lora_parameters,
    merge_lora,
    prepare_qlora,
    save_adapter,
    trainable_parameter_count,
)
from course_utils.finetune.peft_methods import copy_course_lora
from course_utils.quantization import QuantizedLinear

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


def randomise_b(model: nn.Module, seed: int = 1) -> None:
    """B starts at zero (the adapted model equals the base); give it values so that LoRA matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in lora_parameters(model).items():
            if name.endswith("lora_B"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05)


IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(3))


def test_the_layer_computes_w_x_plus_b_a_x_times_alpha_over_r_and_starts_as_the_base():
    torch.manual_seed(0)
    base = nn.Linear(10, 6)
    layer = LoRALinear(copy.deepcopy(base), r=4, alpha=8)
    x = torch.randn(3, 5, 10)
    assert torch.equal(layer(x), base(x))  # B = 0
    assert layer.lora_A.shape == (4, 10) and layer.lora_B.shape == (6, 4)
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = base(x) + (x @ layer.lora_A.T @ layer.lora_B.T) * 2.0
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert not any(p.requires_grad for p in layer.base.parameters())
    with pytest.raises(ValueError, match="positive"):
        LoRALinear(base, r=0, alpha=1)


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj")])
def test_outputs_equal_peft_lora_given_the_same_a_and_b(targets):
    ours, theirs = tiny_model(), tiny_model()
    config = LoRAConfig(r=8, alpha=16, targets=targets)
    inject_lora(ours, config)
    randomise_b(ours)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(targets),
                                                         lora_dropout=0.0))
    assert copy_course_lora(ours, theirs) == 2 * len(targets) * TINY["num_hidden_layers"]  # A and B, every target
    assert trainable_parameter_count(ours) == theirs.get_nb_trainable_parameters()[0]
    with torch.no_grad():
        difference = (ours(IDS).logits - theirs(IDS).logits).abs().max().item()
    assert difference < 1e-6
    assert ours(IDS).logits.abs().max() > 0.1  # the comparison is not between two zero tensors


def test_kaiming_a_and_zero_b_start_from_the_base_model():
    base, adapted = tiny_model(), tiny_model()
    inject_lora(adapted, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        assert torch.equal(adapted(IDS).logits, base(IDS).logits)
    a = next(t for n, t in lora_parameters(adapted).items() if n.endswith("lora_A"))
    bound = 1 / TINY["hidden_size"] ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in inputs
    assert a.abs().max() <= bound and a.std() > bound / 3


def test_merge_then_unmerge_round_trip():
    model = tiny_model()
    original = {n: p.clone() for n, p in model.named_parameters()}
    inject_lora(model, LoRAConfig(r=4, alpha=8, targets=("q_proj", "o_proj", "down_proj")))
    randomise_b(model)
    with torch.no_grad():
        adapted = model(IDS).logits
        layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
        for layer in layers:
            layer.merge()
        assert torch.allclose(model(IDS).logits, adapted, atol=1e-5)
        for layer in layers:
            layer.unmerge()
        assert torch.allclose(model(IDS).logits, adapted, atol=1e-5)
    restored = {n.replace(".base", ""): p for n, p in model.named_parameters() if "lora_" not in n}
    assert all(torch.allclose(restored[n], original[n], atol=1e-6) for n in original)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits, adapted, atol=1e-5)


def test_adapters_save_as_safetensors_and_load_into_a_fresh_model(tmp_path):
    config = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj"), layers=(1, 2))
    model = tiny_model()
    names = inject_lora(model, config)
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                     "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj"]
    randomise_b(model)
    path = save_adapter(model, tmp_path, config)
    expected_bytes = 4 * trainable_parameter_count(model)
    assert expected_bytes <= path.stat().st_size < expected_bytes + 4096  # float32 tensors and a small header
    fresh = tiny_model()
    assert load_adapter(fresh, tmp_path) == config
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, model(IDS).logits)
    other = tiny_model()
    inject_lora(other, LoRAConfig(r=4, alpha=8, targets=("k_proj",)))
    with pytest.raises(ValueError, match="does not fit"):
        load_adapter(other, tmp_path)
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        load_adapter(tiny_model(), tmp_path / "missing")


def test_a_target_that_matches_nothing_names_the_layers_there_are():
    with pytest.raises(ValueError, match="q_proj"):
        inject_lora(tiny_model(), LoRAConfig(targets=("query",)))
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(r=0)


def test_disabling_the_adapters_gives_the_base_model_back():
    base, model = tiny_model(), tiny_model()
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    randomise_b(model)
    with torch.no_grad():
        assert not torch.allclose(model(IDS).logits, base(IDS).logits)
        with lora_disabled(model):
            assert torch.equal(model(IDS).logits, base(IDS).logits)
        assert not torch.allclose(model(IDS).logits, base(IDS).logits)


def test_parameter_counts_match_the_article_and_a_real_injection():
    llama2 = published_config("llama-2-7b")
    assert count_lora_params(llama2, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 16_777_216  # "about 17M"
    assert count_lora_params(llama2, 16, ["q_proj", "v_proj"]) == 8_388_608
    assert count_lora_params(llama2, 16, "all-linear") == 39_976_960
    tiny = LlamaConfig(**TINY)
    for targets in (("q_proj", "v_proj"), ("k_proj", "down_proj", "up_proj")):
        model = tiny_model()
        inject_lora(model, LoRAConfig(r=8, targets=targets))
        assert count_lora_params(tiny, 8, targets) == trainable_parameter_count(model)
    with pytest.raises(ValueError, match="unknown targets"):
        count_lora_params(llama2, 16, ["query"])


def _one_step_changes(model: nn.Module) -> set[str]:
    before = {n: t.clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(IDS, labels=IDS).loss
    loss.backward()
    optimizer.step()
    return {n for n, t in model.state_dict().items() if not torch.equal(t, before[n])}


def test_one_training_step_changes_only_the_adapter_weights():
    model = tiny_model()
    inject_lora(model, LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj")))
    changed = _one_step_changes(model)
    assert changed and all(".lora_A" in n or ".lora_B" in n for n in changed)
    assert len(changed) == 2 * 2 * TINY["num_hidden_layers"]  # A and B of q and v in every block


def test_qlora_trains_adapters_through_an_nf4_base_and_merges_into_floats():
    model = tiny_model()
    names = prepare_qlora(model, LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj", "down_proj")))
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 7 * TINY["num_hidden_layers"] and all(q.scheme == "nf4" for q in quantized)
    assert all(isinstance(model.get_submodule(n).base, QuantizedLinear) for n in names)
    changed = _one_step_changes(model)
    assert changed and all(".lora_A" in n or ".lora_B" in n for n in changed)
    # the first block's adapters learned too: gradients passed through the 4-bit layers above them
    assert "model.layers.0.self_attn.q_proj.lora_B" in changed
    with torch.no_grad():
        adapted = model(IDS).logits
        merge_lora(model)
        assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
        assert torch.allclose(model(IDS).logits, adapted, atol=1e-5)
