"""The engine's sizes, in one light module (no torch), so the command line can read its defaults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineConfig"]


@dataclass
class EngineConfig:
    """Sizes of the engine: the KV pool and the per-step limits (vLLM's names)."""

    num_blocks: int = 512
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 256  # new tokens per step: bounds how long a step that prefills can take
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True  # split long prompts over steps so running requests keep decoding
    num_speculative_tokens: int = 0  # drafts checked per decode step (0: no speculative decoding)
    speculative_draft_layers: int = 0  # > 0: drafts from the target's first layers; 0: prompt lookup (or a draft_model)
    decode_kernel: bool = True  # decode attention reads the paged pool in place (compiled kernel, CPU) where it builds

    def __post_init__(self) -> None:
        if self.num_blocks * self.block_size < self.max_model_len:
            raise ValueError(f"the KV pool ({self.num_blocks} blocks of {self.block_size} tokens) must hold at "
                             f"least max_model_len = {self.max_model_len} tokens, or a long request could never "
                             "finish")
        if self.num_speculative_tokens < 0:
            raise ValueError(f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}")
        if self.speculative_draft_layers < 0:
            raise ValueError(f"speculative_draft_layers must be >= 0, got {self.speculative_draft_layers}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least max_num_seqs "
                             f"({self.max_num_seqs}): a step of decodes alone may carry one token per sequence")
