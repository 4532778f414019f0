"""The text quantization is measured on: held-out prose, and calibration text disjoint from it."""

from __future__ import annotations

import torch

from course_utils.tasks import load_task

__all__ = ["calibration_batch", "held_out_passages"]


def held_out_passages(tokenizer, device=None) -> list[torch.Tensor]:
    """The 10 passages of ``passages.jsonl`` (written for the course), each as a (T,) id tensor."""
    return [torch.tensor(tokenizer(r["text"])["input_ids"], device=device) for r in load_task("passages")]


def calibration_batch(tokenizer, length: int = 512, device=None) -> torch.Tensor:
    """(n, length) ids from the course's other task sets (arithmetic problems, reviews, quiz
    questions), joined: calibration data for GPTQ that shares no text with the passages."""
    texts = ([r["question"] for r in load_task("arithmetic")] + [r["text"] for r in load_task("sentiment")]
             + [r["question"] + " " + " ".join(r["choices"]) for r in load_task("multiple_choice")])
    ids = tokenizer(" ".join(texts))["input_ids"]
    n = len(ids) // length
    if n == 0:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than one sequence of {length}")
    return torch.tensor(ids[:n * length], device=device).reshape(n, length)
