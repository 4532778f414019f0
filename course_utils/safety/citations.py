"""Cite-every-claim answers, measured: how often does a model leave a sentence uncited, or cite a
source that does not hold what it says?

The questions are the course's own chapter questions (:mod:`course_utils.context.corpus`), whose
*evidence* phrase marks the passage that answers each one. Four conditions, the model and
questions fixed:

* **retrieval** or not: the top ``k`` passages of the chapters (chapter 7's dense retrieval) are
  numbered [1] ... [k] in the prompt (grounded, closed domain), or the question comes alone (open
  domain: the model answers from what it learned);
* **instruction** or not: "end every sentence with the number of the passage it comes from".

Each answer is split into sentences (claims) and its bracketed numbers read off. A sentence is
*uncited* without any; a citation is *fabricated* when it names a passage that was not given (any
citation at all, without retrieval), *wrong* when it names a given passage that does not hold the
evidence, and *right* otherwise. :func:`verify` is the output gate: it keeps only sentences whose
every citation exists and whose cited passage supports the sentence by a support scorer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CONDITIONS", "CitedSentence", "citation_counts", "citation_messages", "measure_citations",
           "split_cited", "verify"]

CONDITIONS = (("retrieval", "instruction"), ("retrieval", "no instruction"), ("no retrieval", "instruction"),
              ("no retrieval", "no instruction"))
_CITATION = re.compile(r"\[(\d{1,2})\]")
_RULE = {True: "End every sentence with the number of the passage it comes from in square brackets, like [2].",
         False: "End every sentence with the number of its source in square brackets, like [2]."}


@dataclass(frozen=True)
class CitedSentence:
    text: str  # the sentence without its citations
    cited: tuple[int, ...]  # the passage numbers it cites, 1-based, in order


def split_cited(answer: str, min_words: int = 3) -> list[CitedSentence]:
    """The sentences of ``answer`` with at least ``min_words`` words, each with the numbers it
    cites; a citation written after the full stop ("... ready. [2]") belongs to the sentence before."""
    from course_utils.safety.injection import sentences

    out: list[CitedSentence] = []
    previous_kept = False
    for piece in sentences(answer):
        cited = tuple(int(n) for n in _CITATION.findall(piece))
        text = re.sub(r"\s+([.!?,;:])", r"\1", " ".join(_CITATION.sub(" ", piece).split()))
        if not text.strip(".!?,;: "):  # only citations: they belong to the sentence before
            if previous_kept and cited:
                out[-1] = CitedSentence(out[-1].text, out[-1].cited + cited)
            continue
        previous_kept = len(text.split()) >= min_words
        if previous_kept:
            out.append(CitedSentence(text, cited))
    return out


def citation_messages(question: str, passages: Sequence[str], instruction: bool) -> list[dict[str, str]]:
    """The chat request: the numbered passages (if any), the citation rule (if asked), the question."""
    parts = []
    if passages:
        parts.append("Passages:\n" + "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, 1)))
    if instruction:
        parts.append(_RULE[bool(passages)])
    parts.append(f"Question: {question}\nAnswer in one or two sentences.")
    return [{"role": "user", "content": "\n\n".join(parts)}]


def citation_counts(claims: Sequence[CitedSentence], given: int, gold: set[int]) -> dict[str, int]:
    """Counts over one answer: sentences, uncited sentences, citations, and citations that are
    fabricated (not among the ``given`` passages), wrong (a given passage outside ``gold``, the
    1-based numbers of those holding the evidence) or right."""
    citations = [n for c in claims for n in c.cited]
    fabricated = sum(not 1 <= n <= given for n in citations)
    right = sum(n in gold for n in citations)
    return {"sentences": len(claims), "uncited": sum(not c.cited for c in claims), "citations": len(citations),
            "fabricated": fabricated, "wrong": len(citations) - fabricated - right, "right": right}


def verify(claims: Sequence[CitedSentence], passages: Sequence[str],
           support: Callable[[list[tuple[str, str]]], np.ndarray], threshold: float) -> list[CitedSentence]:
    """The output gate: the cited sentences whose every citation names a given passage that
    supports them (``support`` scores (passage, sentence) pairs; at least ``threshold`` passes).
    Uncited sentences are dropped too: the rule was to cite every claim."""
    pairs, owners = [], []
    candidates = [c for c in claims if c.cited and all(1 <= n <= len(passages) for n in c.cited)]
    for i, claim in enumerate(candidates):
        for n in claim.cited:
            pairs.append((passages[n - 1], claim.text))
            owners.append(i)
    if not pairs:
        return []
    scores = np.asarray(support(pairs))
    ok = np.ones(len(candidates), dtype=bool)
    for owner, score in zip(owners, scores, strict=True):
        ok[owner] &= bool(score >= threshold)
    return [c for c, keep in zip(candidates, ok, strict=True) if keep]


def _rates(counts: Sequence[dict[str, int]]) -> dict[str, Any]:
    from course_utils.stats import rate

    total = {key: sum(c[key] for c in counts) for key in counts[0]} if counts else {}
    out: dict[str, Any] = {"answers": len(counts), **total}
    if total.get("sentences"):
        out["uncited_rate"] = rate(total["uncited"], total["sentences"]).as_dict()
    if total.get("citations"):
        for key in ("fabricated", "wrong", "right"):
            out[f"{key}_rate"] = rate(total[key], total["citations"]).as_dict()
        out["bad_citation_rate"] = rate(total["fabricated"] + total["wrong"], total["citations"]).as_dict()
    return out


def measure_citations(llm, questions: Sequence, passages_for: Callable[[str], list[str]],
                      support: Callable[[list[tuple[str, str]]], np.ndarray], threshold: float,
                      max_tokens: int = 60) -> dict[str, Any]:
    """Every question under the four :data:`CONDITIONS` (greedy answers from ``llm``, a course
    ``LLM``): per condition the counts and rates (uncited share of sentences; fabricated, wrong,
    right and bad shares of citations, each with its interval), and for the grounded, instructed
    answers the same after :func:`verify`, plus the share of sentences the gate removed.
    ``passages_for(question)`` returns the retrieved passages; ``questions`` have ``.question``
    and ``.evidence``."""
    from course_utils.context.corpus import gold_passages
    from course_utils.serving import SamplingParams
    from course_utils.stats import rate

    retrieved = [passages_for(q.question) for q in questions]
    golds = [{i + 1 for i in gold_passages(p, q.evidence)} for p, q in zip(retrieved, questions, strict=True)]
    requests, keys = [], []
    for retrieval, instruction in CONDITIONS:
        for i, q in enumerate(questions):
            given = retrieved[i] if retrieval == "retrieval" else []
            requests.append(citation_messages(q.question, given, instruction == "instruction"))
            keys.append((f"{retrieval}, {instruction}", i))
    outputs = llm.chat(requests, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    answers: dict[str, list[str]] = {}
    for (condition, _), out in zip(keys, outputs, strict=True):
        answers.setdefault(condition, []).append(out.outputs[0].text.strip())
    report: dict[str, Any] = {"questions": len(questions), "evidence_retrieved": rate(
        sum(bool(g) for g in golds), len(golds)).as_dict(), "conditions": {}, "examples": {}}
    for condition, texts in answers.items():
        grounded = condition.startswith("retrieval")
        claims = [split_cited(t) for t in texts]
        counts = [citation_counts(c, len(retrieved[i]) if grounded else 0, golds[i] if grounded else set())
                  for i, c in enumerate(claims)]
        report["conditions"][condition] = _rates(counts)
        report["examples"][condition] = texts[0]
        if condition == "retrieval, instruction":
            kept = [verify(c, retrieved[i], support, threshold) for i, c in enumerate(claims)]
            after = _rates([citation_counts(k, len(retrieved[i]), golds[i]) for i, k in enumerate(kept)])
            before_n = sum(len(c) for c in claims)
            if before_n:
                after["removed_rate"] = rate(before_n - sum(len(k) for k in kept), before_n).as_dict()
            report["conditions"]["retrieval, instruction, verified"] = after
    return report
