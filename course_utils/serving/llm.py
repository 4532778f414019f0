"""The offline entry point, shaped like vLLM's: ``LLM(model=...).generate(prompts, SamplingParams(...))``.

Code written against this class runs unchanged on vLLM: on a machine with CUDA and vLLM
installed, ``LLM(model, backend="vllm")`` hands the same calls to vLLM, which returns objects
with the same attributes (``.prompt``, ``.outputs[0].text``, ``.outputs[0].token_ids``,
``.outputs[0].finish_reason``, ``.outputs[i].logprobs``, ``.metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from course_utils.architecture.transformer import Llama
from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving.config import EngineConfig
from course_utils.serving.engine import LLMEngine
from course_utils.serving.logprobs import Logprob
from course_utils.serving.sampling import SamplingParams
from course_utils.serving.sequence import Sequence

__all__ = ["LLM", "CompletionOutput", "RequestMetrics", "RequestOutput", "request_output"]


@dataclass
class CompletionOutput:
    """One of a request's ``n`` completions. With ``SamplingParams.logprobs`` set, ``logprobs`` has an
    entry per token of ``token_ids`` and ``cumulative_logprob`` is their sum; both are None otherwise."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None


@dataclass
class RequestMetrics:
    """Timestamps (time.perf_counter seconds) and the two latencies a server is judged by."""

    arrival_time: float
    first_token_time: float | None
    finish_time: float | None
    num_output_tokens: int

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def time_per_output_token(self) -> float | None:
        """Mean gap between output tokens after the first (None with fewer than two tokens)."""
        if self.finish_time is None or self.first_token_time is None or self.num_output_tokens < 2:
            return None
        return (self.finish_time - self.first_token_time) / (self.num_output_tokens - 1)


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics = field(repr=False)


def request_output(seq: Sequence, prompt: str | None = None) -> RequestOutput:
    """The public view of the request ``seq`` belongs to: one output per completion so far (all n
    once the prompt is computed), finished when all are. The metrics are the first completion's."""
    root, group = seq.root, seq.group
    metrics = RequestMetrics(root.arrival_time, root.first_token_time, root.finish_time, len(root.output_token_ids))
    with_logprobs = root.params.logprobs is not None
    outputs = [CompletionOutput(s.index, s.output_text, list(s.output_token_ids), s.finish_reason,
                                list(s.output_logprobs) if with_logprobs else None,
                                s.cumulative_logprob if with_logprobs else None) for s in group]
    return RequestOutput(root.request_id, prompt, list(root.prompt_token_ids), outputs,
                         all(s.is_finished for s in group), metrics)


class LLM:
    """A model behind the paged, continuously batched engine (or vLLM with ``backend="vllm"``).

    ``engine_args`` are :class:`~course_utils.serving.engine.EngineConfig`'s: ``num_blocks``,
    ``block_size``, ``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``,
    ``enable_prefix_caching``, ``enable_chunked_prefill``, ``num_speculative_tokens``. For vLLM
    they pass through (``tensor_parallel_size``, ``gpu_memory_utilization``, ...).
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "course", device: str = "cpu",
                 tensor_parallel_size: int = 1, **engine_args):
        if backend not in ("course", "vllm"):
            raise ValueError(f"backend must be 'course' or 'vllm', got {backend!r}")
        self.backend = backend
        if backend == "vllm":
            self._vllm = _load_vllm(model, {**engine_args, "tensor_parallel_size": tensor_parallel_size})
            self.tokenizer = self._vllm.get_tokenizer()
            return
        from course_utils.models import load_model

        if tensor_parallel_size != 1:
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size!r}: the course engine runs on one device "
                             "(1); for tensor parallelism use backend='vllm' on a machine with several GPUs")
        config = EngineConfig(**engine_args)  # check the sizes before loading anything
        hf_model, tokenizer = load_model(model, device=device)
        self._attach(Llama.from_hf(hf_model), tokenizer, config)

    @classmethod
    def from_model(cls, model: Llama, tokenizer, **engine_args) -> LLM:
        """An engine around a model already loaded, so several engines (say, with and without
        prefix caching) share one copy of the weights."""
        llm = cls.__new__(cls)
        llm.backend = "course"
        llm._attach(model, tokenizer, EngineConfig(**engine_args))
        return llm

    def _attach(self, model: Llama, tokenizer, config: EngineConfig) -> None:
        self.tokenizer = tokenizer
        self.engine = LLMEngine(model, tokenizer, config)

    def generate(self, prompts: str | Seq[str] | Seq[dict],
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None) -> list[RequestOutput]:
        """Complete every prompt (text, or ``{"prompt_token_ids": [...]}``); outputs in prompt order."""
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        if isinstance(sampling_params, Seq):
            params = list(sampling_params)
        else:
            params = [sampling_params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        if self.backend == "vllm":
            return self._vllm.generate(prompts, [_to_vllm(p) for p in params])
        if self.engine.served_by is not None:  # two threads stepping one engine would corrupt it
            raise RuntimeError(f"this engine is being served by {self.engine.served_by}; send requests to the "
                               "server (an openai client), or make a second LLM for offline calls")
        texts, seqs = [], []
        for prompt, p in zip(prompts, params, strict=True):
            if isinstance(prompt, dict):
                ids, text = list(prompt["prompt_token_ids"]), None
            else:
                ids, text = self.tokenizer(prompt, add_special_tokens=False)["input_ids"], prompt
            texts.append(text)
            seqs.append(self.engine.add_request(ids, p))
        while self.engine.has_unfinished:
            self.engine.step()
        return [request_output(seq, text) for seq, text in zip(seqs, texts, strict=True)]

    def chat(self, messages: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | None = None) -> list[RequestOutput]:
        """Conversations rendered with the model's chat template, then generated."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        return self.generate(prompts, sampling_params)


def _load_vllm(model: str, engine_args: dict):
    try:
        import vllm
    except ImportError as err:
        raise RuntimeError("backend='vllm' needs vLLM (pip install vllm) on a machine with a CUDA GPU") from err
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("backend='vllm' needs a CUDA GPU; this machine has none")
    return vllm.LLM(model=model, **engine_args)


def _to_vllm(params: SamplingParams):
    import vllm

    structured = params.structured_outputs
    extra = {}
    if structured is not None:  # vLLM >= 0.10.2 names; its own backend (xgrammar or guidance) compiles it
        from vllm.sampling_params import StructuredOutputsParams

        extra["structured_outputs"] = StructuredOutputsParams(
            json=structured.json, regex=structured.regex, choice=list(structured.choice) if structured.choice else None,
            json_object=structured.json_object or None, grammar=structured.grammar)
    return vllm.SamplingParams(**extra, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                               seed=params.seed, max_tokens=params.max_tokens, stop=params.stop,
                               stop_token_ids=params.stop_token_ids, ignore_eos=params.ignore_eos,
                               repetition_penalty=params.repetition_penalty, presence_penalty=params.presence_penalty,
                               frequency_penalty=params.frequency_penalty, min_p=params.min_p, n=params.n,
                               logprobs=params.logprobs)
