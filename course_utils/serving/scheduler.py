"""Which sequences run in the next engine step: continuous batching with a KV-block budget.

Requests wait in arrival order (FCFS). Each step carries

* a **decode** token for every running sequence, and
* the **prefill** of as many waiting requests as fit beside them: at most ``max_num_seqs``
  running, at most ``max_num_batched_tokens`` new tokens in the step, and enough free KV blocks
  for each prompt.

A new request therefore starts at the next step, in the same forward pass as the others' decode
tokens, instead of waiting for a whole batch to finish: *continuous* (iteration-level) batching,
as in Orca (Yu et al. 2022) and vLLM.
When a decoding sequence needs a new block and none is free, the most recently arrived running
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
    def __init__(self, manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        self.manager = manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Sequence], int]:
        """The sequences of the next step, running ones (one new token each) first, then newly
        admitted ones (their whole uncomputed prompt), and how many of them are decoding."""
        decode = self._schedule_decode()
        prefill = self._schedule_prefill(self.max_num_batched_tokens - len(decode))
        return decode + prefill, len(decode)

    def _schedule_prefill(self, budget: int) -> list[Sequence]:
        scheduled = []
        while self.waiting and len(self.running) + len(scheduled) < self.max_num_seqs:
            seq = self.waiting[0]
            if (scheduled or self.running) and len(seq) > budget or not self.manager.can_allocate(seq):
                break
            self.waiting.popleft()
            self.manager.allocate(seq)
            budget -= len(seq) - seq.num_cached_tokens
            seq.status = SequenceStatus.RUNNING
            scheduled.append(seq)
        self.running.extend(scheduled)
        return scheduled

    def _schedule_decode(self) -> list[Sequence]:
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
