"""Emergence or mirage: the same models scored with a smooth metric and with exact match.

Wei et al. (2022) report abilities that appear abruptly with scale; Schaeffer et al. (2023) argue
that much of the abruptness comes from the metric. If each of the L answer tokens is right with
probability p, and p improves smoothly with scale, exact match is about p^L: near zero for a long
stretch, then a steep rise. This module gives the simulation and a real task to check it on our
own tiny models: multi-digit addition, written as bytes, scored per digit and as a whole answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["AdditionTask", "constant_guess_baseline", "exact_match_from_token_accuracy", "score_answers",
           "smooth_token_accuracy"]


def smooth_token_accuracy(n_params, n_half: float = 1e9, slope: float = 1.0):
    """A smooth per-token accuracy curve in log N: a logistic in log10 N, 0.5 at ``n_half``."""
    return 1 / (1 + (n_half / np.asarray(n_params, dtype=float)) ** slope)


def exact_match_from_token_accuracy(token_accuracy, answer_length: int):
    """The chance of getting all ``answer_length`` tokens right when each is right independently."""
    if answer_length < 1:
        raise ValueError(f"answer_length must be at least 1, got {answer_length}")
    return np.asarray(token_accuracy, dtype=float) ** answer_length


@dataclass(frozen=True)
class AdditionTask:
    """Problems like ``"047+815=0862"``: operands and sum zero-padded to fixed widths, one per line.

    With ``reverse=True`` every number is written least significant digit first (``"740+518=2680"``),
    the order in which carries are computed: a much easier task for a small model, since each
    answer digit then depends only on digits it has already seen.
    """

    digits: int = 3
    reverse: bool = False

    def problem(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randrange(10**self.digits), rng.randrange(10**self.digits)
        step = -1 if self.reverse else 1
        x, y, s = f"{a:0{self.digits}d}", f"{b:0{self.digits}d}", f"{a + b:0{self.digits + 1}d}"
        return f"{x[::step]}+{y[::step]}=", s[::step]

    def problems(self, count: int, seed: int) -> list[tuple[str, str]]:
        rng = random.Random(seed)
        return [self.problem(rng) for _ in range(count)]

    def text(self, count: int, seed: int) -> bytes:
        """``count`` solved problems, one per line: a training or held-out corpus."""
        return "".join(f"{q}{a}\n" for q, a in self.problems(count, seed)).encode()


@torch.no_grad()
def score_answers(model: torch.nn.Module, problems: list[tuple[str, str]]) -> dict[str, float | list[float]]:
    """Greedy scoring of a byte-level model on (prompt, answer) pairs of fixed lengths.

    Each answer position is predicted from the prompt and the *correct* earlier answer digits
    (teacher forcing). ``digit_accuracy`` is the share of answer digits predicted right,
    ``position_accuracy`` the same per answer position; an answer counts for ``exact_match`` when
    all its digits are right, which is exactly when greedy decoding would write it correctly.
    """
    if not problems or len({(len(q), len(a)) for q, a in problems}) != 1:
        raise ValueError("problems must be non-empty and share one prompt length and one answer length")
    prompt_len, answer_len = len(problems[0][0]), len(problems[0][1])
    text = [b"\n" + (q + a).encode() for q, a in problems]  # start of a line, as in training
    ids = torch.tensor([list(t) for t in text], dtype=torch.long)  # (B, 1 + P + A)
    logits = model(ids[:, :-1])  # (B, P + A, V)
    first = prompt_len  # logits at position i predict byte i + 1; answer byte j is at 1 + P + j
    predicted = logits[:, first:first + answer_len].argmax(-1)  # (B, A)
    correct = predicted == ids[:, first + 1:first + 1 + answer_len]
    return {"digit_accuracy": float(correct.float().mean()), "exact_match": float(correct.all(-1).float().mean()),
            "position_accuracy": correct.float().mean(0).tolist()}


def constant_guess_baseline(problems: list[tuple[str, str]]) -> dict[str, float | list[float]]:
    """What :func:`score_answers` gives a model that ignores the question: at each answer position
    it writes the digit most frequent there, and its whole answer is the most frequent answer.

    This, not 1/10, is chance for a position whose digits are not uniform: the leading digit of a
    two-digit sum is 0 or 1, so guessing it is right about half the time without any arithmetic.
    """
    if not problems:
        raise ValueError("need at least one problem")
    answers = [a for _, a in problems]
    if len({len(a) for a in answers}) != 1:
        raise ValueError("answers must share one length")
    positions = [max(col.count(d) for d in set(col)) / len(col) for col in zip(*answers, strict=True)]
    exact = max(answers.count(a) for a in set(answers)) / len(answers)
    return {"digit_accuracy": sum(positions) / len(positions), "exact_match": exact, "position_accuracy": positions}
