"""The engine loop: admit requests, schedule a step, run the model, sample, detect the end.

:class:`LLMEngine` is the synchronous core that both the offline :class:`~course_utils.serving.llm.LLM`
and the HTTP server drive: ``add_request`` queues a prompt, each ``step`` advances every scheduled
sequence (a decode token, or a chunk of its prompt) and reports which ones received a token or
ended, ``abort`` drops a request and frees its blocks. A request that makes the model or the
sampler fail ends with finish reason ``"error"`` on its own; the rest of its step is retried.

A request for ``n > 1`` completions is prefilled once: when its prompt is computed the sequence
forks ``n - 1`` more that share its KV blocks (:meth:`BlockManager.fork`), and each draws its own
tokens from there. With ``logprobs`` set, each output token carries its log-probability and those
of the most likely alternatives (:mod:`~course_utils.serving.logprobs`).

Speculative decoding (``num_speculative_tokens`` for every request, or a request's own
``speculative_tokens``) drafts with prompt lookup, or with a draft model when the engine has one
(``draft_model``, or ``speculative_draft_layers``: the target's own first layers). Each drafting
sequence then keeps a :class:`~course_utils.serving.speculative.ModelDraft` with its own small KV
cache, rolled back to the accepted tokens after every check.
"""

from __future__ import annotations

import logging
import time

import torch

from course_utils.architecture.transformer import Llama
from course_utils.chat import find_stop
from course_utils.environment import release_freed_memory
from course_utils.serving.block_manager import BlockManager
from course_utils.serving.config import EngineConfig
from course_utils.serving.logprobs import Logprob, token_logprobs
from course_utils.serving.model_runner import ModelRunner
from course_utils.serving.sampling import MAX_SPECULATIVE_TOKENS, NO_IDS, SamplingParams, next_token_probs, sample
from course_utils.serving.scheduler import Scheduler
from course_utils.serving.sequence import Sequence
from course_utils.serving.speculative import ModelDraft, SpeculativeStats, ngram_draft, truncated_draft, verify
from course_utils.serving.structured import Matcher, MatcherFactory

__all__ = ["EngineConfig", "LLMEngine"]

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, model: Llama, tokenizer, config: EngineConfig | None = None, draft_model: Llama | None = None):
        """``draft_model``: a smaller model with the same vocabulary that proposes speculative drafts
        (default: the target's first ``config.speculative_draft_layers`` layers, or prompt lookup if 0)."""
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        c = self.config
        # an engine dropped before this one (del llm) left its packed weights and KV pool freed but
        # resident in glibc's heap: hand them back before this one takes as much again
        release_freed_memory()
        if draft_model is None and c.speculative_draft_layers:
            draft_model = truncated_draft(model, c.speculative_draft_layers)
        if draft_model is not None and draft_model.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"the draft model's vocabulary ({draft_model.config.vocab_size}) must be the "
                             f"target's ({model.config.vocab_size})")
        self.draft_model = draft_model
        self.manager = BlockManager(c.num_blocks, c.block_size, c.enable_prefix_caching)
        self.scheduler = Scheduler(self.manager, c.max_num_seqs, c.max_num_batched_tokens, c.enable_chunked_prefill)
        self.runner = ModelRunner(model, c.num_blocks, c.block_size, c.max_num_seqs, c.decode_kernel)
        self.num_steps = 0  # forward passes run so far
        self.speculation = SpeculativeStats()  # drafts proposed and accepted (num_speculative_tokens > 0)
        eos = tokenizer.eos_token_id
        self.eos_token_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.requests: dict[str, Sequence] = {}  # request id -> its first sequence (see Sequence.group)
        self._generators: dict[int, torch.Generator | None] = {}
        self._matchers: dict[int, Matcher] = {}  # seq id -> where it stands in its structured-output grammar
        self._model_drafts: dict[int, ModelDraft] = {}  # seq id -> its draft model's cache (with a draft model)
        self._draft_probs: dict[int, torch.Tensor] = {}  # seq id -> the draft distributions of this step's drafts
        self.served_by: str | None = None  # set while a server's thread owns the step loop
        self._grammars = MatcherFactory(tokenizer, model.config.vocab_size)

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError (one line, naming the problem) if the request cannot be served; no side effects."""
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
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> Sequence:
        """Queue a request; one that cannot be served (see :meth:`check_request`) is refused here."""
        params = params or SamplingParams()
        self.check_request(prompt_token_ids, params)
        seq = Sequence(list(prompt_token_ids), params, request_id or "")
        if seq.request_id in self.requests:
            raise ValueError(f"request id {seq.request_id!r} is already in use")
        generator = params.generator(self.runner.device)  # before the request is registered: nothing to undo
        if params.structured_outputs is not None:  # a grammar that does not compile is refused here
            self._matchers[seq.seq_id] = self._grammars.create(params.structured_outputs)
        self.requests[seq.request_id] = seq
        self._generators[seq.seq_id] = generator
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> None:
        """Stop a request (a client went away), all its completions: their blocks are freed at once."""
        root = self.requests.pop(request_id, None)
        for seq in root.group if root is not None else []:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
            self._forget(seq.seq_id)

    def abort_all(self, reason: str = "abort") -> list[Sequence]:
        """End every request in flight with ``reason``; returns them."""
        ended = [seq for root in self.requests.values() for seq in root.group if not seq.is_finished]
        for seq in ended:
            self.scheduler.finish(seq, reason)
        self.requests.clear()
        for state in self._per_sequence_state():
            state.clear()
        return ended

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def step(self) -> list[Sequence]:
        """Run one step; returns the sequences that received a token or ended (finished ones included).

        A sequence whose forward pass or sampling raises ends with finish reason ``"error"``; the
        others in the step are run again without it and go on unharmed.
        """
        seqs, num_decode = self.scheduler.schedule()
        if not seqs:
            return []
        if self.config.num_speculative_tokens or any(s.params.speculative_tokens for s in seqs[:num_decode]):
            seqs, num_decode = self._propose_drafts(seqs, num_decode)
        ran, failed = self._forward_isolating(seqs, num_decode)
        self.num_steps += 1
        now, changed = time.perf_counter(), []
        for seq in failed:
            self._end(seq, "error")
            changed.append(seq)
        complete = []
        for seq, logits in ran:
            if seq.draft_token_ids:
                self._accept_drafts(seq, logits, now)
                changed.append(seq)
                continue
            logits = logits[-1]
            before = seq.num_computed_tokens
            seq.num_computed_tokens += seq.num_new_tokens
            self.manager.mark_computed(seq, before)  # the blocks this step filled hold real KV now
            if seq.num_computed_tokens == len(seq):  # else a prompt chunk: no token until the whole prompt is in
                complete.append((seq, logits))
                if seq.params.n > 1 and seq.parent is None and not seq.forks:
                    complete += [(fork, logits) for fork in self._fork(seq)]
        for (seq, logits), token in zip(complete, self._sample_isolating(complete), strict=True):
            if token is None:
                self._end(seq, "error")
            else:
                self._emit(seq, [token], now, logits[None])
            changed.append(seq)
        return changed

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """Create the other ``n - 1`` completions of ``parent``'s request, whose prompt is now computed.

        Each shares the prompt's KV blocks and samples its first token from the same logits in this
        very step (they are returned); one that finds no room (``max_num_seqs`` running, or no free
        block for its copy of a partly filled block) waits at the head of the queue instead and is
        prefilled on its own later, from the prefix cache where it can.
        """
        forked, queued = [], []
        for index in range(1, parent.params.n):
            fork = Sequence(list(parent.prompt_token_ids), parent.params, parent.request_id, index=index,
                            parent=parent, arrival_time=parent.arrival_time)
            parent.forks.append(fork)
            self._generators[fork.seq_id] = parent.params.generator(self.runner.device, index)
            if parent.params.structured_outputs is not None:
                self._matchers[fork.seq_id] = self._grammars.create(parent.params.structured_outputs)
            if self.scheduler.has_room and self.manager.can_fork(parent):
                if copy := self.manager.fork(parent, fork):
                    self.runner.cache.copy_block(*copy)
                self.scheduler.add_running(fork)
                forked.append(fork)
            else:
                queued.append(fork)
        self.scheduler.add_first(queued)
        return forked

    def _emit(self, seq: Sequence, tokens: list[int], now: float, logits: torch.Tensor) -> bool:
        """Append ``tokens``, drawn from the rows of (>= len(tokens), V) ``logits``, to ``seq`` until it
        finishes (then it is ended); whether it is still running."""
        if seq.first_token_time is None:
            seq.first_token_time = now
        entries: list[dict[int, Logprob] | None] = [None] * len(tokens)
        if seq.params.logprobs is not None:
            try:
                entries = token_logprobs(logits[:len(tokens)], tokens, seq.params.logprobs,
                                         lambda token_id: self.tokenizer.decode([token_id]))
            except Exception:
                logger.exception("computing logprobs failed for %s; ending it alone", seq.request_id)
                self._end(seq, "error")
                return False
        for token, entry in zip(tokens, entries, strict=True):
            if (matcher := self._matchers.get(seq.seq_id)) is not None:
                try:
                    matcher.consume(token)
                except ValueError:
                    logger.exception("the grammar refused a sampled token for %s; ending it alone", seq.request_id)
                    self._end(seq, "error")
                    return False
            if reason := self._append(seq, token, entry):
                self._end(seq, reason)
                return False
        return True

    def _propose_drafts(self, seqs: list[Sequence], num_decode: int) -> tuple[list[Sequence], int]:
        """Drafts for the decoding sequences that can take them (see :meth:`_draft_room`); a drafted
        sequence checks 1 + its drafts tokens this step, so it moves behind the plain decodes."""
        plain, drafted = [], []
        for seq in seqs[:num_decode]:
            try:
                drafts = self._draft(seq, room) if (room := self._draft_room(seq)) else []
            except Exception:  # a draft that fails costs its sequence the speedup, not its reply
                logger.exception("drafting failed for %s; it decodes without drafts", seq.request_id)
                self._model_drafts.pop(seq.seq_id, None)
                drafts = []
            if drafts and self.manager.reserve(seq, len(seq) + len(drafts)):
                seq.draft_token_ids, seq.num_new_tokens = drafts, 1 + len(drafts)
                drafted.append(seq)
            else:
                if drafts and seq.seq_id in self._model_drafts:  # no room to check them: the draft forgets them
                    self._model_drafts[seq.seq_id].accept([], 0, len(drafts))
                self._draft_probs.pop(seq.seq_id, None)
                plain.append(seq)
        return plain + drafted + seqs[num_decode:], len(plain)

    def _draft(self, seq: Sequence, gamma: int) -> list[int]:
        """Up to ``gamma`` drafts: prompt lookup, or the draft model's tokens (their distributions kept
        for the acceptance rule). The draft model's cache first catches up with the sequence's tokens."""
        if self.draft_model is None:
            return ngram_draft(seq.token_ids, gamma)
        draft = self._model_drafts.get(seq.seq_id)
        if draft is None:
            draft = self._model_drafts[seq.seq_id] = ModelDraft(self.draft_model)
            draft.reset(seq.token_ids, self.config.max_model_len + MAX_SPECULATIVE_TOKENS + 1)
        else:
            draft.pending += seq.token_ids[draft.cache.length + len(draft.pending):]
        temperature = 0.0 if seq.params.greedy else seq.params.temperature
        tokens, self._draft_probs[seq.seq_id] = draft.propose(gamma, temperature, self._generators[seq.seq_id])
        return tokens

    def _draft_room(self, seq: Sequence) -> int:
        """How many drafts ``seq`` may check: as many as it asks for (``speculative_tokens``, else the
        engine's ``num_speculative_tokens``), and all of them and a bonus token must fit its max_tokens
        and the context. 0 with a penalty, whose distribution would change within the step."""
        p = seq.params
        if p.reads_history or p.structured_outputs is not None:
            return 0
        wanted = self.config.num_speculative_tokens if p.speculative_tokens is None else p.speculative_tokens
        room = min(p.max_tokens - len(seq.output_token_ids), self.config.max_model_len - len(seq)) - 1
        return max(0, min(wanted, room))

    def _accept_drafts(self, seq: Sequence, logits: torch.Tensor, now: float) -> None:
        """Keep the drafts the target agrees with (the exact rule of :func:`verify`) and the token after
        them; the keys and values of the rejected ones are forgotten with the blocks they needed."""
        drafts, seq.draft_token_ids = seq.draft_token_ids, []
        try:
            probs = torch.stack([next_token_probs(row, seq.params, NO_IDS) for row in logits])
            draft_probs = self._draft_probs.pop(seq.seq_id, None)  # None: prompt lookup's one-hot drafts
            emitted, accepted = verify(probs, drafts, draft_probs, self._generators[seq.seq_id], seq.params.greedy)
        except Exception:
            logger.exception("checking the drafts failed for %s; ending it alone", seq.request_id)
            self._end(seq, "error")
            return
        self.speculation.target_passes += 1
        self.speculation.proposed += len(drafts)
        self.speculation.accepted += accepted
        self.speculation.emitted += len(emitted)
        seq.num_computed_tokens += 1 + accepted  # the last token's and the accepted drafts' KV are right
        if (draft := self._model_drafts.get(seq.seq_id)) is not None:
            draft.accept(emitted, accepted, len(drafts))  # its cache rolls back to the accepted drafts
        if self._emit(seq, emitted, now, logits):
            self.manager.trim(seq)

    def _forward_isolating(self, seqs: list[Sequence], num_decode: int
                           ) -> tuple[list[tuple[Sequence, torch.Tensor]], list[Sequence]]:
        """Each sequence with its (1 + drafts, V) logits, and the sequences whose forward pass fails.

        On an exception the batch is split in halves and each is run again, down to single
        sequences, so one request that breaks the model costs the others a few extra passes,
        not their replies. A half keeps the order decodes-then-prefills the runner expects.
        """
        try:
            logits = self.runner.run(seqs, self.manager, num_decode)
            return list(zip(seqs, logits, strict=True)), []
        except Exception:
            if len(seqs) == 1:
                logger.exception("the forward pass failed for %s; ending it alone", seqs[0].request_id)
                return [], seqs
        half = len(seqs) // 2
        ran_a, failed_a = self._forward_isolating(seqs[:half], min(num_decode, half))
        ran_b, failed_b = self._forward_isolating(seqs[half:], max(0, num_decode - half))
        return ran_a + ran_b, failed_a + failed_b

    def _sample_isolating(self, rows: list[tuple[Sequence, torch.Tensor]]) -> list[int | None]:
        """The next token of each sequence from its (V,) logits (None where sampling fails), each with
        its own parameters and generator: all rows in one call, row by row only after a failure."""
        if not rows:
            return []

        def tokens(part: list[tuple[Sequence, torch.Tensor]]) -> list[int]:
            # only the penalties read the history
            seen = [torch.tensor(s.token_ids) if s.params.reads_history else NO_IDS for s, _ in part]
            outputs = [torch.tensor(s.output_token_ids, dtype=torch.long) if s.params.reads_history else NO_IDS
                       for s, _ in part]
            rows = torch.stack([self._constrained(s, logits) for s, logits in part])
            return sample(rows, [s.params for s, _ in part], seen, [self._generators[s.seq_id] for s, _ in part],
                          outputs).tolist()

        generators = [g for s, _ in rows if (g := self._generators[s.seq_id]) is not None]
        states, global_state = [g.get_state() for g in generators], torch.get_rng_state()
        try:
            return tokens(rows)
        except Exception:
            logger.exception("sampling failed for a step; sampling its rows one by one")
        for g, state in zip(generators, states, strict=True):  # draws already made are taken back:
            g.set_state(state)  # a seeded request's tokens do not depend on another's failure
        torch.set_rng_state(global_state)
        out = []
        for row in rows:
            try:
                out += tokens([row])
            except Exception:
                logger.exception("sampling failed for %s; ending it alone", row[0].request_id)
                out.append(None)
        return out

    def _constrained(self, seq: Sequence, logits: torch.Tensor) -> torch.Tensor:
        """(V,) ``logits`` with the tokens ``seq``'s grammar forbids set to -inf (unchanged without one)."""
        matcher = self._matchers.get(seq.seq_id)
        return logits if matcher is None else logits.masked_fill(~matcher.allowed().to(logits.device), float("-inf"))

    def _per_sequence_state(self) -> tuple[dict, ...]:
        """What the engine keeps per sequence id: generator, grammar, draft cache, draft distributions."""
        return self._generators, self._matchers, self._model_drafts, self._draft_probs

    def _forget(self, seq_id: int) -> None:
        for state in self._per_sequence_state():
            state.pop(seq_id, None)

    def _end(self, seq: Sequence, reason: str) -> None:
        self.scheduler.finish(seq, reason)
        self._forget(seq.seq_id)
        if all(s.is_finished for s in seq.group):  # the request is done once all its completions are
            self.requests.pop(seq.request_id, None)

    def _append(self, seq: Sequence, token: int, logprob: dict[int, Logprob] | None = None) -> str | None:
        """Add one sampled token (with its logprobs entry, if asked for); the finish reason if the
        sequence is now done."""
        p = seq.params
        if token in p.stop_token_ids or (token in self.eos_token_ids and not p.ignore_eos):
            self._update_text(seq, final=True)  # the stop token is not part of the output
            return "stop"
        seq.output_token_ids.append(token)
        if logprob is not None:
            seq.output_logprobs.append(logprob)
            seq.cumulative_logprob += logprob[token].logprob
        length = len(seq.output_token_ids) >= p.max_tokens or len(seq) >= self.config.max_model_len
        if self._update_text(seq, final=length):
            return "stop"
        return "length" if length else None

    def _update_text(self, seq: Sequence, final: bool) -> bool:
        """Bring ``seq.output_text`` up to its tokens (all of them if ``final``), cut before the first
        stop string; whether one appeared."""
        stops = seq.params.stop
        searched = len(seq.text.text)
        seq.text.update(self.tokenizer, seq.output_token_ids, final=final)
        text = seq.text.text
        # the text before held no stop string: only one that ends in the new piece can start late enough
        cut = find_stop(text, stops, start=max(0, searched - max((len(s) for s in stops), default=0)))
        seq.output_text = text if cut is None else text[:cut]
        return cut is not None
