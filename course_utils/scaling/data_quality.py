"""Pre-training data hygiene: near-duplicate removal, quality heuristics, contamination checks.

* Near duplicates: documents become sets of word n-grams ("shingles"); MinHash signatures
  (datasketch) estimate the Jaccard similarity of two sets, and locality-sensitive hashing finds the
  candidate pairs without comparing every pair. Candidates are then confirmed with the exact Jaccard.
* Quality: a handful of the document-level heuristics of Rae et al. (2021, "Gopher", appendix A),
  each a number with a threshold, so a learner can see *why* a document is dropped.
* Contamination: the share of a held-out document's word n-grams (13 words, as in GPT-3's
  contamination study) that also occur in the training text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

__all__ = [
    "Contamination", "NearDuplicate", "QualityRule", "GOPHER_RULES", "contamination", "deduplicate", "jaccard",
    "keep_one_per_group", "minhash", "near_duplicates", "quality_failures", "quality_signals", "shingles", "words",
]

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased runs of letters, digits and underscores."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[str]:
    """The set of word n-grams of ``text`` (a text shorter than n words is one shingle)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    tokens = words(text)
    if len(tokens) <= n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def minhash(items: set[str], num_perm: int = 128, seed: int = 1) -> MinHash:
    """A datasketch MinHash signature of a set of strings."""
    signature = MinHash(num_perm=num_perm, seed=seed)
    signature.update_batch([s.encode("utf-8") for s in items])
    return signature


@dataclass(frozen=True)
class NearDuplicate:
    first: int  # index of the earlier document
    second: int
    estimated_jaccard: float  # from the MinHash signatures
    jaccard: float  # exact, on the shingle sets


def near_duplicates(docs: Sequence[str], threshold: float = 0.8, n: int = 5,
                    num_perm: int = 128) -> list[NearDuplicate]:
    """Pairs of documents whose shingle sets have Jaccard similarity >= ``threshold``.

    LSH proposes candidate pairs from the signatures (it can miss a pair near the threshold, by
    design); each candidate is then checked with the exact Jaccard, so no false positive survives.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    sets = [shingles(doc, n) for doc in docs]
    signatures = [minhash(s, num_perm) for s in sets]
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs = []
    for i, signature in enumerate(signatures):
        if not sets[i]:
            continue
        for j in sorted(index.query(signature)):
            exact = jaccard(sets[i], sets[j])
            if exact >= threshold:
                pairs.append(NearDuplicate(j, i, signature.jaccard(signatures[j]), exact))
        index.insert(i, signature)
    return pairs


def deduplicate(docs: Sequence[str], threshold: float = 0.8, n: int = 5, num_perm: int = 128) -> list[int]:
    """Indices of the documents to keep: the first of every group of near duplicates."""
    return keep_one_per_group(len(docs), near_duplicates(docs, threshold, n, num_perm))


def keep_one_per_group(n_docs: int, pairs: Sequence[NearDuplicate]) -> list[int]:
    """Indices to keep when ``pairs`` link near duplicates: the lowest index of every connected group."""
    parent = list(range(n_docs))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        a, b = root(pair.first), root(pair.second)
        parent[max(a, b)] = min(a, b)
    return [i for i in range(n_docs) if root(i) == i]


# --- quality heuristics -------------------------------------------------------------------------

_STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}


def quality_signals(text: str) -> dict[str, float]:
    """Document-level numbers the Gopher filters threshold (word counts use whitespace splitting)."""
    tokens = text.split()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    n_words = len(tokens)
    chars = sum(len(t) for t in tokens)
    bigrams = Counter(zip(tokens[:-1], tokens[1:], strict=True))
    top_bigram_chars = 0
    if bigrams:
        (w1, w2), count = bigrams.most_common(1)[0]
        top_bigram_chars = count * (len(w1) + len(w2))
    return {
        "words": n_words,
        "mean_word_length": chars / n_words if n_words else 0.0,
        "symbol_to_word_ratio": (text.count("#") + text.count("...") + text.count("…")) / max(1, n_words),
        "alphabetic_word_fraction": sum(any(c.isalpha() for c in t) for t in tokens) / max(1, n_words),
        "stop_words": sum(t.lower().strip(".,;:!?\"'") in _STOP_WORDS for t in tokens),
        "duplicate_line_fraction": 1 - len(set(lines)) / len(lines) if lines else 0.0,
        "top_bigram_char_fraction": top_bigram_chars / chars if chars else 0.0,
    }


@dataclass(frozen=True)
class QualityRule:
    signal: str
    low: float = float("-inf")
    high: float = float("inf")

    def passes(self, value: float) -> bool:
        return self.low <= value <= self.high


GOPHER_RULES = (
    QualityRule("words", low=50, high=100_000),
    QualityRule("mean_word_length", low=3, high=10),
    QualityRule("symbol_to_word_ratio", high=0.1),
    QualityRule("alphabetic_word_fraction", low=0.8),
    QualityRule("stop_words", low=2),
    QualityRule("duplicate_line_fraction", high=0.3),
    QualityRule("top_bigram_char_fraction", high=0.2),
)


def quality_failures(text: str, rules: Sequence[QualityRule] = GOPHER_RULES) -> list[str]:
    """The signals of ``text`` outside their rule's range (an empty list means the text is kept)."""
    signals = quality_signals(text)
    unknown = [r.signal for r in rules if r.signal not in signals]
    if unknown:
        raise ValueError(f"unknown quality signals {unknown}; known: {sorted(signals)}")
    return [r.signal for r in rules if not r.passes(signals[r.signal])]


# --- contamination -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Contamination:
    overlap: list[float]  # per held-out document: share of its n-grams that occur in the training text
    threshold: float

    @property
    def flagged(self) -> list[int]:
        """Held-out documents whose overlap exceeds the threshold."""
        return [i for i, o in enumerate(self.overlap) if o > self.threshold]


def contamination(train_docs: Sequence[str], held_out_docs: Sequence[str], n: int = 13,
                  threshold: float = 0.5) -> Contamination:
    """How much of each held-out document already appears, as word n-grams, in the training docs."""
    seen: set[str] = set()
    for doc in train_docs:
        seen |= shingles(doc, n)
    overlap = []
    for doc in held_out_docs:
        grams = shingles(doc, n)
        overlap.append(len(grams & seen) / len(grams) if grams else 0.0)
    return Contamination(overlap, threshold)
