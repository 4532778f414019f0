"""The article's exercise 1: what the sampling temperature does to summaries.

Each passage is summarised several times at each temperature. For every (passage, temperature)
the samples are compared with each other (ROUGE-L F1 from Google's ``rouge-score``, the
reimplementation of ROUGE-1.5.5, and cosine similarity of MiniLM embeddings), each summary is
checked against its passage with chapter 9's faithfulness check (the support of its weakest
sentence), and its length is counted. :func:`temperature_table` turns those into one row per
temperature with 95% bootstrap intervals over the passages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from course_utils.context.chunking import markdown_sections
from course_utils.context.corpus import chapter_text
from course_utils.context.retrieval import unit_embeddings
from course_utils.safety.claims import SimilaritySupport
from course_utils.safety.guardrails import claim_support
from course_utils.serving.sampling import SamplingParams
from course_utils.stats import mean_interval

__all__ = ["TEMPERATURES", "SUMMARY_PROMPT", "Summaries", "pairwise_cosine", "pairwise_rouge_l", "summarise",
           "summary_passages", "temperature_table"]

TEMPERATURES = (0.0, 0.5, 1.0)  # the article's three settings
SUMMARY_PROMPT = "Summarise the following text in two or three sentences.\n\n{passage}"
PASSAGE_CHAPTERS = ("01_transformer_architecture", "02_scaling_laws", "04_serving", "05_quantization",
                    "06_fine_tuning", "07_context_management")


def summary_passages(n: int = 5, min_words: int = 150, max_words: int = 500,
                     chapters: Sequence[str] = PASSAGE_CHAPTERS) -> list[str]:
    """``n`` passages of the course's own prose to summarise: the longest section of
    ``min_words``-``max_words`` words in each chapter, one per chapter, in chapter order."""
    passages = []
    for chapter in chapters:
        sections = [s.text.strip() for s in markdown_sections(chapter_text(chapter))
                    if min_words <= len(s.text.split()) <= max_words]
        if sections:
            passages.append(max(sections, key=lambda text: len(text.split())))
        if len(passages) == n:
            return passages
    raise ValueError(f"found {len(passages)} sections of {min_words}-{max_words} words in {', '.join(chapters)}; "
                     f"asked for {n}")


@dataclass(frozen=True)
class Summaries:
    """``texts[(passage index, temperature)]``: the samples, in sample order."""

    passages: list[str]
    temperatures: tuple[float, ...]
    texts: dict[tuple[int, float], list[str]]


def summarise(llm: Any, passages: list[str], temperatures: Sequence[float] = TEMPERATURES, samples: int = 3,
              max_tokens: int = 96, seed: int = 0) -> Summaries:
    """Every passage summarised ``samples`` times at each temperature, in one batch through ``llm``
    (a :class:`course_utils.serving.LLM`); each sample has its own seed, so the run repeats exactly."""
    if samples < 2:
        raise ValueError(f"comparing samples needs at least 2 per temperature, got {samples}")
    jobs = [(i, t, k) for i in range(len(passages)) for t in temperatures for k in range(samples)]
    conversations = [[{"role": "user", "content": SUMMARY_PROMPT.format(passage=passages[i])}] for i, _, _ in jobs]
    prompts = [llm.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
               for c in conversations]
    params = [SamplingParams(temperature=t, max_tokens=max_tokens, seed=seed + 1000 * i + k) for i, t, k in jobs]
    outputs = llm.generate(prompts, params)
    texts: dict[tuple[int, float], list[str]] = {}
    for (i, t, _), out in zip(jobs, outputs, strict=True):
        texts.setdefault((i, t), []).append(out.outputs[0].text.strip())
    return Summaries(list(passages), tuple(temperatures), texts)


def pairwise_rouge_l(texts: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over every pair of ``texts`` (1.0: the samples are the same text)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = list(combinations(texts, 2))
    if not pairs:
        raise ValueError("need at least two texts to compare")
    return float(np.mean([scorer.score(a, b)["rougeL"].fmeasure for a, b in pairs]))


def pairwise_cosine(texts: Sequence[str], embedder: Any) -> float:
    """Mean cosine similarity of MiniLM embeddings over every pair of ``texts``."""
    vectors = unit_embeddings(embedder, list(texts))  # (N, 384), unit length
    similarity = vectors @ vectors.T
    upper = np.triu_indices(len(texts), k=1)
    if not len(upper[0]):
        raise ValueError("need at least two texts to compare")
    return float(similarity[upper].mean())


def _interval(values: Sequence[float], seed: int) -> tuple[float, float, float]:
    """(mean, low, high): :func:`course_utils.stats.mean_interval` as the table's triple."""
    estimate = mean_interval(values, seed=seed)
    return estimate.value, estimate.low, estimate.high


def temperature_table(summaries: Summaries, embedder: Any,
                      support: Callable[[list[tuple[str, str]]], np.ndarray] | None = None,
                      seed: int = 0) -> list[dict[str, Any]]:
    """One row per temperature: ROUGE-L and cosine agreement between samples, the weakest-sentence
    faithfulness of each summary and its length in words, each the mean over passages with a 95%
    bootstrap interval (``n`` passages; within a passage the samples are averaged first)."""
    support = support or SimilaritySupport(embedder)
    rows = []
    for t in summaries.temperatures:
        rouge, cosine, faithful, words, empty = [], [], [], [], 0
        for i, passage in enumerate(summaries.passages):
            texts = summaries.texts[(i, t)]
            rouge.append(pairwise_rouge_l(texts))
            cosine.append(pairwise_cosine(texts, embedder))
            weakest = []
            for text in texts:
                scores, _ = claim_support(text, passage, support)
                if scores is None:
                    empty += 1
                else:
                    weakest.append(float(scores.min()))
            faithful.append(float(np.mean(weakest)) if weakest else 0.0)
            words.append(float(np.mean([len(text.split()) for text in texts])))
        rows.append({"temperature": t, "n": len(summaries.passages), "rouge_l": _interval(rouge, seed),
                     "cosine": _interval(cosine, seed), "faithfulness": _interval(faithful, seed),
                     "words": _interval(words, seed), "unscorable": empty})
    return rows
