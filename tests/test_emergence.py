"""Exact match against per-digit scoring: the simulation and the scorer on a model we control."""

import random

import numpy as np
import pytest
import torch

from course_utils.scaling.emergence import (
    AdditionTask,
    constant_guess_baseline,
    exact_match_from_token_accuracy,
    score_answers,
    smooth_token_accuracy,
)


def test_exact_match_is_the_per_token_accuracy_to_the_answer_length():
    p = smooth_token_accuracy(np.logspace(7, 12, 11))
    assert np.all(np.diff(p) > 0)
    em = exact_match_from_token_accuracy(p, 10)
    np.testing.assert_allclose(em, p**10)
    assert em[0] < 1e-3 < 0.5 < em[-1]  # the same smooth curve looks like nothing, then a jump
    with pytest.raises(ValueError, match="answer_length"):
        exact_match_from_token_accuracy(p, 0)


def test_addition_problems_are_correct_in_both_digit_orders():
    rng = random.Random(0)
    for reverse in (False, True):
        task = AdditionTask(3, reverse=reverse)
        for _ in range(100):
            prompt, answer = task.problem(rng)
            a, b = prompt[:-1].split("+")
            if reverse:
                a, b, answer = a[::-1], b[::-1], answer[::-1]
            assert int(a) + int(b) == int(answer) and len(answer) == 4
    assert AdditionTask(2).text(3, 0).count(b"\n") == 3


class _Oracle(torch.nn.Module):
    """A 'model' that predicts the true next byte of one known text, except at chosen positions."""

    def __init__(self, texts: list[bytes], wrong: set[tuple[int, int]]):
        super().__init__()
        self.texts, self.wrong = texts, wrong

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, 256)
        logits = torch.zeros(*ids.shape, 256)
        for b, text in enumerate(self.texts):
            for t in range(ids.shape[1]):
                target = text[t + 1]
                logits[b, t, (target + 1) % 256 if (b, t) in self.wrong else target] = 1.0
        return logits


def test_scorer_counts_digits_and_whole_answers():
    problems = [("12+34=", "046"), ("50+50=", "100")]
    texts = [b"\n" + (q + a).encode() for q, a in problems]
    assert score_answers(_Oracle(texts, set()), problems) == {"digit_accuracy": 1.0, "exact_match": 1.0,
                                                              "position_accuracy": [1.0, 1.0, 1.0]}
    # position 6 predicts the first answer digit (text index 7); a mistake there costs one digit of six
    scores = score_answers(_Oracle(texts, {(0, 6)}), problems)
    assert scores == {"digit_accuracy": pytest.approx(5 / 6), "exact_match": 0.5, "position_accuracy": [0.5, 1.0, 1.0]}
    assert score_answers(_Oracle(texts, {(0, 5)}), problems)["exact_match"] == 1.0  # prompt errors do not count
    with pytest.raises(ValueError, match="one answer length"):
        score_answers(_Oracle(texts, set()), [("1+1=", "2"), ("10+10=", "20")])


class _ConstantGuesser(torch.nn.Module):
    """Ignores the input: at answer position j it always predicts the byte ``answer[j]``."""

    def __init__(self, prompt_len: int, answer: str):
        super().__init__()
        self.prompt_len, self.answer = prompt_len, answer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, 256)
        for j, digit in enumerate(self.answer.encode()):
            logits[:, self.prompt_len + j, digit] = 1.0
        return logits


def test_the_constant_guess_baseline_is_what_a_question_blind_model_scores():
    problems = AdditionTask(2).problems(500, seed=3)
    baseline = constant_guess_baseline(problems)
    columns = list(zip(*[a for _, a in problems], strict=True))
    majority = "".join(max(set(col), key=col.count) for col in columns)
    scored = score_answers(_ConstantGuesser(len(problems[0][0]), majority), problems)
    assert scored["position_accuracy"] == pytest.approx(baseline["position_accuracy"])
    assert scored["digit_accuracy"] == pytest.approx(baseline["digit_accuracy"])
    # the leading digit of a two-digit sum is 0 or 1: about half right with no arithmetic, far above 1/10
    assert 0.45 < baseline["position_accuracy"][0] < 0.56 and all(p < 0.16 for p in baseline["position_accuracy"][1:])
    assert baseline["exact_match"] < 0.03
    with pytest.raises(ValueError, match="one length"):
        constant_guess_baseline([("1+1=", "2"), ("10+10=", "20")])
