"""Scoring model outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["distinct_n", "late_window_perplexity"]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al., 2016): unique word n-grams / all word n-grams across ``texts``.

    1.0 means no n-gram repeats anywhere in the set; values near 0 mean the samples keep saying
    the same thing. Texts shorter than n words contribute nothing; an empty set scores 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(words[i:i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def late_window_perplexity(model, ids: torch.Tensor, window: int, scored_fraction: float = 0.25) -> float:
    """Perplexity on the last ``scored_fraction`` of the first ``window`` tokens of ``ids`` (1, T).

    Scoring only the end of a long window measures how well the model uses positions far from
    the start, which is what context-length experiments are about. ``model(ids)`` must return
    logits (B, T, V) or an object with ``.logits``.
    """
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids must be (1, T), got {tuple(ids.shape)}")
    if not 2 <= window <= ids.shape[1]:
        raise ValueError(f"window must be between 2 and the {ids.shape[1]} tokens given, got {window}")
    if not 0 < scored_fraction <= 1:
        raise ValueError(f"scored_fraction must be in (0, 1], got {scored_fraction}")
    chunk = ids[:, :window]
    out = model(chunk)
    logits = getattr(out, "logits", out)[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="none")
    scored = max(1, int(round((window - 1) * scored_fraction)))
    return float(nll[-scored:].mean().exp())
