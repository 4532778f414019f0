"""Where an engine step's time goes: weight matmuls, attention, elementwise work, the rest.

:func:`profile_steps` runs engine steps under ``torch.profiler`` and sorts every operator's own
time (not counting the operators it calls) into four shares of the steps' wall time:

* **weights**: the linear layers' matrix multiplies (the projections, the MLP, the vocabulary head);
* **attention**: everything inside :meth:`PagedKVCache.attend <course_utils.serving.model_runner.PagedKVCache.attend>`
  (writing the new keys and values, the compiled decode kernel or the gathers and SDPA calls, the
  Python between them);
* **elementwise**: every other operator (norms, rotary embedding, activations, residual adds,
  copies, sampling), and the engine's compiled elementwise loops
  (:mod:`~course_utils.serving.fused_elementwise`, labelled while profiling);
* **other**: the wall time no operator accounts for (Python: scheduling, bookkeeping, the
  interpreter between operators).

The profiler adds a few microseconds per operator, so the steps run a little slower than
unprofiled ones; the shares, not the absolute times, are the point.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from torch.profiler import ProfilerActivity, profile

from course_utils.serving import fused_elementwise
from course_utils.serving.engine import LLMEngine
from course_utils.serving.model_runner import ATTENTION_SCOPE

__all__ = ["ATTENTION_SCOPE", "StepBreakdown", "profile_steps"]

_WEIGHT_OPS = ("aten::addmm", "aten::mm", "aten::linear", "mkldnn::_linear_pointwise", "mkl::_mkl_linear",
               "aten::matmul")


@dataclass
class StepBreakdown:
    """Mean milliseconds per step in each part, over ``steps`` steps of ``sequences`` sequences."""

    steps: int
    sequences: float
    wall_ms: float
    weights_ms: float
    attention_ms: float
    elementwise_ms: float
    other_ms: float

    def shares(self) -> dict[str, float]:
        """Each part's fraction of the wall time."""
        parts = ("weights", "attention", "elementwise", "other")
        return {p: getattr(self, f"{p}_ms") / self.wall_ms for p in parts}

    def as_dict(self, digits: int = 2) -> dict:
        out = {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out["shares"] = {k: round(v, 3) for k, v in self.shares().items()}
        return out


def profile_steps(engine: LLMEngine, steps: int) -> StepBreakdown:
    """Run up to ``steps`` engine steps under the profiler (fewer if the work runs out)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ran, sequences = 0, 0
    cache = engine.runner.cache
    cache.label_attention = True
    try:
        with fused_elementwise.labelled(), profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            while ran < steps and engine.has_unfinished:
                sequences += len(engine.scheduler.running)
                engine.step()
                ran += 1
            wall = time.perf_counter() - start
    finally:
        cache.label_attention = False
    if ran == 0:
        raise ValueError("the engine has no request to run: add some before profiling")
    weights = attention = everything = 0.0  # microseconds
    for event in prof.events():
        everything += event.self_cpu_time_total
        if event.name in _WEIGHT_OPS:
            weights += event.self_cpu_time_total
        elif event.name == ATTENTION_SCOPE:  # its operators, the compiled kernel (no operator) and the Python between
            attention += event.cpu_time_total
    elementwise = everything - weights - attention
    per_step_ms = 1e-3 / ran  # profiler times are in microseconds
    return StepBreakdown(ran, sequences / ran, wall * 1e3 / ran, weights * per_step_ms, attention * per_step_ms,
                         elementwise * per_step_ms, wall * 1e3 / ran - everything * per_step_ms)
