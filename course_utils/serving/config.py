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
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.num_blocks * self.block_size < self.max_model_len:
            raise ValueError(f"the KV pool ({self.num_blocks} blocks of {self.block_size} tokens) must hold at "
                             f"least max_model_len = {self.max_model_len} tokens, or a long request could never "
                             "finish")
