"""The engine's forward pass on the CPU: the course Llama with fused, prepacked matrix multiplies.

A decode step pushes a few dozen rows through every layer, so besides the matrix multiplies
its time goes to the many small operations between them, each paying PyTorch's fixed cost per
call. :class:`FusedLlama` computes what :meth:`Llama.forward <course_utils.architecture.transformer.Llama.forward>`
computes with fewer calls, the way serving engines lay out their models (vLLM's ``QKVParallelLinear``
and ``MergedColumnParallelLinear``):

* q, k and v come from one matrix multiply (their weights stacked), and so do gate and up;
* the elementwise work between the matrix multiplies (residual add and norm, SiLU and gate, the
  rotary embedding of queries and keys) runs as one compiled loop per piece
  (:mod:`~course_utils.serving.fused_elementwise`), or as PyTorch operators where no C compiler
  built those loops;
* every weight is packed once for oneDNN (:class:`~course_utils.serving.prepacked.PrepackedLinear`,
  repacked if the model's weights change), and no ``nn.Module`` call sits between them;
* a full batch (exactly ``rows_hint`` rows) goes to MKL's packed kernels instead where, timed on
  this machine when the first such model is built, they run its weights faster than oneDNN.

It reads the model's parameters at every call, shares them (nothing is copied but the packed
matrices) and must give the model's logits: ``tests/test_serving_fused_model.py`` holds it to that.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.architecture.rope import apply_rope, rope_cos_sin
from course_utils.architecture.transformer import ATTENTION_FUNCTIONS, Llama
from course_utils.serving import fused_elementwise
from course_utils.serving.prepacked import PrepackedLinear, can_pack_for_mkl

__all__ = ["FusedLlama"]

_MEASURED_FULL_BATCH: dict[tuple, str] = {}  # (rows_hint, every projection's shape) -> the library timed faster


class FusedLlama:
    """``model``'s forward pass over a cache with stacked, prepacked projections (CPU, float32).

    ``rows_hint``: the number of rows the packing is tuned for (the engine's ``max_num_seqs``).
    ``full_batch``: the library for products of exactly ``rows_hint`` rows: ``"onednn"``, ``"mkl"``
    or ``"measure"`` (time one pass of the weights each way, keep the faster; measured once per
    process for a model's shapes, then remembered). :attr:`full_batch` says which one serves.
    ``fuse_elementwise``: run the elementwise work as compiled loops (default: where they were built).
    """

    FULL_BATCH_LIBRARIES = ("onednn", "mkl")

    @staticmethod
    def supports(model: Llama) -> bool:
        """Whether every projection is a plain ``nn.Linear`` (not, say, wrapped by an adapter), as stacking needs."""
        projections = [model.lm_head]
        for block in model.layers:
            a, mlp = block.self_attn, block.mlp
            projections += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        return all(type(p) is nn.Linear for p in projections)

    def __init__(self, model: Llama, rows_hint: int, full_batch: str = "measure",
                 fuse_elementwise: bool | None = None):
        if not self.supports(model):
            raise ValueError("FusedLlama stacks plain nn.Linear layers; this model wraps some: use prepacked_copy")
        if fuse_elementwise and not fused_elementwise.available():
            raise ValueError("fuse_elementwise needs the compiled loops, not built here: see kernel_status()")
        self.model = model
        self.fuse_elementwise = fused_elementwise.available() if fuse_elementwise is None else fuse_elementwise
        self.qkv, self.o, self.gate_up, self.down = [], [], [], []
        for block in model.layers:
            a, mlp = block.self_attn, block.mlp
            self.qkv.append(PrepackedLinear([a.q_proj, a.k_proj, a.v_proj], rows_hint))
            self.o.append(PrepackedLinear(a.o_proj, rows_hint))
            self.gate_up.append(PrepackedLinear([mlp.gate_proj, mlp.up_proj], rows_hint))
            self.down.append(PrepackedLinear(mlp.down_proj, rows_hint))
        self.lm_head = PrepackedLinear(model.lm_head, rows_hint)
        self.rows_hint = rows_hint
        self.full_batch = self._choose_full_batch(full_batch)

    @property
    def linears(self) -> list[PrepackedLinear]:
        """Every packed projection in the forward's order: each layer's qkv, o, gate-up, down, then the head."""
        layers = zip(self.qkv, self.o, self.gate_up, self.down, strict=True)
        return [*(linear for layer in layers for linear in layer), self.lm_head]

    def weights_pass_seconds(self, rows: int) -> float:
        """Wall seconds of one pass of the weight matrix multiplies alone, in the forward's order, on
        ``rows`` random rows: nothing else runs between them, so no step of ``rows`` tokens is faster."""
        inputs = {}
        for linear in self.linears:
            width = linear.sources[0].in_features
            inputs.setdefault(width, torch.randn(1, rows, width))
        with torch.inference_mode():
            start = time.perf_counter()
            for linear in self.linears:
                linear(inputs[linear.sources[0].in_features])
            return time.perf_counter() - start

    def _choose_full_batch(self, choice: str) -> str:
        if choice not in (*self.FULL_BATCH_LIBRARIES, "measure"):
            raise ValueError(f"full_batch must be one of {self.FULL_BATCH_LIBRARIES} or 'measure', not {choice!r}")
        if choice == "measure":
            if not can_pack_for_mkl():
                return "onednn"
            key = (self.rows_hint, *((s.in_features, s.out_features) for lin in self.linears for s in lin.sources))
            if key not in _MEASURED_FULL_BATCH:
                _MEASURED_FULL_BATCH[key] = self._time_libraries()
            choice = _MEASURED_FULL_BATCH[key]
        for linear in self.linears:
            if linear.full_batch_mkl != (choice == "mkl"):
                linear.use_mkl_for_full_batch(choice == "mkl")
        return choice

    def _time_libraries(self, repeats: int = 3) -> str:
        """The library that ran a full batch through the weights faster: best of ``repeats`` passes each."""
        best = {}
        for library in self.FULL_BATCH_LIBRARIES:
            for linear in self.linears:
                linear.use_mkl_for_full_batch(library == "mkl")
            self.weights_pass_seconds(self.rows_hint)  # warm-up
            best[library] = min(self.weights_pass_seconds(self.rows_hint) for _ in range(repeats))
        return min(best, key=best.get)

    def __call__(self, ids: torch.Tensor, cache, positions: torch.Tensor, logits_at: torch.Tensor) -> torch.Tensor:
        """Logits (1, K, V) at the K indices ``logits_at`` of the packed tokens ``ids`` (1, N) at
        ``positions`` (N,); their keys and values go to ``cache`` (its ``attend``, as in Llama)."""
        if self.fuse_elementwise:
            return self._forward_fused(ids, cache, positions, logits_at)
        m, c = self.model, self.model.config
        n, heads, kv_heads, eps = ids.shape[1], c.n_heads, c.n_kv_heads, c.norm_eps
        cos, sin = rope_cos_sin(positions, m.inv_freq, m.attention_factor)  # (N, hd) each
        attention = ATTENTION_FUNCTIONS[c.attention]
        x = m.embed_tokens(ids)  # (1, N, d)
        for i, block in enumerate(m.layers):
            h = F.rms_norm(x, (c.dim,), block.input_layernorm.weight, eps)
            qkv = self.qkv[i](h).view(1, n, heads + 2 * kv_heads, c.head_dim).transpose(1, 2)  # (1, H + 2 H_kv, N, hd)
            qk = apply_rope(qkv[:, :heads + kv_heads], cos, sin)
            y = cache.attend(i, qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads:], attention)  # (1, H, N, hd)
            x = x + self.o[i](y.transpose(1, 2).reshape(1, n, -1))
            gate, up = self.gate_up[i](F.rms_norm(x, (c.dim,), block.post_attention_layernorm.weight, eps)).chunk(2, -1)
            x = x + self.down[i](F.silu(gate) * up)
        cache.advance(n)
        return self.lm_head(F.rms_norm(x[:, logits_at], (c.dim,), m.norm.weight, eps))

    def _forward_fused(self, ids: torch.Tensor, cache, positions: torch.Tensor,
                       logits_at: torch.Tensor) -> torch.Tensor:
        """The same forward with its elementwise work in compiled loops: the residual stream ``x``
        (1, N, d) is updated in place and each norm's output ``h`` (1, N, d) feeds the next matmul."""
        m, c = self.model, self.model.config
        n, heads, kv_heads, eps = ids.shape[1], c.n_heads, c.n_kv_heads, c.norm_eps
        cos, sin = (t.contiguous() for t in rope_cos_sin(positions, m.inv_freq, m.attention_factor))  # (N, hd)
        attention = ATTENTION_FUNCTIONS[c.attention]
        x = m.embed_tokens(ids).contiguous()  # a new tensor: adding to it in place changes nothing else
        h = fused_elementwise.add_rms_norm_(x, None, m.layers[0].input_layernorm.weight, eps, torch.empty_like(x))
        for i, block in enumerate(m.layers):
            qkv = fused_elementwise.rope_(self.qkv[i](h).view(n, heads + 2 * kv_heads, c.head_dim), cos, sin,
                                          heads + kv_heads)[None].transpose(1, 2)  # (1, H + 2 H_kv, N, hd)
            y = cache.attend(i, qkv[:, :heads], qkv[:, heads:heads + kv_heads], qkv[:, heads + kv_heads:], attention)
            fused_elementwise.add_rms_norm_(x, self.o[i](y.transpose(1, 2).reshape(1, n, -1)),
                                            block.post_attention_layernorm.weight, eps, h)
            # then the next layer's input norm, or after the last layer the final norm (row by row:
            # the rows asked for come out as if they alone had been normalised)
            after = m.layers[i + 1].input_layernorm.weight if i + 1 < len(m.layers) else m.norm.weight
            act = fused_elementwise.silu_mul(self.gate_up[i](h))
            fused_elementwise.add_rms_norm_(x, self.down[i](act), after, eps, h)
        cache.advance(n)
        return self.lm_head(h[:, logits_at])
