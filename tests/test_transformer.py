"""The from-scratch decoder against transformers, on the embedded SmolLM2."""

import pytest
import torch

from course_utils.architecture.transformer import KVCache, Llama, LlamaConfig


@pytest.fixture(scope="module")
def ours(smollm2):
    return Llama.from_hf(smollm2[0])


def test_logits_equal_transformers(smollm2, ours):
    model, tokenizer = smollm2
    ids = tokenizer("Attention is all you need, said the paper; the KV cache disagreed.", return_tensors="pt")[
        "input_ids"]
    with torch.no_grad():
        expected = model(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_fifty_greedy_tokens_identical(smollm2, ours):
    model, tokenizer = smollm2
    ids = tokenizer("The history of the transformer architecture", return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=50, do_sample=False, min_new_tokens=50)
    assert torch.equal(ours.generate_greedy(ids, 50), expected)


def test_cached_decoding_equals_recomputing(ours):
    ids = torch.randint(0, ours.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    cache = KVCache(ours.config, batch=2, max_len=16)
    with torch.no_grad():
        full = ours(ids)
        first = ours(ids[:, :6], cache)
        rest = [ours(ids[:, i:i + 1], cache) for i in range(6, 9)]
    stepped = torch.cat([first, *rest], dim=1)
    assert torch.allclose(stepped, full, atol=1e-4)
    assert cache.length == 9


def test_attention_implementations_give_the_same_model(smollm2, ours):
    ids = torch.randint(0, ours.config.vocab_size, (1, 40))
    try:
        with torch.no_grad():
            reference = ours(ids)
            for impl in ("naive", "tiled"):
                ours.config.attention = impl
                assert torch.allclose(ours(ids), reference, atol=1e-4), impl
    finally:
        ours.config.attention = "sdpa"


def test_attention_weights_match_transformers_eager(smollm2, ours):
    model, tokenizer = smollm2
    ids = tokenizer("The animal did not cross the street because it was tired", return_tensors="pt")["input_ids"]
    model.config._attn_implementation = "eager"  # the implementation that can return its weights
    try:
        with torch.no_grad():
            expected = model(ids, output_attentions=True).attentions[3]
    finally:
        model.config._attn_implementation = "sdpa"
    got = ours.attention_weights(ids, layer=3)
    assert got.shape == expected.shape == (1, 9, ids.shape[1], ids.shape[1])
    assert torch.allclose(got, expected, atol=1e-5)


def test_bad_config_and_input_are_explained(ours):
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(vocab_size=10, dim=8, n_layers=1, n_heads=3, n_kv_heads=2, ffn_dim=16)
    with pytest.raises(ValueError, match="attention must be"):
        LlamaConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, attention="flash")
    with pytest.raises(ValueError, match="batch, length"):
        ours(torch.tensor([1, 2, 3]))
    cache = KVCache(ours.config, batch=1, max_len=2)
    with pytest.raises(ValueError, match="KV cache full"):
        ours(torch.tensor([[1, 2, 3]]), cache)


def test_rope_scaling_comes_from_the_config():
    from transformers import LlamaConfig as HFConfig

    hf = HFConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                  num_hidden_layers=1, vocab_size=32, max_position_embeddings=131072,
                  rope_parameters={"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192})
    config = LlamaConfig.from_hf(hf)
    assert config.rope_base == 500000.0 and config.rope_scaling.kind == "llama3"
    assert config.rope_scaling.factor == 8.0 and config.rope_scaling.original_max_position == 8192
