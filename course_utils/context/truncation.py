"""Cutting text to a number of tokens: keep the head, the tail, or both ends.

Token counts decide how much fits, but the cut is made on characters: a token boundary can fall
inside a multi-byte character (tiktoken's byte-level BPE splits many emoji and CJK characters
across tokens), and decoding half a character gives U+FFFD. So the longest prefix (or suffix) of
the *text* whose token count fits is found by binary search, and the joined result is counted
again, since tokens at a seam can merge differently than they did in the whole text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from course_utils.tokens import count_tokens

__all__ = ["longest_prefix", "longest_suffix", "truncate_tokens"]

Keep = Literal["head", "tail", "middle"]


def longest_prefix(text: str, budget: int, count: Callable[[str], int]) -> int:
    """Length in characters of the longest prefix of ``text`` with at most ``budget`` tokens."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def longest_suffix(text: str, budget: int, count: Callable[[str], int]) -> int:
    """Length in characters of the longest suffix of ``text`` with at most ``budget`` tokens."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count(text[len(text) - middle:]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def truncate_tokens(text: str, max_tokens: int, model: Any = "gpt-4o", keep: Keep = "head",
                    head_share: float = 0.5, marker: str = " … ") -> str:
    """``text`` cut to at most ``max_tokens`` tokens of ``model``, on character boundaries.

    keep: "head" keeps the beginning, "tail" the end, "middle" cuts the middle out and keeps both
        ends, ``head_share`` of the budget for the beginning, joined by ``marker`` (whose tokens
        count too). Text that already fits is returned unchanged.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if keep not in ("head", "tail", "middle"):
        raise ValueError(f"keep must be 'head', 'tail' or 'middle', got {keep!r}")
    if not 0 <= head_share <= 1:
        raise ValueError(f"head_share must be in [0, 1], got {head_share}")

    def count(piece: str) -> int:
        return count_tokens(piece, model)

    if count(text) <= max_tokens:
        return text
    if keep == "head":
        return text[:longest_prefix(text, max_tokens, count)]
    if keep == "tail":
        return text[len(text) - longest_suffix(text, max_tokens, count):]
    budget = max_tokens - count(marker)
    if budget < 0:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the marker {marker!r} ({count(marker)} tokens)")
    while True:
        head_budget = int(budget * head_share)
        head = text[:longest_prefix(text, head_budget, count)]
        rest = text[len(head):]
        tail = rest[len(rest) - longest_suffix(rest, budget - head_budget, count):] if budget > head_budget else ""
        result = head + marker + tail
        if count(result) <= max_tokens or budget == 0:
            return result if count(result) <= max_tokens else ""
        budget -= 1  # the seams merged into more tokens than the pieces had: give up one and retry
