"""Talking to a causal LM: chat templates in, decoded completions out.

A thin, explicit layer over ``model.generate`` so every notebook sets the sampling knobs the
same way. One trap it removes: transformers applies ``top_k=50`` whenever sampling is on unless
told otherwise, which would silently mix a third knob into any temperature / top-p experiment.
Here ``top_k`` is off (0) unless you ask for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

__all__ = ["Completion", "chat_inputs", "find_stop", "generate", "generate_batch"]

Messages = list[dict[str, str]]


@dataclass
class Completion:
    """One generated continuation."""

    text: str
    token_ids: list[int] = field(repr=False)
    finish_reason: Literal["stop", "length"]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def chat_inputs(tokenizer, messages: Messages | str) -> dict[str, torch.Tensor]:
    """Token ids for a conversation rendered with the tokenizer's chat template.

    ``messages`` is a list of ``{"role": ..., "content": ...}`` dicts, or a plain string taken
    as one user message. Returns ``input_ids`` and ``attention_mask``, each of shape (1, T),
    ending with the assistant header so the model's next token starts its answer.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages
    ):
        raise TypeError("messages must be a str or a list of {'role': ..., 'content': ...} dicts")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template; pass a plain prompt to a base model instead")
    return dict(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True))


def _left_padded(tokenizer, prompts: list[Messages | str], chat: bool, device) -> dict[str, torch.Tensor]:
    """Token ids of several prompts, left-padded to one length: (P, T) ids and attention mask.

    Padding goes on the left so that every prompt ends at the last column, where generation
    continues; the mask hides the padding and transformers derives positions from the mask.
    """
    rows = [chat_inputs(tokenizer, p)["input_ids"][0].tolist() if chat
            else tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": ids, "attention_mask": mask}


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index where the earliest of ``stops`` begins in ``text`` (at or after ``start``); None if none occurs."""
    return min((i for i in (text.find(s, start) for s in stops) if i >= 0), default=None)


class _StopStrings(StoppingCriteria):
    """Ends each row once its *generated* text contains a stop string.

    transformers' own ``stop_strings`` also match text that straddles the prompt (a chat
    template ends with a newline, so the stop "\\n```" would fire on an opening fence).
    """

    def __init__(self, tokenizer, stop: Sequence[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, list(stop), prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def _tokens_covering(tokenizer, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded text reaches ``n_chars`` characters."""
    for i in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:i], skip_special_tokens=True)) >= n_chars:
            return ids[:i]
    return ids


def generate(model, tokenizer, prompt: Messages | str, **options) -> list[Completion]:
    """Generate completions of one prompt; ``options`` are the keyword arguments of :func:`generate_batch`."""
    return generate_batch(model, tokenizer, [prompt], **options)[0]


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    prompts: list[Messages | str],
    *,
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    chat: bool = True,
    stop: Sequence[str] = (),
) -> list[list[Completion]]:
    """Generate ``n`` completions for each of several prompts in one batch; one list per prompt.

    Decoding one token reads every weight once whatever the batch size, so on a CPU (and on a
    GPU at small batches) eight prompts cost little more than one: batch what you can.

    Args:
        prompts: each is messages (or a user string) for the chat template, or raw text if ``chat=False``.
        temperature: 0 means greedy decoding (then ``n`` copies would be identical, so ``n``
            must be 1); otherwise logits are divided by it before sampling.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches p.
        top_k: keep only the k most likely tokens; 0 disables it.
        seed: seeds torch's generator first, so a call is repeatable.
        stop: strings that end a completion, as in OpenAI's API: generation halts once one
            appears and the returned text ends just before it (``finish_reason`` "stop").
    """
    if n < 1 or max_new_tokens < 1:
        raise ValueError(f"n and max_new_tokens must be >= 1, got n={n}, max_new_tokens={max_new_tokens}")
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError("stop must be a list of non-empty strings")
    if not prompts:
        raise ValueError("prompts must not be empty")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    greedy = temperature == 0
    if greedy and n > 1:
        raise ValueError("greedy decoding (temperature=0) is deterministic: use n=1 or a temperature > 0")
    inputs = _left_padded(tokenizer, list(prompts), chat, model.device)
    if seed is not None:
        torch.manual_seed(seed)
    sampling = {} if greedy else dict(temperature=temperature, top_p=top_p, top_k=top_k)
    prompt_len = inputs["input_ids"].shape[1]
    stopping = {"stopping_criteria": StoppingCriteriaList([_StopStrings(tokenizer, stop, prompt_len)])} if stop else {}
    out = model.generate(
        **inputs, do_sample=not greedy, max_new_tokens=max_new_tokens, num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id, **sampling, **stopping,
    )
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    completions = []
    for row in out[:, inputs["input_ids"].shape[1]:].tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), None)
        ids = row if end is None else row[:end]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        cut = find_stop(text, stop)
        if cut is not None:
            text = text[:cut]
            ids = _tokens_covering(tokenizer, ids, cut)
        completions.append(Completion(text=text, token_ids=ids,
                                      finish_reason="length" if end is None and cut is None else "stop"))
    return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]
