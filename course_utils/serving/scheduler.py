"""Which sequences run in the next engine step: continuous batching with a KV-block budget.

Requests wait in arrival order (FCFS). Each step carries

* a **decode** token for every running sequence whose tokens are all computed but the last, and
* **prefill** work, up to ``max_num_batched_tokens`` new tokens in the step in all: first the
  next chunk of prompts already being prefilled, then waiting requests, as many as fit (at most
  ``max_num_seqs`` running, and enough free KV blocks for each whole prompt).

A new request therefore starts at the next step, in the same forward pass as the others' decode
tokens, instead of waiting for a whole batch to finish: *continuous* (iteration-level) batching,
as in Orca (Yu et al. 2022) and vLLM. With **chunked prefill** (Agrawal et al. 2024, vLLM's
default) a long prompt is split across steps, so one arriving prompt of thousands of tokens
costs each step at most the token budget instead of stalling every running stream for its whole
prefill. Without it a prompt is prefilled in one step, and a prompt longer than the budget left
waits for a step where it runs alone.
When a sequence needs a new block and none is free, the most recently arrived running
sequence is **preempted**: its blocks are freed and it goes back to the front of the queue, to
be recomputed from its tokens later (vLLM's recompute preemption). The oldest request always
keeps its blocks, so the engine always makes progress.
"""

from __future__ import annotations

import time
from collections import deque

from course_utils.serving.block_manager import BlockManager
from course_utils.serving.sequence import Sequence, SequenceStatus

__all__ = ["Scheduler"]


class Scheduler:
    def __init__(self, manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 chunked_prefill: bool = True):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.manager = manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked_prefill = chunked_prefill
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_room(self) -> bool:
        """Whether one more sequence may run (fewer than ``max_num_seqs`` are running)."""
        return len(self.running) < self.max_num_seqs

    def add_running(self, seq: Sequence) -> None:
        """Run a sequence that already has its blocks and its computed tokens (a fork)."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    def add_first(self, seqs: list[Sequence]) -> None:
        """Queue ``seqs``, in order, ahead of every waiting request (forks that found no room)."""
        self.waiting.extendleft(reversed(seqs))

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Sequence], int]:
        """The sequences of the next step, decoding ones first, and how many of them decode.

        Each scheduled sequence's ``num_new_tokens`` says how many of its tokens the step computes
        (1 for a decode; a chunk, or the whole rest of the prompt, for a prefill).
        """
        running = self._keep_running()
        decode = [seq for seq in running if len(seq) - seq.num_computed_tokens == 1]
        prefill = [seq for seq in running if len(seq) - seq.num_computed_tokens > 1]
        budget = self.max_num_batched_tokens - len(decode)  # decodes always run: max_num_seqs bounds them
        for seq in decode:
            seq.num_new_tokens = 1
        continued = []
        for seq in prefill:  # only with chunked prefill is a running prompt not yet fully computed
            if budget <= 0:
                break
            seq.num_new_tokens = min(len(seq) - seq.num_computed_tokens, budget)
            budget -= seq.num_new_tokens
            continued.append(seq)
        return decode + continued + self._admit(budget), len(decode)

    def _admit(self, budget: int) -> list[Sequence]:
        """Move waiting requests to running while the token budget, max_num_seqs and the free blocks allow."""
        admitted = []
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if self.chunked_prefill:
                if budget <= 0:
                    break
            elif self.running and len(seq) > budget:  # a whole prompt, alone in its step if need be
                break
            if not self.manager.can_allocate(seq):
                break
            self.waiting.popleft()
            self.manager.allocate(seq)
            uncomputed = len(seq) - seq.num_computed_tokens
            seq.num_new_tokens = min(uncomputed, budget) if self.chunked_prefill else uncomputed
            budget -= seq.num_new_tokens
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _keep_running(self) -> list[Sequence]:
        """The running sequences that keep their blocks this step, each with a slot for its newest
        token; when the pool runs out, the latest arrivals are preempted to make room."""
        scheduled, queue = [], deque(self.running)
        while queue:
            seq = queue.popleft()
            while not self.manager.can_append(seq):
                if queue:
                    self._preempt(queue.pop())  # the latest arrival gives way
                else:
                    self._preempt(seq)
                    break
            else:
                self.manager.append_slot(seq)
                scheduled.append(seq)
        self.running = deque(scheduled)
        return scheduled

    def _preempt(self, seq: Sequence) -> None:
        self.manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Take a sequence out (finished or aborted) and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        self.manager.free(seq)
        seq.status, seq.finish_reason, seq.finish_time = SequenceStatus.FINISHED, reason, time.perf_counter()
