"""Scoring model outputs."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["distinct_n"]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al., 2016): unique word n-grams / all word n-grams across ``texts``.

    1.0 means no n-gram repeats anywhere in the set; values near 0 mean the samples keep saying
    the same thing. Texts shorter than n words contribute nothing; an empty set scores 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
