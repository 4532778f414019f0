"""Memory arithmetic for Llama-family decoders, computed from a config rather than quoted.

Everything here is exact counting over the shapes a config implies:

    embeddings            V x d
    per layer  attention  d x (H x hd)  +  2 x d x (KV x hd)  +  (H x hd) x d   (+ biases)
               MLP        3 x d x F     (gate, up, down: SwiGLU)
               norms      2 x d         (RMSNorm weights)
    final norm            d
    LM head               V x d         (0 if tied to the embeddings)

with V the vocabulary, d the hidden size, H / KV the query / key-value heads, hd the head
size and F the MLP width. ``tests/test_sizing.py`` checks these counts against models that
transformers instantiates from the same configs.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PUBLISHED_CONFIGS",
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
}


def published_config(name: str):
    """A transformers config object for one of :data:`PUBLISHED_CONFIGS`."""
    from transformers import AutoConfig

    try:
        fields = dict(PUBLISHED_CONFIGS[name])
    except KeyError:
        raise ValueError(f"Unknown config {name!r}. Known: {', '.join(sorted(PUBLISHED_CONFIGS))}.") from None
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def _shape(config: Any) -> tuple[int, int, int, int, int, int, int]:
    """(V, d, L, H, KV, hd, F) from a transformers config, validated."""
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


def parameter_count(config: Any) -> int:
    """Exact number of parameters of a Llama-family decoder with this config."""
    vocab, d, layers, heads, kv, hd, ffn = _shape(config)
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    if getattr(config, "attention_bias", False):
        attention += heads * hd + 2 * kv * hd
    mlp = 3 * d * ffn + (2 * ffn + d if getattr(config, "mlp_bias", False) else 0)
    per_layer = attention + mlp + 2 * d
    head = 0 if getattr(config, "tie_word_embeddings", False) else vocab * d
    return vocab * d + layers * per_layer + d + head


def weight_bytes(config: Any, bits_per_weight: float) -> float:
    """Bytes to hold every weight at ``bits_per_weight`` (16 for bf16, 4.5 for 4-bit + scales...)."""
    if bits_per_weight <= 0:
        raise ValueError(f"bits_per_weight must be positive, got {bits_per_weight}")
    return parameter_count(config) * bits_per_weight / 8


def kv_cache_bytes_per_token(config: Any, bytes_per_value: int = 2) -> int:
    """Bytes of K and V cached per token across all layers (bf16 by default)."""
    _, _, layers, _, kv, hd, _ = _shape(config)
    return 2 * layers * kv * hd * bytes_per_value
