import pytest
import torch
from transformers import AutoModelForCausalLM

from course_utils.architecture import sizing


@pytest.mark.parametrize("name", sorted(sizing.PUBLISHED_CONFIGS))
def test_parameter_count_equals_the_instantiated_model(name):
    config = sizing.published_config(name)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    assert sizing.parameter_count(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, published",
    [("llama-3.1-8b", 8.03e9), ("llama-2-7b", 6.74e9), ("llama-3.1-70b", 70.6e9), ("mistral-7b", 7.24e9),
     ("smollm2-135m", 134.5e6), ("smollm2-360m", 361.8e6), ("gpt3-175b", 175e9),
     # the released GPT-2 checkpoints (124M, 1558M); the GPT-2 paper's table says 117M and 1542M,
     # figures the released weights never matched
     ("gpt2-small", 124.4e6), ("gpt2-xl", 1558e6)],
)
def test_parameter_count_within_one_percent_of_published(name, published):
    assert sizing.parameter_count(sizing.published_config(name)) == pytest.approx(published, rel=0.01)


def test_embedded_model_count_equals_its_config(smollm2):
    model, _ = smollm2
    assert sizing.parameter_count(model.config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected", [("llama-3.1-8b", 131_072), ("llama-3.1-70b", 327_680), ("smollm2-135m", 23_040)]
)
def test_kv_cache_bytes_per_token_bf16(name, expected):
    assert sizing.kv_cache_bytes_per_token(sizing.published_config(name)) == expected


def test_weight_bytes_scale_with_bits():
    config = sizing.published_config("llama-3.1-8b")
    assert sizing.weight_bytes(config, 16) == 2 * sizing.parameter_count(config)
    assert sizing.weight_bytes(config, 4) == sizing.weight_bytes(config, 16) / 4
    with pytest.raises(ValueError):
        sizing.weight_bytes(config, 0)


def test_bad_config_is_explained():
    with pytest.raises(ValueError, match="llama-3.1-8b"):
        sizing.published_config("gpt-7")
    with pytest.raises(TypeError, match="Llama-family"):
        sizing.parameter_count(object())


def test_kv_cache_for_a_context_and_batch():
    config = sizing.published_config("llama-3.1-8b")
    assert sizing.kv_cache_bytes(config, 131_072, batch=1) == 131_072 * 131_072  # 16 GiB at 128K
    assert sizing.kv_cache_bytes(config, 8192, batch=4) == 4 * 8192 * 131_072
    with pytest.raises(ValueError):
        sizing.kv_cache_bytes(config, 10, batch=0)


def test_flops_per_token_follow_kaplan():
    gpt3 = sizing.published_config("gpt3-175b")
    n = sizing.parameter_count(gpt3) - (50257 + 2048) * 12288
    assert sizing.flops_per_token(gpt3, 0) == 2 * n
    # at 2K context the attention term adds 2 * 96 * 2048 * 12288 FLOPs, about 3% of 2N
    assert sizing.flops_per_token(gpt3, 2048) == pytest.approx(2 * n + 2 * 96 * 2048 * 12288)
    assert sizing.flops_per_token(gpt3, 2048, training=True) == 3 * sizing.flops_per_token(gpt3, 2048)


def test_mixtral_total_and_active_match_the_published_figures():
    config = sizing.published_config("mixtral-8x7b")
    # Mistral AI's announcement: 46.7B parameters in all, 12.9B used per token (not the "8 x 7B = 56B" of the name)
    assert sizing.parameter_count(config) == pytest.approx(46.7e9, rel=0.005)
    assert sizing.active_parameter_count(config) == pytest.approx(12.9e9, rel=0.005)
    assert sizing.experts(config) == (8, 2)
    dense = sizing.published_config("mistral-7b")
    assert sizing.active_parameter_count(dense) == sizing.parameter_count(dense)
    # compute per token follows the active parameters, memory the total
    assert sizing.flops_per_token(config, 0) == 2 * (sizing.active_parameter_count(config) - 32000 * 4096)


def test_active_parameters_are_the_ones_a_token_reaches():
    """One token through a tiny random Mixtral: the weights that get a gradient are the active count."""
    from transformers import AutoConfig

    config = AutoConfig.for_model("mixtral", vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                  num_experts_per_tok=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    # eager attention: its softmax backward gives exactly zero for a lone token, while SDPA's fused CPU kernel
    # leaves ~5e-10 in the query and key gradients on some processors (seen with AVX-512, not with AVX2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model(torch.tensor([[5]])).logits.sum().backward()
    embeddings = model.get_input_embeddings().weight
    reached = sum(int((p.grad != 0).sum()) for p in model.parameters() if p is not embeddings and p.grad is not None)
    # by convention the whole embedding table counts; a lone token attends only to itself, so its attention
    # weight is 1 whatever q and k are, and the query and key projections get no gradient
    query_key = sum(p.numel() for name, p in model.named_parameters()
                    if name.endswith(("q_proj.weight", "k_proj.weight")))
    assert reached + embeddings.numel() + query_key == sizing.active_parameter_count(config)
    assert sizing.active_parameter_count(config) < sizing.parameter_count(config)


def test_bad_expert_counts_are_explained():
    from transformers import AutoConfig

    config = AutoConfig.for_model("mixtral", num_local_experts=4, num_experts_per_tok=5)
    with pytest.raises(ValueError, match="num_experts_per_tok=5"):
        sizing.active_parameter_count(config)
