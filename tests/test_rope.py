"""Our RoPE and its scalings against transformers' implementation of the same config."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply

from course_utils.architecture.rope import RopeScaling, apply_rope, inverse_frequencies, rope_cos_sin, rope_from_config

SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192},
}


def config(params, head_dim=64, base=500000.0):
    return LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                       max_position_embeddings=2048 if params.get("rope_type") != "llama3" else 131072,
                       rope_parameters={"rope_theta": base, **params})


@pytest.mark.parametrize("kind", SCALINGS)
@pytest.mark.parametrize("seq_len", [None, 5000])
def test_inverse_frequencies_equal_transformers(kind, seq_len):
    cfg = config(dict(SCALINGS[kind]))
    expected, expected_factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", seq_len)
    got, factor = rope_from_config(cfg, seq_len)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert factor == pytest.approx(expected_factor)


@pytest.mark.parametrize("kind", [None, *SCALINGS])
def test_rotated_queries_equal_transformers(kind):
    cfg = config(dict(SCALINGS[kind]) if kind else {"rope_type": "default"})
    positions = torch.arange(0, 3000, 97)
    x = torch.randn(1, 4, len(positions), 64)
    hf_cos, hf_sin = LlamaRotaryEmbedding(cfg)(x, positions[None])
    expected, _ = hf_apply(x, x, hf_cos, hf_sin)
    seq_len = int(positions.max()) + 1  # dynamic scaling grows with the longest position seen
    cos, sin = rope_cos_sin(positions, *rope_from_config(cfg, seq_len))
    # transformers' module recomputes the dynamic base from a *tensor* sequence length, i.e. in
    # float32, while its init function (compared exactly above) and ours use double precision.
    # At position 3000 a float32 base moves angles by ~1e-4 rad, hence the wider bound there only.
    atol = 2e-4 if kind == "dynamic" else 1e-5
    assert torch.allclose(apply_rope(x, cos, sin), expected, atol=atol)


def test_scores_depend_only_on_relative_position():
    inv, _ = inverse_frequencies(64, 10000.0)
    q, k = torch.randn(64), torch.randn(64)

    def score(m, n):
        cq, sq = rope_cos_sin(torch.tensor([m]), inv)
        ck, sk = rope_cos_sin(torch.tensor([n]), inv)
        rotated_q = apply_rope(q[None, None, None], cq, sq).flatten()
        return float(rotated_q @ apply_rope(k[None, None, None], ck, sk).flatten())

    assert score(10, 3) == pytest.approx(score(1010, 1003), abs=1e-3)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)


def test_bad_scaling_is_explained():
    with pytest.raises(ValueError, match="unknown RoPE scaling"):
        RopeScaling("ntk-by-parts", 2.0, 2048)
    with pytest.raises(ValueError, match="factor"):
        RopeScaling("linear", 0.5, 2048)
    with pytest.raises(ValueError, match="even"):
        inverse_frequencies(63)
