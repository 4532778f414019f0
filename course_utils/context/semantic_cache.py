"""A semantic cache: answer a question again without the model when a stored one means the same.

Questions are embedded (the embedded all-MiniLM-L6-v2). A lookup returns the stored answer of the
most similar stored question if their cosine similarity reaches ``threshold``, else nothing. The
threshold trades two errors: too low and a *near-miss* ("flights to Paris on Monday" against
"... on Tuesday") gets the wrong stored answer (a false hit); too high and a *paraphrase* misses
the answer it could have had. :func:`cache_rates` measures both on labelled pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from course_utils.context.retrieval import unit_embeddings

__all__ = ["CacheRates", "SemanticCache", "cache_rates"]


class SemanticCache:
    """Stored (question, answer) pairs, looked up by embedding similarity."""

    def __init__(self, embedder, threshold: float = 0.9):
        if not -1 <= threshold <= 1:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        self.embedder, self.threshold = embedder, threshold
        self.questions: list[str] = []
        self.answers: list[str] = []
        self._vectors = np.zeros((0, 0))

    def add(self, question: str, answer: str) -> None:
        vector = unit_embeddings(self.embedder, [question])
        self._vectors = vector if not self.questions else np.vstack([self._vectors, vector])
        self.questions.append(question)
        self.answers.append(answer)

    def remove(self, indices: Iterable[int]) -> None:
        """Forget the stored pairs at ``indices`` (an answer whose facts changed)."""
        drop = set(indices)
        keep = [i for i in range(len(self.questions)) if i not in drop]
        self.questions = [self.questions[i] for i in keep]
        self.answers = [self.answers[i] for i in keep]
        self._vectors = self._vectors[keep] if keep else np.zeros((0, 0))

    def similarity(self, question: str) -> tuple[int, float]:
        """(index, cosine similarity) of the stored question closest to ``question``; (-1, -1.0) when empty."""
        if not self.questions:
            return -1, -1.0
        scores = self._vectors @ unit_embeddings(self.embedder, [question])[0]
        best = int(np.argmax(scores))
        return best, float(scores[best])

    def lookup(self, question: str) -> str | None:
        """The stored answer of the closest stored question if it is similar enough, else None."""
        index, score = self.similarity(question)
        return self.answers[index] if index >= 0 and score >= self.threshold else None


@dataclass(frozen=True)
class CacheRates:
    hit_rate: float  # share of paraphrases that found their stored question's answer
    false_hit_rate: float  # share of near-misses that were wrongly answered from the cache


def cache_rates(cache: SemanticCache, paraphrases: Sequence[tuple[str, int]],
                near_misses: Sequence[str]) -> CacheRates:
    """Rates at the cache's threshold. ``paraphrases``: (question, index of the stored question it
    restates); ``near_misses``: questions that resemble a stored one but need another answer."""
    if not paraphrases or not near_misses:
        raise ValueError("need at least one paraphrase and one near-miss to measure both rates")
    hits = 0
    for question, expected in paraphrases:
        index, score = cache.similarity(question)
        hits += index == expected and score >= cache.threshold
    false_hits = sum(cache.lookup(q) is not None for q in near_misses)
    return CacheRates(hits / len(paraphrases), false_hits / len(near_misses))
