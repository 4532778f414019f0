"""Self-consistency as a hallucination signal: does a model that agrees with itself tend to be right?

Ask the same question ``k`` times with sampling; the share of samples that give the most common
answer is the *agreement*. A model that knows the answer tends to repeat it; one that is guessing
scatters. :func:`sample_answers` draws the samples with the course engine (``n=k`` completions per
prompt, forked from one prefill), :func:`agreement` reads off the majority and its share, and
:func:`calibration` bins agreement against the majority answer's accuracy, each bin's accuracy a
Rate with its interval; :func:`course_utils.stats.bootstrap_auc` then says how well
agreement separates right from wrong answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["agreement", "calibration", "sample_answers"]


def sample_answers(llm, prompts: Sequence[str], structured, k: int = 5, temperature: float = 1.0,
                   max_tokens: int = 8, seed: int = 0) -> list[list[str]]:
    """``k`` sampled completions (stripped text) of each chat-templated prompt, constrained by
    ``structured`` (a course ``StructuredOutputs``); request i is seeded with ``seed + i``."""
    from course_utils.serving import SamplingParams

    params = [SamplingParams(temperature=temperature, max_tokens=max_tokens, n=k, seed=seed + i,
                             structured_outputs=structured) for i in range(len(prompts))]
    return [[c.text.strip() for c in out.outputs] for out in llm.generate(list(prompts), params)]


def agreement(samples: Sequence[str]) -> tuple[str, float]:
    """The most common answer (the first to reach that count, on a tie) and the share of samples
    that gave it."""
    if not samples:
        raise ValueError("agreement needs at least one sample")
    counts = Counter(samples)
    top = max(counts.values())
    majority = next(s for s in samples if counts[s] == top)
    return majority, top / len(samples)


def calibration(agreements: Sequence[float], correct: Sequence[bool]) -> list[dict[str, Any]]:
    """One row per distinct agreement level (with k samples there are at most k): its n, and the
    accuracy of the majority answers at that level as a Rate dict."""
    from course_utils.stats import rate

    agreements, correct = np.asarray(agreements, dtype=float), np.asarray(correct, dtype=bool)
    rows = []
    for level in np.unique(agreements):
        picked = correct[agreements == level]
        rows.append({"agreement": float(level), "n": int(picked.size),
                     "accuracy": rate(int(picked.sum()), int(picked.size)).as_dict()})
    return rows
