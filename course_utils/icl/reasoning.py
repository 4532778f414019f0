"""Five ways to ask an arithmetic word problem, run as batches and compared on the same problems.

================== ====================================================== ====================================
method             prompt                                                 answer read as
================== ====================================================== ====================================
direct             "Reply with the final number only."                    the number in the reply
zero-shot CoT      the question + "Let's think step by step."             the last number, or the one after
                   (Kojima et al. 2022)                                   "answer is"
manual CoT         two worked examples written for the course, then the   same
                   question (Wei et al. 2022)
program-of-thought "write a Python program that prints the answer"        what the program prints, run in the
                   (Chen et al. 2022)                                     sandbox
self-consistency   zero-shot CoT sampled at temperature 0.7, several      the majority of the samples' answers
                   times (Wang et al. 2023)
================== ====================================================== ====================================

:func:`run_reasoning` sends every prompt of the first four methods through the model as one
left-padded batch and the self-consistency samples as another; :func:`compare_with_direct` tests
each method against direct answers on the same problems with McNemar's exact test. Notebook 03
runs a few problems in QUICK mode; ``benchmarks/reasoning_bench.py`` records a run large enough
to say more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from course_utils.chat import Completion, generate_batch
from course_utils.icl.prompting import (
    ZERO_SHOT_COT,
    Example,
    extract_code,
    extract_number,
    few_shot_messages,
    majority_vote,
    run_program,
)
from course_utils.stats import mcnemar

__all__ = ["METHODS", "WORKED", "ReasoningRun", "compare_with_direct", "reasoning_prompt", "run_reasoning"]

WORKED = (  # written for the course; not in the task set
    Example("A library has 45 books and buys 3 boxes of 12 books. It lends out 20. How many books are on the shelves?",
            "It buys 3 x 12 = 36 books, so it has 45 + 36 = 81. After lending 20 it has 81 - 20 = 61. "
            "The answer is 61."),
    Example("Ana has 7 bags with 6 oranges each and eats 5 oranges. How many oranges are left?",
            "She has 7 x 6 = 42 oranges. After eating 5 she has 42 - 5 = 37. The answer is 37."),
)
GREEDY_METHODS = ("direct", "zero-shot CoT", "manual CoT", "program-of-thought")
METHODS = GREEDY_METHODS + ("self-consistency",)


def reasoning_prompt(method: str, question: str) -> str | list[dict[str, str]]:
    """The prompt (text or chat messages) one of the greedy methods sends for ``question``."""
    if method == "direct":
        return [{"role": "system", "content": "Reply with the final number only."},
                {"role": "user", "content": question}]
    if method in ("zero-shot CoT", "self-consistency"):
        return f"{question} {ZERO_SHOT_COT}"
    if method == "manual CoT":
        return few_shot_messages(WORKED, question)
    if method == "program-of-thought":
        return (f"{question}\nWrite a short Python program that computes the answer and prints it. "
                "Reply with one ```python code block.")
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _answer(method: str, text: str) -> float | None:
    if method != "program-of-thought":
        return extract_number(text)
    code = extract_code(text)
    return run_program(code)[0] if code else None


@dataclass
class ReasoningRun:
    """Each method's answer to each problem (None: no number found), and the true answers."""

    truth: list[float]
    answers: dict[str, list[float | None]]
    replies: dict[str, list[Completion]] = field(repr=False)  # the greedy methods' replies, per problem

    def right(self, method: str) -> list[bool]:
        return [a == t for a, t in zip(self.answers[method], self.truth, strict=True)]


def run_reasoning(model, tokenizer, problems: Sequence[dict], max_new_tokens: int, votes: int, seed: int = 0
                  ) -> ReasoningRun:
    """Ask every problem (``{"question", "answer"}``) the five ways; ``votes`` samples for self-consistency."""
    if not problems or votes < 1:
        raise ValueError("need at least one problem and one vote")
    batch = [reasoning_prompt(m, p["question"]) for m in GREEDY_METHODS for p in problems]
    flat = [c[0] for c in generate_batch(model, tokenizer, batch, max_new_tokens=max_new_tokens)]
    n = len(problems)
    replies = {m: flat[i * n:(i + 1) * n] for i, m in enumerate(GREEDY_METHODS)}
    answers = {m: [_answer(m, r.text) for r in replies[m]] for m in GREEDY_METHODS}
    samples = generate_batch(model, tokenizer, [reasoning_prompt("self-consistency", p["question"]) for p in problems],
                             n=votes, temperature=0.7, max_new_tokens=max_new_tokens, seed=seed)
    answers["self-consistency"] = [majority_vote([extract_number(c.text) for c in group]) for group in samples]
    return ReasoningRun([p["answer"] for p in problems], answers, replies)


def compare_with_direct(run: ReasoningRun, alpha: float = 0.05) -> list[dict[str, object]]:
    """For each method but direct: problems only it got right, only direct got right, McNemar's exact
    p-value and a verdict that can come out either way."""
    rows = []
    for method in METHODS[1:]:
        test = mcnemar(run.right("direct"), run.right(method))
        gained, lost, p = test["b_only"], test["a_only"], test["mcnemar_exact_p"]
        verdict = ("a tested gain" if gained > lost and p < alpha else
                   "a tested loss" if lost > gained and p < alpha else "no difference detected")
        rows.append({"method": method, "right only with it": gained, "right only direct": lost,
                     "McNemar exact p": round(p, 3), "verdict": verdict})
    return rows
