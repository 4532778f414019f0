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

__all__ = ["ALPHABET", "COPYING_SCORE", "INDUCTION_SCORE", "copying_probes", "episodes", "in_context_score",
           "induction_scores", "learned_rule", "probe_batch"]

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


def copying_probes(model, probe: torch.Tensor, other_length: torch.Tensor) -> dict:
    """What a model trained on the copying task has learned, from two probe batches (:func:`probe_batch`):
    the in-context score on ``probe`` (episodes of the trained length) and on ``other_length``
    (another length), and the best head's induction score on ``probe`` with its (layer, head)."""
    heads = torch.stack([induction_scores(model, probe, layer) for layer in range(model.config.n_layers)])  # (L, H)
    layer, head = divmod(int(heads.argmax()), heads.shape[1])
    return {"score": in_context_score(model, probe), "other length": in_context_score(model, other_length),
            "induction": float(heads.max()), "head": (layer, head)}


COPYING_SCORE = -1.0  # nats: an in-context score below this means the model copies (perfect is -ln 64 = -4.16)
INDUCTION_SCORE = 0.5  # a head that puts most of its attention on the induction target


def learned_rule(probes: dict) -> str:
    """What :func:`copying_probes` says the model learned:

    * "not copying yet": the in-context score on the trained length is above COPYING_SCORE;
    * "positional": it loses more than half of that gain on episodes of another length (it copies
      from the fixed distance its training episodes had);
    * "induction head": it keeps the gain and a head attends mostly to the induction target
      (finds the earlier twin, wherever it is, and reads the symbol after it);
    * "context statistics": it keeps the gain but no head looks at the target, so it uses *which*
      symbols the context holds (the second copy draws from them), not where they are.
    """
    if probes["score"] > COPYING_SCORE:
        return "not copying yet"
    if probes["other length"] > probes["score"] / 2:
        return "positional"
    return "induction head" if probes["induction"] >= INDUCTION_SCORE else "context statistics"
