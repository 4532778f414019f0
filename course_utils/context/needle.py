"""Needle in a haystack: can a model read back one fact planted at a chosen depth of a long context?

A trial builds a context of ``length`` tokens from a long text (the haystack), puts one sentence
(the needle: a locker's four-digit access code) at a fraction ``depth`` of the way through, asks
for the code, and starts the model's answer with the words that lead up to it. It then scores the
code's digits in one forward pass: their total log-probability, and whether greedy decoding would
have written exactly them (every digit the most likely next token). A grid of trials over lengths
and depths is the "lost in the middle" experiment (Liu et al., 2023).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from course_utils.context.truncation import longest_prefix

__all__ = ["NeedleTrial", "needle_grid", "needle_prompt", "needle_trial"]

NEEDLE = "The access code for the {colour} locker is {code}."
QUESTION = "What is the access code for the {colour} locker?"
ANSWER_LEAD = "The access code for the {colour} locker is "


@dataclass(frozen=True)
class NeedleTrial:
    length: int  # haystack tokens around the needle
    depth: float  # where the needle sits: 0 = first sentence, 1 = last, as a share of the haystack's characters
    prompt_tokens: int  # the whole prompt, template and question included
    log_prob: float  # log P(code digits | prompt + answer lead)
    found: bool  # greedy decoding would write the code


def _break_near(text: str, position: int) -> int:
    """The paragraph or sentence boundary nearest to ``position`` (0 and len(text) count as boundaries)."""
    candidates = [0, len(text)] + [i + 2 for i in range(len(text) - 1) if text[i:i + 2] in ("\n\n", ". ")]
    return min(candidates, key=lambda i: abs(i - position))


def needle_prompt(tokenizer, haystack: str, length: int, depth: float, code: str, colour: str = "blue") -> str:
    """The chat prompt of one trial, up to and including the answer lead: ``length`` tokens of
    ``haystack`` with the needle inserted at the boundary nearest ``depth`` of the way in."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    available = count(haystack)
    if available < length:
        raise ValueError(f"the haystack has {available} tokens, fewer than the {length} asked for")
    text = haystack[:longest_prefix(haystack, length, count)]
    cut = _break_near(text, round(depth * len(text)))
    context = f"{text[:cut].rstrip()}\n\n{NEEDLE.format(colour=colour, code=code)}\n\n{text[cut:].lstrip()}".strip()
    messages = [{"role": "user", "content": f"{context}\n\n{QUESTION.format(colour=colour)}"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + ANSWER_LEAD.format(
        colour=colour)


@torch.no_grad()
def needle_trial(model, tokenizer, haystack: str, length: int, depth: float, code: str,
                 colour: str = "blue") -> NeedleTrial:
    """One trial: the code's log-probability after the answer lead, and whether greedy decoding finds it."""
    prompt = needle_prompt(tokenizer, haystack, length, depth, code, colour)
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    code_ids = tokenizer(code, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([prompt_ids, code_ids], dim=1).to(model.device)
    n = code_ids.shape[1]
    logits = model(ids, logits_to_keep=n + 1).logits[0, :-1].float()  # (n, vocab): predictions of the code's tokens
    log_probs = torch.log_softmax(logits, dim=-1)
    target = code_ids[0].to(log_probs.device)
    return NeedleTrial(length, depth, prompt_ids.shape[1],
                       float(log_probs[torch.arange(n), target].sum()),
                       bool((log_probs.argmax(-1) == target).all()))


def needle_grid(model, tokenizer, haystack: str, lengths: Sequence[int], depths: Sequence[float], seed: int = 0,
                progress: bool = True) -> list[NeedleTrial]:
    """One trial per (length, depth), each with its own random four-digit code."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    cells = [(length, depth) for length in lengths for depth in depths]
    return [needle_trial(model, tokenizer, haystack, length, depth, f"{rng.randrange(1000, 10000)}")
            for length, depth in tqdm(cells, desc="needle trials", disable=not progress)]
