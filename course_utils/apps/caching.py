"""An exact-match cache in front of the semantic cache, with expiry and invalidation by tag.

A lookup first tries the *normalised* question text (case, accents, punctuation and spacing do not
matter; a templated query hits reliably and costs one dictionary lookup), then the semantic cache
(chapter 7: a paraphrase hits, at the price of an embedding and the risk of a near-miss). Every
answer is stored with the tags of the facts it rests on (``"price:basic"``); when a fact changes,
``invalidate(tag)`` removes every answer resting on it from both layers, so none is served stale.
Entries also expire after ``ttl_s``.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from course_utils.context.semantic_cache import SemanticCache

__all__ = ["AnswerCache", "CacheHit", "normalise"]

_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The exact-match key: NFKC, accents dropped, case folded, punctuation removed, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", bare.casefold())).strip()


@dataclass(frozen=True)
class CacheHit:
    answer: str
    layer: str  # "exact" or "semantic"


@dataclass
class _Entry:
    question: str
    answer: str
    tags: frozenset[str]
    stored_at: float


class AnswerCache:
    """Exact layer, then (when given) a semantic layer; both tag-invalidated and TTL-expired."""

    def __init__(self, semantic: SemanticCache | None = None, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.semantic, self.ttl_s, self.clock = semantic, ttl_s, clock
        self._exact: dict[str, _Entry] = {}
        self._semantic_entries: list[_Entry] = []  # parallel to semantic.questions
        self.hits = {"exact": 0, "semantic": 0}
        self.misses = 0

    def put(self, question: str, answer: str, tags: Iterable[str] = ()) -> None:
        entry = _Entry(question, answer, frozenset(tags), self.clock())
        self._exact[normalise(question)] = entry
        if self.semantic is not None:
            self.semantic.add(question, answer)
            self._semantic_entries.append(entry)

    def lookup(self, question: str) -> CacheHit | None:
        self._expire()
        entry = self._exact.get(normalise(question))
        if entry is not None:
            self.hits["exact"] += 1
            return CacheHit(entry.answer, "exact")
        if self.semantic is not None:
            answer = self.semantic.lookup(question)
            if answer is not None:
                self.hits["semantic"] += 1
                return CacheHit(answer, "semantic")
        self.misses += 1
        return None

    def invalidate(self, tag: str) -> int:
        """Drop every answer that rests on ``tag``; returns how many entries went (both layers)."""
        return self._drop(lambda entry: tag in entry.tags)

    def _expire(self) -> None:
        now = self.clock()
        self._drop(lambda entry: now - entry.stored_at >= self.ttl_s)

    def _drop(self, stale: Callable[[_Entry], bool]) -> int:
        keys = [key for key, entry in self._exact.items() if stale(entry)]
        for key in keys:
            del self._exact[key]
        indices = [i for i, entry in enumerate(self._semantic_entries) if stale(entry)]
        if indices and self.semantic is not None:
            self.semantic.remove(indices)
            dropped = set(indices)
            self._semantic_entries = [e for i, e in enumerate(self._semantic_entries) if i not in dropped]
        return len(keys) + len(indices)
