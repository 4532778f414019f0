"""Finding the passages a question needs: BM25, dense embeddings, and both fused by rank.

* :class:`BM25` is Okapi BM25 as Lucene scores it, written out so it can be read: a query term
  found in a passage scores ``idf · tf / (tf + k1·(1 - b + b·len/avg_len))`` with
  ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``. (The original formula multiplies by k1 + 1;
  Lucene dropped that constant, since it changes no ranking.) The tests check it against ``bm25s``.
* :class:`DenseIndex` embeds passages with the embedded all-MiniLM-L6-v2 and ranks them by cosine
  similarity with the embedded question.
* :func:`reciprocal_rank_fusion` (Cormack et al., 2009) merges rankings by summing
  ``1 / (k + rank)`` over the rankings each passage appears in; ``k = 60`` damps the difference
  between first and second place, so agreement between rankers counts more than either's top.
* :func:`rerank` reorders a short list of candidates by asking a language model whether each
  passage answers the question (log P("Yes") - log P("No") of its next token).
* :func:`recall_at_k` and :func:`mean_reciprocal_rank` score rankings against gold passages.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np

__all__ = ["BM25", "DenseIndex", "cached_embedder", "mean_reciprocal_rank", "recall_at_k", "reciprocal_rank_fusion",
           "rerank", "unit_embeddings", "words"]

RRF_K = 60


def words(text: str) -> list[str]:
    """Lower-cased words of two or more letters or digits: the tokens BM25 matches on."""
    return re.findall(r"\b\w\w+\b", text.lower())


class BM25:
    """Okapi BM25 over ``passages`` (Lucene's idf, k1 = 1.5, b = 0.75 by default)."""

    def __init__(self, passages: Sequence[str], k1: float = 1.5, b: float = 0.75):
        if not passages:
            raise ValueError("BM25 needs at least one passage")
        self.k1, self.b = k1, b
        self.documents = [Counter(words(p)) for p in passages]
        self.lengths = np.array([sum(d.values()) for d in self.documents], dtype=np.float64)
        self.average_length = float(self.lengths.mean()) or 1.0
        document_frequency = Counter(term for d in self.documents for term in d)
        n = len(passages)
        self.idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in document_frequency.items()}

    def scores(self, query: str) -> np.ndarray:
        """(n_passages,) the BM25 score of every passage for ``query``."""
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.average_length)
        total = np.zeros(len(self.documents))
        for term in words(query):
            if term not in self.idf:
                continue
            tf = np.array([d[term] for d in self.documents], dtype=np.float64)
            total += self.idf[term] * tf / (tf + norm)
        return total

    def rank(self, query: str, k: int | None = None) -> list[int]:
        """Passage indices, best first (ties by index); passages sharing no word with the query are left out."""
        scores = self.scores(query)
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        return order[:k]


def cached_embedder(embedder) -> SimpleNamespace:
    """``embedder`` with a memory: its ``encode`` embeds each distinct text once per process, however
    often it is asked (sentences shared by two chunkings, a cache queried at many thresholds)."""
    from course_utils.icl.prompting import cached_embed

    return SimpleNamespace(encode=cached_embed(embedder.encode))


def unit_embeddings(embedder, texts: Sequence[str]) -> np.ndarray:
    """(n, d) embeddings of ``texts`` scaled to unit length, so that dot products are cosine similarities."""
    vectors = np.asarray(embedder.encode(list(texts)), dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class DenseIndex:
    """Passages embedded once; questions ranked against them by cosine similarity."""

    def __init__(self, passages: Sequence[str], embedder):
        if not passages:
            raise ValueError("a dense index needs at least one passage")
        self.embedder = embedder
        self.vectors = unit_embeddings(embedder, passages)  # (n, d)

    def scores(self, query: str) -> np.ndarray:
        """(n_passages,) cosine similarity of every passage with ``query``."""
        return self.vectors @ unit_embeddings(self.embedder, [query])[0]

    def rank(self, query: str, k: int | None = None) -> list[int]:
        return [int(i) for i in np.argsort(-self.scores(query), kind="stable")][:k]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """One ranking from several: each item scores Σ 1 / (k + rank), rank counted from 1; ties by first appearance."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda item: -scores[item])


RERANK_PROMPT = "Question: {question}\n\nPassage: {passage}\n\nDoes the passage answer the question? Answer Yes or No."


def rerank(question: str, passages: Sequence[str], candidates: Sequence[int], model, tokenizer) -> list[int]:
    """``candidates`` (passage indices) reordered by the model's judgement of relevance, most relevant first.

    One prompt per candidate, the question first so that the prompts share their beginning and
    :func:`~course_utils.evaluation.option_logprobs_batch` computes it once.
    """
    from course_utils.evaluation import option_logprobs_batch

    if not candidates:
        return []
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": RERANK_PROMPT.format(question=question, passage=passages[i])}],
        tokenize=False, add_generation_prompt=True) for i in candidates]
    scores = [yes - no for yes, no in option_logprobs_batch(model, tokenizer, prompts, ["Yes", "No"])]
    order = sorted(range(len(candidates)), key=lambda j: -scores[j])
    return [candidates[j] for j in order]


def recall_at_k(ranking: Sequence[int], gold: set[int], k: int) -> float:
    """Share of the gold passages found in the first ``k`` of ``ranking``."""
    if not gold:
        raise ValueError("recall needs at least one gold passage")
    return len(set(ranking[:k]) & gold) / len(gold)


def mean_reciprocal_rank(rankings: Sequence[Sequence[int]], golds: Sequence[set[int]]) -> float:
    """Mean over questions of 1 / (rank of the first gold passage), 0 where none is ranked."""
    if len(rankings) != len(golds) or not golds:
        raise ValueError(f"need one gold set per ranking, got {len(golds)} for {len(rankings)}")
    total = 0.0
    for ranking, gold in zip(rankings, golds, strict=True):
        total += next((1 / rank for rank, item in enumerate(ranking, 1) if item in gold), 0.0)
    return total / len(golds)
