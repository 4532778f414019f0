"""A small serving engine with vLLM's shape: paged KV cache, continuous batching, an OpenAI server.

* :mod:`~course_utils.serving.sampling`: SamplingParams and the sampler.
* :mod:`~course_utils.serving.sequence`: one request's state.
* :mod:`~course_utils.serving.block_manager`: KV blocks, block tables, prefix caching.
* :mod:`~course_utils.serving.scheduler`: prefill/decode steps, token budget, preemption.
* :mod:`~course_utils.serving.model_runner`: the packed forward pass through the paged pool.
* :mod:`~course_utils.serving.engine`: the step loop; :mod:`~course_utils.serving.llm`: ``LLM``.
"""

from course_utils.serving.llm import LLM, RequestOutput
from course_utils.serving.sampling import SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
