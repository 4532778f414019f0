"""One request as the engine sees it: its tokens, its state, its KV blocks and its timings."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

from course_utils.serving.detokenizer import IncrementalText
from course_utils.serving.logprobs import Logprob
from course_utils.serving.sampling import SamplingParams

__all__ = ["Sequence", "SequenceStatus"]

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, or preempted and waiting to be recomputed
    RUNNING = "running"  # has KV blocks: prefilling (perhaps over several steps) or decoding
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A prompt and the tokens generated for it so far.

    ``block_table`` lists the KV-cache blocks holding this sequence's keys and values, in order:
    token i lives in block ``block_table[i // block_size]`` at offset ``i % block_size``.
    ``num_cached_tokens`` counts the prompt tokens whose keys and values were found in the
    prefix cache, so the prefill starts after them. A long prompt may be prefilled over several
    steps (chunked prefill): each step computes ``num_new_tokens`` tokens after the
    ``num_computed_tokens`` already in the cache, and the next token is sampled only once every
    token is computed.

    A request for ``n > 1`` completions starts as one sequence; when its prompt is computed it
    *forks* ``n - 1`` more (``forks``, each with its ``index`` and its ``parent``) that share the
    prompt's KV blocks, so the prompt is computed once for all n.
    """

    prompt_token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    seq_id: int = field(default_factory=lambda: next(_ids))
    output_token_ids: list[int] = field(default_factory=list)
    output_text: str = ""  # the decoded output, cut before a stop string if one appeared
    text: IncrementalText = field(default_factory=IncrementalText, repr=False)  # the output's text so far
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0
    num_computed_tokens: int = 0  # tokens whose keys and values are in the cache
    num_new_tokens: int = 0  # tokens the current step computes (set by the scheduler)
    draft_token_ids: list[int] = field(default_factory=list)  # speculative guesses checked this step
    finish_reason: str | None = None  # "stop", "length", "abort" or "error"
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    finish_time: float | None = None
    preemptions: int = 0
    index: int = 0  # which of the request's n completions this is
    parent: Sequence | None = field(default=None, repr=False)  # the sequence this one was forked from
    forks: list[Sequence] = field(default_factory=list, repr=False)  # the completions forked from this one
    output_logprobs: list[dict[int, Logprob]] = field(default_factory=list, repr=False)  # when params.logprobs
    cumulative_logprob: float = 0.0  # sum of the output tokens' log-probabilities (when params.logprobs)

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError("a request needs at least one prompt token")
        self.request_id = self.request_id or f"seq-{self.seq_id}"

    def __len__(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def root(self) -> Sequence:
        """The request's first sequence, which the others were forked from."""
        return self.parent or self

    @property
    def group(self) -> list[Sequence]:
        """All the sequences of this request so far, by index."""
        return [self.root, *self.root.forks]

    def num_blocks(self, block_size: int) -> int:
        """Blocks needed to hold every token so far."""
        return -(-len(self) // block_size)

    def block_tokens(self, i: int, block_size: int) -> list[int]:
        """The token ids stored in this sequence's i-th block."""
        return self.token_ids[i * block_size:(i + 1) * block_size]
