"""Serving before continuous batching: transformers' ``generate`` on a fixed batch of requests.

The two baselines the engine is measured against:

* **sequential**: one request at a time (a batch of one), what a naive server does;
* **static batching**: the requests that arrived together go through ``generate`` as one padded
  batch, which runs until its longest request is done; shorter requests ride along as padding
  and no new request can join until the whole batch ends.

Greedy, with end-of-text ignored, so every request yields exactly ``max_new_tokens`` tokens and
the comparison counts the same work on both sides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["BatchTiming", "static_batch_generate"]


@dataclass
class BatchTiming:
    """One ``generate`` call on a batch: when its first token came, when it ended, what it produced."""

    time_to_first_token_s: float  # the same for every request of a static batch
    total_s: float
    output_tokens: int  # summed over the batch

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.total_s


class _FirstTokenClock(StoppingCriteria):
    """Never stops generation; notes the time of its first call, right after the first token."""

    def __init__(self):
        self.first: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.first is None:
            self.first = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def static_batch_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> BatchTiming:
    """Run ``prompts`` (already chat-formatted text) through ``model.generate`` as one left-padded batch."""
    if not prompts or max_new_tokens < 1:
        raise ValueError("need at least one prompt and max_new_tokens >= 1")
    if tokenizer.padding_side != "left":
        raise ValueError("a decoder-only batch must be left-padded: set tokenizer.padding_side = 'left'")
    clock = _FirstTokenClock()
    start = time.perf_counter()
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([clock]))
    total = time.perf_counter() - start
    generated = out.shape[0] * (out.shape[1] - inputs["input_ids"].shape[1])
    return BatchTiming(clock.first - start, total, generated)
