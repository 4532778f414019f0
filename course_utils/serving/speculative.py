"""Speculative decoding: a cheap draft proposes gamma tokens, the target checks them in one pass.

The target model scores the last accepted token plus the gamma drafted tokens in a single
forward pass, which costs about as much as decoding one token when decoding is memory-bound.
:func:`verify` then keeps a prefix of the drafts with the rule of Leviathan et al. (2023) and
Chen et al. (2023): draft token x with draft probability q(x) and target probability p(x) is
accepted with probability min(1, p(x)/q(x)); at the first rejection a token is drawn from
normalise(max(0, p - q)) and the step ends; if all gamma pass, a bonus token is drawn from the
target's next distribution. Every emitted token is then distributed exactly as the target alone
would sample it, and with greedy decoding the output is token-identical to plain greedy.

Two drafts:

* :func:`ngram_draft` (prompt lookup): find the latest earlier occurrence of the last few tokens
  and propose what followed it. Free, and good when the output copies its input (summaries,
  code edits, extraction). As a deterministic draft its q is one-hot.
* :class:`ModelDraft`: a smaller model with the same tokenizer, decoding gamma tokens itself.
  :func:`truncated_draft` builds one from the target's own first layers (self-speculation, as in
  Draft & Verify, Zhang et al. 2023), so it shares the tokenizer by construction.

If a fraction alpha of drafts is accepted independently, a step yields on average
(1 - alpha^(gamma+1)) / (1 - alpha) tokens: :func:`expected_tokens_per_step`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from course_utils.architecture.transformer import KVCache, Llama

__all__ = ["ModelDraft", "SpeculativeStats", "expected_tokens_per_step", "greedy_agreement", "ngram_draft",
           "speculative_generate", "truncated_draft", "verify"]


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """Mean tokens emitted per target pass when each draft is accepted with probability alpha."""
    if not 0 <= alpha <= 1 or gamma < 0:
        raise ValueError(f"need 0 <= alpha <= 1 and gamma >= 0, got {alpha}, {gamma}")
    return gamma + 1.0 if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def ngram_draft(tokens: list[int], gamma: int, max_ngram: int = 3) -> list[int]:
    """Up to ``gamma`` tokens that followed the latest earlier occurrence of the last n tokens
    (n from ``max_ngram`` down to 1); empty if the tail never occurred before."""
    for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + gamma]
    return []


def verify(target_probs: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None,
           generator: torch.Generator | None = None, greedy: bool = False) -> tuple[list[int], int]:
    """Accept a prefix of ``drafts``; returns (the tokens to emit, how many drafts were accepted).

    target_probs: (len(drafts) + 1, V), the target's distribution at each draft position and
    after the last one. draft_probs: (len(drafts), V), or None for a deterministic draft
    (one-hot q). With ``greedy`` the target's argmax decides: drafts are kept while they equal it.
    """
    emitted = []
    for i, token in enumerate(drafts):
        p = target_probs[i]
        if greedy:
            best = int(torch.argmax(p))
            if best != token:
                return emitted + [best], i
            emitted.append(token)
            continue
        q = draft_probs[i] if draft_probs is not None else torch.nn.functional.one_hot(
            torch.tensor(token), p.numel()).to(p.dtype)
        if torch.rand((), generator=generator) < torch.clamp(p[token] / q[token], max=1.0):
            emitted.append(token)
            continue
        residual = torch.clamp(p - q, min=0)
        residual = residual / residual.sum() if residual.sum() > 0 else p
        return emitted + [int(torch.multinomial(residual, 1, generator=generator))], i
    last = target_probs[len(drafts)]
    bonus = int(torch.argmax(last)) if greedy else int(torch.multinomial(last, 1, generator=generator))
    return emitted + [bonus], len(drafts)


def truncated_draft(model: Llama, n_layers: int) -> Llama:
    """A draft made of the target's first ``n_layers`` layers, final norm and output head.

    It shares every weight tensor with the target (no copy), so it costs no memory.
    """
    if not 1 <= n_layers < model.config.n_layers:
        raise ValueError(f"n_layers must be in [1, {model.config.n_layers}), got {n_layers}")
    with torch.device("meta"):  # build the skeleton without allocating weights
        draft = Llama(dataclasses.replace(model.config, n_layers=n_layers))
    draft.embed_tokens, draft.norm, draft.lm_head = model.embed_tokens, model.norm, model.lm_head
    draft.layers = torch.nn.ModuleList(list(model.layers)[:n_layers])
    draft.inv_freq, draft.attention_factor = model.inv_freq, model.attention_factor
    return draft.eval()


@torch.inference_mode()
def greedy_agreement(target: Llama, drafts: list[Llama], tokens: list[int], start: int) -> list[float]:
    """For each draft, the share of the tokens from ``start`` on whose argmax it predicts as the target does.

    Every model reads the same ``tokens`` (teacher forcing); position t's prediction is compared
    for every t in [start - 1, len(tokens) - 1). Run on the target's own greedy continuation,
    this is the acceptance rate alpha a greedy draft would see, at the cost of one forward pass
    per model instead of a whole speculative run.
    """
    if not 1 <= start < len(tokens):
        raise ValueError(f"need 1 <= start < len(tokens) = {len(tokens)}, got {start}")
    ids = torch.tensor([tokens], device=target.embed_tokens.weight.device)
    want = target(ids)[0, start - 1:-1].argmax(-1)
    return [float((draft(ids)[0, start - 1:-1].argmax(-1) == want).float().mean()) for draft in drafts]


class ModelDraft:
    """A draft model with its own KV cache, kept in step with the tokens the target accepts.

    Between steps, the draft's cache holds a prefix of the committed tokens and ``pending``
    holds the rest, not yet fed to it.
    """

    def __init__(self, model: Llama):
        self.model = model
        self.device = model.embed_tokens.weight.device

    def reset(self, prompt: list[int], max_len: int) -> None:
        self.cache = KVCache(self.model.config, 1, max_len, self.model.embed_tokens.weight.dtype, self.device)
        self.pending = list(prompt)

    @torch.inference_mode()
    def propose(self, gamma: int, temperature: float, generator: torch.Generator | None
                ) -> tuple[list[int], torch.Tensor]:
        """gamma tokens and their draft distributions (gamma, V)."""
        self.committed = self.cache.length + len(self.pending)
        tokens, probs, step_input = [], [], self.pending
        for _ in range(gamma):
            logits = self.model(torch.tensor([step_input], device=self.device), self.cache)[0, -1].float()
            q = _probs(logits, temperature)
            token = int(torch.argmax(q)) if temperature == 0 else int(torch.multinomial(q, 1, generator=generator))
            tokens.append(token)
            probs.append(q)
            step_input = [token]
        return tokens, torch.stack(probs)

    def accept(self, emitted: list[int], n_accepted: int, gamma: int) -> None:
        """Keep the cached accepted drafts (the last draft was never fed); queue the rest."""
        if gamma == 0:
            self.pending += emitted
            return
        kept = min(n_accepted, gamma - 1)
        self.cache.length = self.committed + kept
        self.pending = emitted[kept:]


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return torch.nn.functional.one_hot(torch.argmax(logits), logits.numel()).float()
    return torch.softmax(logits / temperature, dim=-1)


@dataclass
class SpeculativeStats:
    target_passes: int = 0
    proposed: int = 0
    accepted: int = 0
    emitted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_pass(self) -> float:
        return self.emitted / self.target_passes if self.target_passes else 0.0


@torch.inference_mode()
def speculative_generate(target: Llama, prompt: list[int], max_new_tokens: int, gamma: int = 4,
                         draft: ModelDraft | str = "ngram", temperature: float = 0.0,
                         seed: int | None = None) -> tuple[list[int], SpeculativeStats]:
    """Generate with speculative decoding; ``draft`` is ``"ngram"`` or a :class:`ModelDraft`.

    Returns the new tokens (exactly ``max_new_tokens``) and the acceptance statistics.
    """
    if gamma < 1 or max_new_tokens < 1 or not prompt:
        raise ValueError("need gamma >= 1, max_new_tokens >= 1 and a non-empty prompt")
    device = target.embed_tokens.weight.device
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    cache = KVCache(target.config, 1, len(prompt) + max_new_tokens + gamma + 1, target.embed_tokens.weight.dtype,
                    device)
    if len(prompt) > 1:
        target(torch.tensor([prompt[:-1]], device=device), cache)  # the prompt's keys and values, but its last
    if isinstance(draft, ModelDraft):
        draft.reset(prompt, cache.max_len)
    tokens, stats, greedy = list(prompt), SpeculativeStats(), temperature == 0
    while len(tokens) - len(prompt) < max_new_tokens:
        room = max_new_tokens - (len(tokens) - len(prompt))
        k = min(gamma, room - 1)
        if isinstance(draft, ModelDraft):
            drafts, draft_probs = draft.propose(k, temperature, generator) if k else ([], None)
        else:
            drafts, draft_probs = ngram_draft(tokens, k), None
        start = cache.length
        step = torch.tensor([[tokens[-1]] + drafts], device=device)
        target_probs = torch.stack([_probs(row.float(), temperature) for row in target(step, cache)[0]])
        emitted, n_ok = verify(target_probs, drafts, draft_probs, generator, greedy)
        cache.length = start + 1 + n_ok  # keep the last token and the accepted drafts
        if isinstance(draft, ModelDraft):
            draft.accept(emitted, n_ok, k)
        tokens += emitted
        stats.target_passes += 1
        stats.proposed += len(drafts)
        stats.accepted += n_ok
        stats.emitted += len(emitted)
    return tokens[len(prompt):len(prompt) + max_new_tokens], stats
