"""The engine loop: admit requests, schedule a step, run the model, sample, detect the end.

:class:`LLMEngine` is the synchronous core that both the offline :class:`~course_utils.serving.llm.LLM`
and the HTTP server drive: ``add_request`` queues a prompt, each ``step`` advances every scheduled
sequence by one token and reports which ones changed, ``abort`` drops a request and frees its blocks.
"""

from __future__ import annotations

import time

import torch

from course_utils.architecture.transformer import Llama
from course_utils.chat import find_stop
from course_utils.serving.block_manager import BlockManager
from course_utils.serving.config import EngineConfig
from course_utils.serving.model_runner import ModelRunner
from course_utils.serving.sampling import SamplingParams, sample
from course_utils.serving.scheduler import Scheduler
from course_utils.serving.sequence import Sequence

__all__ = ["EngineConfig", "LLMEngine"]


class LLMEngine:
    def __init__(self, model: Llama, tokenizer, config: EngineConfig | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        c = self.config
        self.manager = BlockManager(c.num_blocks, c.block_size, c.enable_prefix_caching)
        self.scheduler = Scheduler(self.manager, c.max_num_seqs, c.max_num_batched_tokens)
        self.runner = ModelRunner(model, c.num_blocks, c.block_size, c.max_num_seqs)
        self.num_steps = 0  # forward passes run so far
        eos = tokenizer.eos_token_id
        self.eos_token_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.requests: dict[str, Sequence] = {}
        self._generators: dict[int, torch.Generator | None] = {}

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> Sequence:
        """Queue a request; a prompt that cannot fit the model's context is refused here."""
        params = params or SamplingParams()
        if not prompt_token_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_token_ids) >= self.config.max_model_len:
            raise ValueError(f"the prompt has {len(prompt_token_ids)} tokens; this model's context "
                             f"(max_model_len) is {self.config.max_model_len}, and at least one must be generated")
        vocab = self.runner.model.config.vocab_size
        bad = [t for t in prompt_token_ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids must be integers in [0, {vocab}) for this model's vocabulary, "
                             f"got {bad[0]!r}")
        seq = Sequence(list(prompt_token_ids), params, request_id or "")
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already in use")
        generator = params.generator(self.runner.device)  # before the request is registered: nothing to undo
        self.requests[seq.request_id] = seq
        self._generators[seq.seq_id] = generator
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> None:
        """Stop a request (a client went away): its blocks are freed at once."""
        seq = self.requests.pop(request_id, None)
        if seq is not None and not seq.is_finished:
            self.scheduler.finish(seq, "abort")
            self._generators.pop(seq.seq_id, None)

    def abort_all(self, reason: str = "abort") -> list[Sequence]:
        """End every request in flight with ``reason``; returns them."""
        ended = [seq for seq in self.requests.values() if not seq.is_finished]
        for seq in ended:
            self.scheduler.finish(seq, reason)
        self.requests.clear()
        self._generators.clear()
        return ended

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def step(self) -> list[Sequence]:
        """Run one step; returns the sequences that received a token (finished ones included)."""
        seqs, num_decode = self.scheduler.schedule()
        if not seqs:
            return []
        logits = self.runner.run(seqs, self.manager, num_decode)
        self.num_steps += 1
        no_history = torch.empty(0, dtype=torch.long)  # only the repetition penalty reads the history
        seen = [torch.tensor(s.token_ids) if s.params.repetition_penalty != 1.0 else no_history for s in seqs]
        tokens = sample(logits, [s.params for s in seqs], seen, [self._generators[s.seq_id] for s in seqs])
        now = time.perf_counter()
        for index, (seq, token) in enumerate(zip(seqs, tokens.tolist(), strict=True)):
            seq.num_computed_tokens = len(seq)
            if index >= num_decode:  # a prompt just prefilled: its blocks now hold real KV
                self.manager.mark_computed(seq)
            if seq.first_token_time is None:
                seq.first_token_time = now
            reason = self._append(seq, token)
            if reason:
                self.scheduler.finish(seq, reason)
                self.requests.pop(seq.request_id, None)
                self._generators.pop(seq.seq_id, None)
        return seqs

    def _append(self, seq: Sequence, token: int) -> str | None:
        """Add one sampled token; the finish reason if the sequence is now done."""
        p = seq.params
        if token in p.stop_token_ids or (token in self.eos_token_ids and not p.ignore_eos):
            return "stop"  # the stop token itself is not part of the output
        seq.output_token_ids.append(token)
        text = self.tokenizer.decode(seq.output_token_ids, skip_special_tokens=True)
        cut = find_stop(text, p.stop)
        seq.output_text = text if cut is None else text[:cut]
        if cut is not None:
            return "stop"
        if len(seq.output_token_ids) >= p.max_tokens or len(seq) >= self.config.max_model_len:
            return "length"
        return None
