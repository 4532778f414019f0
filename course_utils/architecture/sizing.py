"""Parameter, memory and FLOP arithmetic for decoders, computed from a config rather than quoted.

Llama-family models (Llama, Mistral, SmolLM2) count as follows; GPT-2/GPT-3 configs are counted
by :func:`_gpt2_count` (learned positions, biases, LayerNorm, a 4d MLP, tied head).

    embeddings            V x d
    per layer  attention  d x (H x hd)  +  2 x d x (KV x hd)  +  (H x hd) x d   (+ biases)
               MLP        3 x d x F     (gate, up, down: SwiGLU)
               norms      2 x d         (RMSNorm weights)
    final norm            d
    LM head               V x d         (0 if tied to the embeddings)

with V the vocabulary, d the hidden size, H / KV the query / key-value heads, hd the head
size and F the MLP width. A mixture-of-experts layer (Mixtral) holds E copies of the MLP and a
router (d x E); each token goes through k of them, so it *stores* E x 3 x d x F per layer but
*computes with* k x 3 x d x F: :func:`parameter_count` counts the first,
:func:`active_parameter_count` the second. ``tests/test_sizing.py`` checks these counts against models that
transformers instantiates from the same configs.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PUBLISHED_CONFIGS",
    "active_parameter_count",
    "config_shape",
    "experts",
    "flops_per_token",
    "kv_cache_bytes",
    "kv_cache_bytes_per_token",
    "parameter_count",
    "published_config",
    "weight_bytes",
]

# Shapes from each model's published config.json (Hugging Face model cards).
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        max_position_embeddings=131072, tie_word_embeddings=False,
    ),
    "llama-3.1-70b": dict(
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672,
        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
        max_position_embeddings=131072, tie_word_embeddings=False,
    ),
    "llama-2-7b": dict(
        model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        max_position_embeddings=4096, tie_word_embeddings=False,
    ),
    "mistral-7b": dict(
        model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        max_position_embeddings=32768, tie_word_embeddings=False,
    ),
    "smollm2-135m": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=8192, tie_word_embeddings=True,
    ),
    "smollm2-360m": dict(
        model_type="llama", vocab_size=49152, hidden_size=960, intermediate_size=2560,
        num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
        max_position_embeddings=8192, tie_word_embeddings=True,
    ),
    # Mixtral 8x7B: Mistral 7B's shape with eight SwiGLU experts per layer, two used per token.
    "mixtral-8x7b": dict(
        model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=32768, tie_word_embeddings=False,
    ),
    "gpt2-small": dict(model_type="gpt2", vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "gpt2-xl": dict(model_type="gpt2", vocab_size=50257, n_embd=1600, n_layer=48, n_head=25, n_positions=1024),
    # GPT-3 175B (Brown et al., 2020, table 2.1) in GPT-2's architecture; its sparse attention
    # layers do not change the parameter count.
    "gpt3-175b": dict(model_type="gpt2", vocab_size=50257, n_embd=12288, n_layer=96, n_head=96, n_positions=2048),
}


def published_config(name: str):
    """A transformers config object for one of :data:`PUBLISHED_CONFIGS`."""
    from transformers import AutoConfig

    try:
        fields = dict(PUBLISHED_CONFIGS[name])
    except KeyError:
        raise ValueError(f"Unknown config {name!r}. Known: {', '.join(sorted(PUBLISHED_CONFIGS))}.") from None
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def config_shape(config: Any) -> tuple[int, int, int, int, int, int, int]:
    """(V, d, L, H, KV, hd, F) from a transformers config, validated."""
    if getattr(config, "model_type", None) == "gpt2":
        d = int(config.n_embd)
        return int(config.vocab_size), d, int(config.n_layer), int(config.n_head), int(config.n_head), \
            d // int(config.n_head), int(config.n_inner or 4 * d)
    try:
        d = int(config.hidden_size)
        heads = int(config.num_attention_heads)
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        hd = int(getattr(config, "head_dim", None) or d // heads)
        shape = (int(config.vocab_size), d, int(config.num_hidden_layers), heads, kv, hd,
                 int(config.intermediate_size))
    except AttributeError as err:
        raise TypeError(f"not a Llama-family config (missing {err.name!r}): {type(config).__name__}") from None
    if heads % kv:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    return shape


def _gpt2_count(config: Any) -> int:
    vocab, d, layers, _, _, _, ffn = config_shape(config)
    per_layer = (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (2 * d) + (d * ffn + ffn) + (ffn * d + d)
    return vocab * d + int(config.n_positions) * d + layers * per_layer + 2 * d


def experts(config: Any) -> tuple[int, int]:
    """(MLP experts per layer, experts each token goes through): (1, 1) for a dense model."""
    total = int(getattr(config, "num_local_experts", None) or 1)
    used = int(getattr(config, "num_experts_per_tok", None) or 1) if total > 1 else 1
    if not 1 <= used <= total:
        raise ValueError(f"num_experts_per_tok={used} must be between 1 and num_local_experts={total}")
    return total, used


def _llama_count(config: Any, experts_used: int | None) -> int:
    vocab, d, layers, heads, kv, hd, ffn = config_shape(config)
    total, used = experts(config)
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    if getattr(config, "attention_bias", False):
        attention += heads * hd + 2 * kv * hd
    mlp = 3 * d * ffn + (2 * ffn + d if getattr(config, "mlp_bias", False) else 0)
    router = d * total if total > 1 else 0
    per_layer = attention + (total if experts_used is None else used) * mlp + router + 2 * d
    head = 0 if getattr(config, "tie_word_embeddings", False) else vocab * d
    return vocab * d + layers * per_layer + d + head


def parameter_count(config: Any) -> int:
    """Exact number of parameters of a Llama-family (dense or Mixtral-style MoE) or GPT-2-style decoder."""
    if getattr(config, "model_type", None) == "gpt2":
        return _gpt2_count(config)
    return _llama_count(config, experts_used=None)


def active_parameter_count(config: Any) -> int:
    """Parameters one token goes through: all of them for a dense model, the router's k experts for MoE.

    The embedding row and the LM head are counted as for :func:`parameter_count` (the usual convention
    behind Mixtral's published 12.9B).
    """
    if getattr(config, "model_type", None) == "gpt2":
        return _gpt2_count(config)
    return _llama_count(config, experts_used=experts(config)[1])


def weight_bytes(config: Any, bits_per_weight: float) -> float:
    """Bytes to hold every weight at ``bits_per_weight`` (16 for bf16, 4.5 for 4-bit + scales...)."""
    if bits_per_weight <= 0:
        raise ValueError(f"bits_per_weight must be positive, got {bits_per_weight}")
    return parameter_count(config) * bits_per_weight / 8


def kv_cache_bytes_per_token(config: Any, bytes_per_value: int = 2) -> int:
    """Bytes of K and V cached per token across all layers (bf16 by default)."""
    _, _, layers, _, kv, hd, _ = config_shape(config)
    return 2 * layers * kv * hd * bytes_per_value


def kv_cache_bytes(config: Any, context: int, batch: int = 1, bytes_per_value: int = 2) -> int:
    """KV-cache bytes for ``batch`` sequences of ``context`` tokens each."""
    if context < 0 or batch < 1:
        raise ValueError(f"context must be >= 0 and batch >= 1, got {context}, {batch}")
    return kv_cache_bytes_per_token(config, bytes_per_value) * context * batch


def flops_per_token(config: Any, context: int, training: bool = False) -> float:
    """Forward FLOPs per token (Kaplan et al., 2020): 2 N + 2 n_layers n_ctx d_attn.

    N counts the non-embedding parameters a token goes through (each is one multiply-add per token;
    for a mixture of experts only the experts the router picks, :func:`active_parameter_count`); the second term
    is the attention scores and weighted sum against ``context`` earlier tokens. Training costs
    about three forward passes (forward + backward), hence the familiar 6 N.
    """
    vocab, d, layers, heads, _, hd, _ = config_shape(config)
    embedding = vocab * d + (int(config.n_positions) * d if getattr(config, "model_type", None) == "gpt2" else 0)
    forward = 2 * (active_parameter_count(config) - embedding) + 2 * layers * context * heads * hd
    return 3.0 * forward if training else float(forward)
