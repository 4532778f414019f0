"""A small serving engine with vLLM's shape: paged KV cache, continuous batching, an OpenAI server.

* :mod:`~course_utils.serving.sampling`: SamplingParams and the sampler.
* :mod:`~course_utils.serving.sequence`: one request's state.
* :mod:`~course_utils.serving.block_manager`: KV blocks, block tables, prefix caching.
* :mod:`~course_utils.serving.scheduler`: prefill/decode steps, token budget, preemption.
* :mod:`~course_utils.serving.model_runner`: the packed forward pass through the paged pool.
* :mod:`~course_utils.serving.engine`: the step loop; :mod:`~course_utils.serving.llm`: ``LLM``.
* :mod:`~course_utils.serving.structured`: structured outputs (llguidance), and
  :mod:`~course_utils.serving.token_dfa`, the same masks from scratch for a regex subset.
* :mod:`~course_utils.serving.roofline`: measured FLOP/s and bandwidth, and the decode roofline.
"""

from importlib import import_module

__all__ = ["LLM", "RequestOutput", "SamplingParams", "StructuredOutputs"]
_HOMES = {"LLM": "llm", "RequestOutput": "llm", "SamplingParams": "sampling", "StructuredOutputs": "structured"}


def __getattr__(name: str):
    """Import the engine (and torch) on first use, so light modules such as ``config`` load fast."""
    if name not in _HOMES:
        raise AttributeError(f"module 'course_utils.serving' has no attribute {name!r}")
    return getattr(import_module(f"course_utils.serving.{_HOMES[name]}"), name)
