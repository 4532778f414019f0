"""In-context learning from scratch: a copying task, its in-context score, and induction heads.

Training text is a stream of *episodes*: a random string, then the same string again. The first
copy cannot be predicted (every symbol is a fresh uniform draw); the second can, but only by
looking back into the context. Two rules work: "find where the current symbol occurred before and
predict the one that followed it" (content matching, what Olsson et al. 2022 call an *induction
head*), or, when every episode has the same length, "copy the symbol a fixed distance back"
(positional). Probing with episodes of a different length tells the two apart. Either way the
look-back shows up as a sudden drop of the loss on the second copy: the **in-context score**
(loss late in the context minus loss early) goes from about 0 to strongly negative.
"""

from __future__ import annotations

import random
import string

import torch
import torch.nn.functional as F

__all__ = ["ALPHABET", "episodes", "in_context_score", "induction_scores", "probe_batch"]

ALPHABET = string.ascii_letters[:32]  # 32 symbols: ln 32 = 3.47 nats for a blind guess


def episodes(count: int, lengths: tuple[int, int], seed: int, alphabet: str = ALPHABET) -> bytes:
    """``count`` episodes: a random string of a length drawn from ``lengths`` (inclusive), then the
    same string again."""
    low, high = lengths
    if not 2 <= low <= high or count < 1:
        raise ValueError(f"need 2 <= low <= high and count >= 1, got lengths={lengths}, count={count}")
    rng = random.Random(seed)
    parts = []
    for _ in range(count):
        first = "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))
        parts.append(first + first)
    return "".join(parts).encode()


def probe_batch(half: int, n: int = 64, seed: int = 12345, alphabet: str = ALPHABET) -> torch.Tensor:
    """(n, 2 * half) byte ids: held-out episodes of one length, each starting at position 0."""
    data = episodes(n, (half, half), seed, alphabet)
    return torch.tensor(list(data), dtype=torch.long).view(n, 2 * half)


@torch.no_grad()
def per_position_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """(T - 1,) mean next-token loss at each position of a (B, T) batch."""
    logits = model(batch[:, :-1])  # (B, T-1, V)
    loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (B, T-1)
    return loss.mean(0)


def in_context_score(model, batch: torch.Tensor) -> float:
    """Mean loss on the second copy minus mean loss on the first (nats; negative = uses the context).

    Positions predicting the first symbol of each copy are left out: neither can be inferred.
    """
    half = batch.shape[1] // 2
    loss = per_position_loss(model, batch)  # loss[t] is for predicting symbol t + 1
    early = loss[: half - 1].mean()  # predicting symbols 1 .. half-1 (first copy)
    late = loss[half:].mean()  # predicting symbols half+1 .. 2*half-1 (second copy)
    return float(late - early)


def induction_scores(model, batch: torch.Tensor, layer: int) -> torch.Tensor:
    """(H,) average attention each head of ``layer`` pays, from second-copy positions, to the
    *induction target*: the position right after the earlier occurrence of the current symbol
    (t - half + 1). A head that copies this way scores near 1; a head that looks elsewhere, near 0.
    """
    half = batch.shape[1] // 2
    weights = model.attention_weights(batch, layer)  # (B, H, T, T)
    queries = torch.arange(half, 2 * half - 1)
    return weights[:, :, queries, queries - half + 1].mean(dim=(0, 2))
