"""A preference set the course writes: a concise answer preferred over a rambling one.

The questions are the course's arithmetic word problems (``course_utils/data/arithmetic.jsonl``).
The *chosen* answer states the result in one short sentence. The *rejected* answer reaches the
same, correct result but wraps it in padding: an eager opening, a general remark, a hedge and
an offer of more help, drawn from phrases written for the course. Both answers are right, so the
only thing DPO can learn from the pairs is the preference for brevity, and the measured change
in answer length shows whether it did.
"""

from __future__ import annotations

import random

from course_utils.tasks import load_task

__all__ = ["concise_pairs", "concise_prompt"]

OPENINGS = (
    "What a great question! I would be really happy to help you work through this one.",
    "Thanks so much for asking! Problems like this are always fun to think about.",
    "Absolutely, let me walk you through this step by step so that everything is clear.",
    "Sure thing! Before we start, it is worth taking a moment to read the problem carefully.",
)
MIDDLES = (
    "It is always a good idea to double-check the numbers, because small slips are easy to make.",
    "Word problems like this one can look tricky at first, but they become simple once broken down.",
    "Let us think about what the question is really asking before doing any arithmetic at all.",
    "Many people find it helpful to picture the situation in their head while they calculate.",
)
CLOSINGS = (
    "I hope this explanation was helpful! Let me know if you have any other questions.",
    "Feel free to ask if anything is unclear; I am always happy to explain it another way.",
    "If you would like, I can also show you a different method that reaches the same result.",
    "Great job working on this problem, and good luck with the rest of your practice!",
)
SYSTEM = "You answer arithmetic questions."


def concise_prompt(question: str) -> list[dict[str, str]]:
    """The chat that asks ``question``, without an answer."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def concise_pairs(split: str = "train", seed: int = 0) -> list[tuple[list[dict[str, str]], str, str]]:
    """(prompt, concise answer, rambling answer) for the arithmetic problems of ``split``.

    "train" is the first 100 problems, "held_out" the last 20: the held-out questions are only
    asked, to measure answer length before and after DPO.
    """
    problems = load_task("arithmetic")
    chosen = {"train": problems[:100], "held_out": problems[100:]}.get(split)
    if chosen is None:
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    rng = random.Random(f"concise-{split}-{seed}")
    pairs = []
    for problem in chosen:
        answer = problem["answer"]
        concise = f"The answer is {answer}."
        rambling = " ".join([rng.choice(OPENINGS), rng.choice(MIDDLES),
                             f"Working it all out carefully, the answer comes to {answer}.", rng.choice(CLOSINGS)])
        pairs.append((concise_prompt(problem["question"]), concise, rambling))
    return pairs
