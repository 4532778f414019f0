"""Prompting techniques as plain functions: few-shot, chain-of-thought, self-consistency, programs.

* Few-shot prompts are chat messages: each example is a user turn and an assistant turn, so the
  model's own chat template renders them the way it was trained to read conversations.
* Example selection is ``static`` (the same first k examples for every query), ``random``, or
  ``dynamic``: the k pool examples nearest the query in a sentence-embedding space (cosine
  similarity), the retrieval-based selection of Liu et al. (2022).
* Order and label noise are explicit knobs, so their effect can be measured.
* Chain-of-thought: zero-shot ("Let's think step by step", Kojima et al. 2022) or with worked
  examples; :func:`extract_number` takes the final answer out of the reasoning.
* Self-consistency (Wang et al. 2023): sample several reasoning paths, vote on the answers.
* Program-of-thought (Chen et al. 2022): the model writes Python, the sandbox runs it.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONTENT_FREE", "Example", "ZERO_SHOT_COT", "cached_embed", "contextual_calibration", "corrupt_labels",
    "extract_code", "extract_number", "few_shot_messages", "majority_vote", "order_examples", "run_program",
    "select_examples",
]

ZERO_SHOT_COT = "Let's think step by step."
CONTENT_FREE = "N/A"  # the content-free input of Zhao et al. (2021)


@dataclass(frozen=True)
class Example:
    """One demonstration: what the user says and what the assistant should answer."""

    input: str
    output: str


def few_shot_messages(examples: Sequence[Example], query: str, instruction: str | None = None) -> list[dict[str, str]]:
    """Chat messages: an optional system instruction, one user/assistant pair per example, the query."""
    messages = [{"role": "system", "content": instruction}] if instruction else []
    for ex in examples:
        messages += [{"role": "user", "content": ex.input}, {"role": "assistant", "content": ex.output}]
    return messages + [{"role": "user", "content": query}]


def cached_embed(embed: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray]:
    """``embed`` with a memory: each distinct text is embedded once, however many calls repeat it.

    Dynamic selection embeds the whole pool for every query; wrapped, the pool is embedded on
    the first query only. Returns (n, d) arrays like ``embed``.
    """
    cache: dict[str, np.ndarray] = {}

    def embed_once(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, np.asarray(embed(missing)), strict=True))
        return np.stack([cache[t] for t in texts])

    return embed_once


def select_examples(pool: Sequence[Example], query: str, k: int, strategy: str = "static",
                    embed: Callable[[list[str]], np.ndarray] | None = None, seed: int = 0) -> list[Example]:
    """k examples from ``pool`` for ``query``.

    ``"static"``: the first k of the pool, whatever the query. ``"random"``: k drawn with ``seed``.
    ``"dynamic"``: the k whose embeddings have the highest cosine similarity with the query's,
    most similar first; ``embed`` maps a list of texts to an (n, d) array (e.g. the
    ``encode`` method of :func:`course_utils.models.load_embedder`'s model).
    """
    if not 0 <= k <= len(pool):
        raise ValueError(f"k must be between 0 and the pool size {len(pool)}, got {k}")
    if strategy == "static":
        return list(pool[:k])
    if strategy == "random":
        return random.Random(seed).sample(list(pool), k)
    if strategy != "dynamic":
        raise ValueError(f"strategy must be 'static', 'random' or 'dynamic', got {strategy!r}")
    if embed is None:
        raise ValueError("dynamic selection needs embed=, a function from texts to an (n, d) array")
    if k == 0:
        return []
    vectors = np.asarray(embed([query] + [ex.input for ex in pool]), dtype=float)  # (1 + n, d)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    similarity = vectors[1:] @ vectors[0]  # (n,)
    best = np.argsort(-similarity, kind="stable")[:k]
    return [pool[i] for i in best]


def order_examples(examples: Sequence[Example], order: str = "as_given", seed: int = 0) -> list[Example]:
    """Reorder demonstrations: ``"as_given"``, ``"reversed"`` or ``"shuffled"`` (with ``seed``).

    With dynamically selected examples (most similar first), ``"reversed"`` puts the most similar
    example last, right before the query.
    """
    if order == "as_given":
        return list(examples)
    if order == "reversed":
        return list(examples)[::-1]
    if order == "shuffled":
        shuffled = list(examples)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    raise ValueError(f"order must be 'as_given', 'reversed' or 'shuffled', got {order!r}")


def corrupt_labels(examples: Sequence[Example], fraction: float, labels: Sequence[str], seed: int = 0) -> list[Example]:
    """A copy with ``round(fraction * len)`` outputs replaced by a different label from ``labels``.

    Min et al. (2022) found that wrong labels in demonstrations hurt far less than one would expect;
    this is the knob to check that on our own models.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if len(set(labels)) < 2:
        raise ValueError("need at least two distinct labels to corrupt one into another")
    rng = random.Random(seed)
    out = list(examples)
    for i in rng.sample(range(len(out)), round(fraction * len(out))):
        wrong = [label for label in labels if label != out[i].output]
        out[i] = Example(out[i].input, rng.choice(wrong))
    return out


def contextual_calibration(option_logprobs: Sequence[float], content_free_logprobs: Sequence[float]) -> list[float]:
    """Calibrated label probabilities (Zhao et al. 2021, "Calibrate before use").

    A few-shot prompt biases a model toward some labels (the last example's, the most frequent
    one) whatever the query. Score the options once for the real query and once for a
    content-free one (:data:`CONTENT_FREE`) under the *same* prompt; dividing each option's
    probability by its content-free probability and renormalising removes the prompt's own bias.
    Both arguments are log-probabilities of the same options; the result sums to 1.
    """
    if len(option_logprobs) != len(content_free_logprobs) or len(option_logprobs) == 0:
        raise ValueError("need one score per option in both lists, and at least one option")
    p = np.exp(np.asarray(option_logprobs, dtype=float) - np.max(option_logprobs))
    q = np.exp(np.asarray(content_free_logprobs, dtype=float) - np.max(content_free_logprobs))
    w = (p / p.sum()) / (q / q.sum())
    return (w / w.sum()).tolist()


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_number(text: str) -> float | None:
    """The final numeric answer in a model's text: after the last "answer is"/"####" if present,
    else the last number anywhere. Thousands separators are removed; None when there is no number.
    """
    tail = re.split(r"(?i)answer is|answer:|####", text)[-1]
    found = _NUMBER.findall(tail) or _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1].replace(",", "").rstrip("."))
    return int(value) if value.is_integer() else value


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most common non-None answer; ties go to the answer seen first. None if all are None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str) -> str | None:
    """The first fenced code block of a model's answer (``` or ```python), or None.

    A block whose closing fence is missing (the answer was cut by a length limit or a stop
    string) runs to the end of the text.
    """
    match = _CODE_BLOCK.search(text)
    return match.group(1) if match else None


def run_program(code: str, timeout_s: float = 5.0) -> tuple[float | None, str]:
    """Run model-written Python in the sandbox; returns (the last number it printed, a status).

    The status is ``"ok"``, ``"no output"``, or the error the program died with (a timeout, an
    exception, the memory cap): nothing the program does can crash the caller.
    """
    from course_utils.sandbox import run_python

    run = run_python(code, timeout_s)
    if not run.ok:
        return None, f"error: {run.error}"
    value = extract_number(run.stdout)
    return value, "ok" if value is not None else "no output"
