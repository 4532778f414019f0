"""A Llama-family decoder from scratch, small enough to read in one sitting.

    tokens (B, T)
      -> embed_tokens                                        (B, T, d)
      -> n_layers x [ x + Attention(RMSNorm(x)) ; x + MLP(RMSNorm(x)) ]
      -> RMSNorm -> lm_head (tied to embed_tokens or not)   (B, T, V)

Attention uses rotary positions (course_utils.architecture.rope) and grouped-query heads
(course_utils.architecture.attention); the MLP is SwiGLU: down(silu(gate(x)) * up(x)). Parameter names
follow transformers' Llama so :meth:`Llama.from_hf` is a plain state-dict copy.
:class:`KVCache` is a contiguous, pre-allocated cache for incremental decoding.
tests/test_transformer.py checks the logits against transformers on the embedded SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.architecture.attention import naive_attention, sdpa_attention, tiled_attention
from course_utils.architecture.rope import (
    RopeScaling,
    apply_rope,
    inverse_frequencies,
    rope_cos_sin,
    scaling_from_config,
)

__all__ = ["KVCache", "Llama", "LlamaConfig"]

ATTENTION_FUNCTIONS = {"sdpa": sdpa_attention, "naive": naive_attention, "tiled": tiled_attention}


@dataclass
class LlamaConfig:
    vocab_size: int
    dim: int  # d, the residual stream width
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    head_dim: int | None = None  # default dim // n_heads
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = True
    attention: str = "sdpa"  # "sdpa", "naive" or "tiled"

    def __post_init__(self) -> None:
        self.head_dim = self.head_dim or self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.attention not in ATTENTION_FUNCTIONS:
            raise ValueError(f"attention must be one of {sorted(ATTENTION_FUNCTIONS)}, got {self.attention!r}")

    @classmethod
    def from_hf(cls, config, **overrides) -> LlamaConfig:
        """Our config from a transformers LlamaConfig (RoPE scaling included)."""
        fields = dict(
            vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads, n_kv_heads=config.num_key_value_heads,
            ffn_dim=config.intermediate_size, head_dim=getattr(config, "head_dim", None),
            norm_eps=config.rms_norm_eps, tie_embeddings=config.tie_word_embeddings,
        )
        fields["rope_base"], fields["rope_scaling"] = scaling_from_config(config)
        return cls(**{**fields, **overrides})


class KVCache:
    """Keys and values of every layer, pre-allocated for ``max_len`` positions.

    k, v: (n_layers, B, n_kv_heads, max_len, head_dim); positions [0, length) are filled.
    """

    def __init__(self, config: LlamaConfig, batch: int, max_len: int, dtype=torch.float32, device=None):
        shape = (config.n_layers, batch, config.n_kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H_kv, T, D) new keys/values for ``layer``; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Call once per forward pass, after every layer has appended its ``n`` positions."""
        self.length += n

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
        """Store the new keys/values, then attend over everything cached: (B, H, T, hd).

        Every cache implements this method; a paged cache (course_utils.serving) stores and
        gathers keys through block tables instead.
        """
        k, v = self.append(layer, k, v)  # (B, H_kv, S, hd) with S = cached + T
        return attention(q, k, v, causal=True)

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)

    def qkv(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries (B, H, T, hd), rotated keys and values (B, H_kv, T, hd) for x (B, T, d)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.c.n_heads, self.c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.c.n_kv_heads, self.c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.c.n_kv_heads, self.c.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        attention = ATTENTION_FUNCTIONS[self.c.attention]
        if cache is None:
            y = attention(q, k, v, causal=True)  # (B, H, T, hd)
        else:
            y = cache.attend(layer, q, k, v, attention)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.ffn_dim, bias=False)
        self.up_proj = nn.Linear(c.dim, c.ffn_dim, bias=False)
        self.down_proj = nn.Linear(c.ffn_dim, c.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """The decoder. ``forward(ids, cache)`` returns logits (B, T, V) for every position."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.set_rope(config.rope_base, config.rope_scaling)

    def init_weights(self, std: float = 0.02) -> None:
        """Fresh weights for training from scratch: N(0, std) matrices, unit norm scales.

        (PyTorch's default Linear/Embedding init gives an untrained model logits far too large.)
        """
        for param in self.parameters():
            if param.dim() >= 2:
                torch.nn.init.normal_(param, mean=0.0, std=std)
            else:
                torch.nn.init.ones_(param)

    def set_rope(self, base: float, scaling: RopeScaling | None = None, seq_len: int | None = None) -> None:
        """Change the rotary frequencies (e.g. to try a context-extension scaling).

        ``dynamic`` scaling is evaluated once, at ``seq_len``; transformers instead re-evaluates
        it on every forward pass from the longest position seen.
        """
        inv_freq, self.attention_factor = inverse_frequencies(self.config.head_dim, base, scaling, seq_len)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, positions: torch.Tensor | None = None,
                logits_at: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for ids (B, T).

        ``positions`` (T,) overrides the default positions (the cache's length onward), e.g. for
        a packed batch of several sequences; ``logits_at`` (K,) limits the output to those
        indices along T, (B, K, V), skipping the vocabulary projection everywhere else.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must be (batch, length), got shape {tuple(ids.shape)}")
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.attention_factor)  # (T, hd) each
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, i, cache)
        if cache is not None:
            cache.advance(ids.shape[1])
        if logits_at is not None:
            x = x[:, logits_at]
        return self.lm_head(self.norm(x))

    @torch.inference_mode()
    def attention_weights(self, ids: torch.Tensor, layer: int) -> torch.Tensor:
        """Softmax attention weights (B, H, T, T) of one layer for ``ids`` (B, T)."""
        if not 0 <= layer < self.config.n_layers:
            raise ValueError(f"layer must be in [0, {self.config.n_layers}), got {layer}")
        captured = {}
        hook = self.layers[layer].input_layernorm.register_forward_hook(
            lambda _m, _i, out: captured.setdefault("x", out))
        try:
            self(ids)
        finally:
            hook.remove()
        positions = torch.arange(ids.shape[1], device=ids.device)
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.attention_factor)
        q, k, v = self.layers[layer].self_attn.qkv(captured["x"], cos, sin)
        return naive_attention(q, k, v, causal=True, return_weights=True)[1]

    @torch.inference_mode()
    def generate_greedy(self, ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                        eos_token_id: int | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` argmax tokens to (B, T) ``ids`` (stops early on EOS for B=1)."""
        cache = KVCache(self.config, ids.shape[0], ids.shape[1] + max_new_tokens,
                        self.embed_tokens.weight.dtype, ids.device) if use_cache else None
        out, step_input = ids, ids
        for _ in range(max_new_tokens):
            logits = self(step_input if use_cache else out, cache)[:, -1]
            next_id = logits.argmax(-1, keepdim=True)  # (B, 1)
            out = torch.cat([out, next_id], dim=1)
            step_input = next_id
            if eos_token_id is not None and ids.shape[0] == 1 and next_id.item() == eos_token_id:
                break
        return out

    @classmethod
    def from_hf(cls, hf_model, **overrides) -> Llama:
        """Copy a transformers LlamaForCausalLM's weights into a from-scratch model."""
        model = cls(LlamaConfig.from_hf(hf_model.config, **overrides))
        config = model.config
        state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (config.tie_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(dtype=hf_model.dtype, device=hf_model.device).eval()
