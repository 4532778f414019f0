"""The roofline of a decode step: is it limited by memory bandwidth or by arithmetic?

One decode step for a batch of B sequences multiplies every weight matrix by B vectors. It must
read all the weights once (``weight_bytes``) and does about ``2 x params x B`` FLOPs, so

    step time  >=  max(weight_bytes / bandwidth,  2 x params x B / peak_flops)

For small B the first term wins: the step costs the same whatever B is, and batching more
requests is free throughput (decode is *memory-bound*). Past the knee

    B*  =  peak_flops x weight_bytes / (2 x params x bandwidth)

the arithmetic wins and throughput stops growing with B (*compute-bound*). Attention's reads of
the KV cache add to the memory side and grow with B x context; this model leaves them out.

:func:`matmul_flops` and :func:`memory_bandwidth` measure the two limits on this machine;
:func:`decode_step_seconds` times a real decode step of a :class:`~course_utils.architecture.transformer.Llama`.

The knee is where the part of a step that does not depend on B (reading the weights) equals the
part that grows with B (the arithmetic). :func:`fit_step_cost` measures those two parts from timed
steps, ``step(B) = fixed + per_sequence x B``, so the measured knee ``fixed / per_sequence`` sits
beside the predicted one on the same definition; a fixed part far above ``weight_bytes /
bandwidth`` means the step is bound by overhead (kernel launches, Python, small operations),
not by memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from course_utils.architecture.transformer import KVCache, Llama

__all__ = ["StepCost", "decode_step_seconds", "decode_step_times", "fit_step_cost", "knee_batch", "matmul_flops",
           "memory_bandwidth", "predicted_step_cost", "roofline_tokens_per_s"]


def _times(fn, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _best_seconds(fn, repeats: int) -> float:
    return min(_times(fn, repeats))


def matmul_flops(n: int = 1024, repeats: int = 5, dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul, best of ``repeats``: the arithmetic roof."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)

    def run():
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * n ** 3 / _best_seconds(run, repeats)


def memory_bandwidth(nbytes: int = 256 * 2 ** 20, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes/s of copying a buffer far larger than the caches (each byte read once, written once)."""
    source = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)

    def run():
        target.copy_(source)
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * source.numel() * 4 / _best_seconds(run, repeats)


def roofline_tokens_per_s(batch: int, params: float, weight_bytes: float, peak_flops: float,
                          bandwidth: float) -> float:
    """Tokens/s of a decode step at ``batch`` sequences if it ran at the roofline's limit."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    step = max(weight_bytes / bandwidth, 2 * params * batch / peak_flops)
    return batch / step


def knee_batch(params: float, weight_bytes: float, peak_flops: float, bandwidth: float) -> float:
    """The batch size where a decode step turns from memory-bound to compute-bound."""
    return peak_flops * weight_bytes / (2 * params * bandwidth)


@dataclass(frozen=True)
class StepCost:
    """A decode step's time as ``fixed_s + per_sequence_s x B`` for a batch of B sequences."""

    fixed_s: float  # paid once per step, whatever B: reading the weights, and any per-step overhead
    per_sequence_s: float  # added by each sequence: its arithmetic (and its share of attention)

    @property
    def knee(self) -> float:
        """The batch at which the two parts are equal: past it, a step costs mostly per sequence."""
        return self.fixed_s / self.per_sequence_s


def predicted_step_cost(params: float, weight_bytes: float, peak_flops: float, bandwidth: float) -> StepCost:
    """The roofline's two parts: weights read once per step, 2 x params FLOPs per sequence.
    Its knee equals :func:`knee_batch`."""
    return StepCost(weight_bytes / bandwidth, 2 * params / peak_flops)


def fit_step_cost(batches, step_seconds) -> StepCost:
    """Least-squares fit of measured step times to ``fixed + per_sequence x B`` (each point weighted
    by 1 / its time, so small and large batches count alike in relative terms)."""
    b, t = np.asarray(batches, dtype=float), np.asarray(step_seconds, dtype=float)
    if b.shape != t.shape or b.size < 2 or len(set(b.tolist())) < 2 or np.any(t <= 0):
        raise ValueError("need step times (> 0) at two or more different batch sizes, one per batch size")
    per_sequence, fixed = np.polyfit(b, t, 1, w=1 / t)
    if per_sequence <= 0 or fixed <= 0:
        raise ValueError(f"the times do not fit fixed + per_sequence x B with both parts positive "
                         f"(got {fixed:.3g} s and {per_sequence:.3g} s per sequence)")
    return StepCost(float(fixed), float(per_sequence))


@torch.inference_mode()
def decode_step_times(model: Llama, batch: int, context: int, repeats: int = 3) -> list[float]:
    """Wall times of ``repeats`` decode steps (after a warm-up) for ``batch`` sequences, each with
    ``context`` cached tokens: their spread shows how noisy the timing is.

    The cache holds zeros rather than real keys and values: the time does not depend on them.
    """
    if batch < 1 or context < 0:
        raise ValueError(f"need batch >= 1 and context >= 0, got {batch} and {context}")
    weight = model.embed_tokens.weight
    cache = KVCache(model.config, batch, context + 1, weight.dtype, weight.device)
    ids = torch.zeros(batch, 1, dtype=torch.long, device=weight.device)

    def step():
        cache.length = context
        model(ids, cache)
        if weight.device.type == "cuda":  # kernels run asynchronously: time them, not their launch
            torch.cuda.synchronize()

    return _times(step, repeats)


def decode_step_seconds(model: Llama, batch: int, context: int, repeats: int = 3) -> float:
    """The best of :func:`decode_step_times`: the step's cost with the least interference."""
    return min(decode_step_times(model, batch, context, repeats))
