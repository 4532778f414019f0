"""Claims against a context: a labelled set, and two ways to score whether the context supports a claim.

The set (:func:`claim_set`) is generated from the course's prose passages with a seed, so every
label is exact by construction. For each passage, claims are its own sentences (*supported*:
verbatim, or cut to their main clause), sentences changed in one detail (*contradicted*: a number
changed, a name swapped for one from another passage, a negation inserted, a word swapped for its
opposite) and sentences the passage does not contain (*unsupported*: a true sentence with an
invented clause added, or a sentence from another passage).

Three support scores, higher meaning "supported":

* :func:`similarity_scores`: the highest cosine similarity between the claim's MiniLM embedding
  and any sentence of the context;
* :func:`judge_scores`: an LLM judge, the log-probability of "yes" minus that of "no" after the
  question "Does the context support the claim?", read from the next-token distribution;
* :func:`nli_scores`: an NLI cross-encoder's probability that the context entails the claim (a
  model of a few hundred million parameters trained for exactly this; needs its weights, so the
  notebook runs it where ``NLI_MODEL`` names a local folder or a cached Hub id).

:func:`score_report` turns scores into a detector of *unsupported or contradicted* claims: ROC AUC
with a bootstrap interval, precision, recall and F1 at a threshold chosen on a development half,
and the share caught per kind of claim (which is where each scorer fails).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Claim", "SimilaritySupport", "claim_set", "judge_scores", "nli_scores", "score_report", "similarity_scores",
           "support_by_similarity"]

KINDS = {"verbatim": "supported", "main_clause": "supported", "number": "contradicted", "entity": "contradicted",
         "negation": "contradicted", "antonym": "contradicted", "extra_clause": "unsupported",
         "other_passage": "unsupported"}
_ANTONYMS = {"warmer": "colder", "faster": "slower", "more": "less", "before": "after", "longer": "shorter",
             "higher": "lower", "larger": "smaller", "early": "late", "cold": "warm", "slowly": "quickly",
             "first": "last", "increase": "decrease", "easy": "hard", "rises": "falls", "rose": "fell"}
_AUXILIARIES = ("is", "are", "was", "were", "can", "will", "does", "do", "did", "has", "have", "should", "must")
_SUBORDINATE = ("which", "that", "who", "where", "when", "and", "but", "so", "because", "if", "although", "while",
                "as", "before", "after", "until", "since", "unless")
_EXTRA = [", which scientists first measured in 1887", ", according to a study of 4,000 households",
          ", and most experts now advise against it", ", a rule the government made law in 1952",
          ", which is why the practice is banned in Norway"]


@dataclass(frozen=True)
class Claim:
    context: str  # the passage the claim is checked against
    claim: str
    kind: str  # a key of KINDS
    label: str  # "supported", "contradicted" or "unsupported"


def _sentences(text: str) -> list[str]:  # the sentences long enough to make a claim of
    from course_utils.safety.injection import sentences

    return [s for s in sentences(text) if len(s.split()) >= 6]


def _main_clause(sentence: str) -> str | None:
    parts = [p.strip(" ,;") for p in re.split(r"[,;:]", sentence) if len(p.split()) >= 6
             and p.split()[0].lower() not in _SUBORDINATE]
    if not parts or parts[0] == sentence.rstrip("."):
        return None
    clause = max(parts, key=len)
    return clause[0].upper() + clause[1:].rstrip(".") + "."


def _number(sentence: str, rng: random.Random) -> str | None:
    numbers = list(re.finditer(r"\b\d+(?:\.\d+)?\b", sentence))
    words = {"two": "three", "three": "five", "four": "six", "five": "seven", "ten": "twelve", "one": "two",
             "twice": "three times", "half": "a third"}
    if numbers:
        m = rng.choice(numbers)
        value = float(m.group())
        changed = value * rng.choice([2, 3]) if value < 10 else value + rng.choice([-1, 1]) * max(1, round(value * 0.3))
        text = f"{changed:g}" if "." in m.group() else str(int(changed))
        return sentence[:m.start()] + text + sentence[m.end():]
    for word, other in words.items():
        if re.search(rf"\b{word}\b", sentence):
            return re.sub(rf"\b{word}\b", other, sentence, count=1)
    return None


def _entity(sentence: str, names: Sequence[str], rng: random.Random) -> str | None:
    found = [m for m in re.finditer(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]{2,}\b", sentence)]
    if not found:
        return None
    m = rng.choice(found)
    others = [n for n in names if n != m.group()]
    return sentence[:m.start()] + rng.choice(others) + sentence[m.end():] if others else None


def _negation(sentence: str) -> str | None:
    for aux in _AUXILIARIES:
        m = re.search(rf"\b{aux}\b(?! not)", sentence)
        if m:
            return sentence[:m.end()] + " not" + sentence[m.end():] if aux != "can" else \
                sentence[:m.start()] + "cannot" + sentence[m.end():]
    return None


def _antonym(sentence: str) -> str | None:
    for word, other in {**_ANTONYMS, **{v: k for k, v in _ANTONYMS.items()}}.items():
        if re.search(rf"\b{word}\b", sentence):
            return re.sub(rf"\b{word}\b", other, sentence, count=1)
    return None


def _make(kind: str, sentence: str, rng: random.Random, names: Sequence[str], others: Sequence[str]) -> str | None:
    """A claim of ``kind`` made from ``sentence`` (None where that change does not apply to it)."""
    if kind == "verbatim":
        return sentence
    if kind == "main_clause":
        return _main_clause(sentence)
    if kind == "number":
        return _number(sentence, rng)
    if kind == "entity":
        return _entity(sentence, names, rng)
    if kind == "negation":
        return _negation(sentence)
    if kind == "antonym":
        return _antonym(sentence)
    if kind == "extra_clause":
        return sentence.rstrip(".") + rng.choice(_EXTRA) + "."
    return rng.choice(others)


def claim_set(seed: int = 0, per_passage: int = 18) -> list[Claim]:
    """Up to ``per_passage`` labelled claims for each of the course's ten prose passages (with 18:
    six supported, eight contradicted, four unsupported), each kind drawn where the passage allows it."""
    from course_utils.tasks import load_task

    rng = random.Random(seed)
    passages = [p["text"] for p in load_task("passages")]
    names = sorted({m for p in passages for m in re.findall(r"(?<![.!?] )(?<!^)\b[A-Z][a-z]{2,}\b", p)})
    plan = (["verbatim", "main_clause"] * 3 + ["number", "entity", "negation", "antonym"] * 2
            + ["extra_clause", "other_passage"] * 2)[:per_passage]
    claims = []
    for index, passage in enumerate(passages):
        sentences = _sentences(passage)
        others = [s for j, p in enumerate(passages) if j != index for s in _sentences(p)]
        for kind in plan:
            for sentence in rng.sample(sentences, len(sentences)):  # the first sentence the change applies to
                claim = _make(kind, sentence, rng, names, others)
                if claim and claim != sentence or kind in ("verbatim", "other_passage"):
                    claims.append(Claim(passage, claim, kind, KINDS[kind]))
                    break
    return claims


def similarity_scores(claims: Sequence[Claim], embedder) -> np.ndarray:
    """(N,) highest cosine similarity between each claim and any sentence of its context."""
    return support_by_similarity([(c.context, c.claim) for c in claims], embedder)


def support_by_similarity(pairs: Sequence[tuple[str, str]], embedder) -> np.ndarray:
    """(N,) for each (context, claim) pair, the highest cosine similarity between the claim's MiniLM
    embedding and that of any sentence of the context."""
    return SimilaritySupport(embedder)(pairs)


class SimilaritySupport:
    """:func:`support_by_similarity` as a callable that embeds each context's sentences once and
    keeps them (a guardrail sees the same retrieved passages again and again)."""

    def __init__(self, embedder):
        self.embedder = embedder
        self._sentences: dict[str, np.ndarray] = {}

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        from course_utils.context.retrieval import unit_embeddings
        from course_utils.safety.injection import sentences

        for context in dict.fromkeys(context for context, _ in pairs):
            if context not in self._sentences:
                self._sentences[context] = unit_embeddings(self.embedder, sentences(context))
        claim_vectors = unit_embeddings(self.embedder, [claim for _, claim in pairs])
        return np.asarray([float((self._sentences[context] @ v).max())
                           for (context, _), v in zip(pairs, claim_vectors, strict=True)])


def judge_scores(claims: Sequence[Claim], model, tokenizer, batch_size: int = 8) -> np.ndarray:
    """(N,) log P("yes") - log P("no") for the judge's first answer token, after the chat-templated
    question whether ``context`` supports ``claim`` (a left-padded batch of ``batch_size``)."""
    import torch

    yes = tokenizer.encode("yes", add_special_tokens=False)[0]
    no = tokenizer.encode("no", add_special_tokens=False)[0]
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Context: {c.context}\n\nClaim: {c.claim}\n\nDoes the context support the "
                                     "claim? Answer yes or no."}], tokenize=False, add_generation_prompt=True)
        for c in claims]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                logits = model(**batch.to(model.device)).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            out += (logp[:, yes] - logp[:, no]).tolist()
    finally:
        tokenizer.padding_side = side
    return np.asarray(out)


def nli_scores(pairs: Sequence[tuple[str, str]], model, tokenizer, batch_size: int = 16) -> np.ndarray:
    """(N,) probability of *entailment* for each (context, claim) pair from an NLI cross-encoder
    (``load_model(name, head="sequence-classification")``): the pair read as premise and
    hypothesis, the label found by name in ``model.config.id2label``."""
    import torch

    labels = {str(name).lower(): int(i) for i, name in model.config.id2label.items()}
    if "entailment" not in labels:
        raise ValueError(f"{model.config.name_or_path or 'the model'} has no 'entailment' label "
                         f"({sorted(labels)}): not an NLI classifier")
    out: list[float] = []
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        encoded = tokenizer([c for c, _ in batch], [h for _, h in batch], return_tensors="pt", padding=True,
                            truncation="only_first", max_length=512)
        with torch.no_grad():
            logits = model(**encoded.to(model.device)).logits.float()
        out += torch.softmax(logits, dim=-1)[:, labels["entailment"]].tolist()
    return np.asarray(out)


def score_report(claims: Sequence[Claim], support: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """``support`` scores (higher: supported) as a detector of claims that are *not* supported:
    ROC AUC on all claims with a bootstrap interval; a threshold picked for the best F1 on a random
    half (the development half) and precision, recall and F1 at that threshold on the other half
    (precision and recall also as Rates with their intervals); and, on that other half, the share
    of each kind flagged."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    from course_utils.stats import auc_report, rate

    flagged_truth = np.asarray([c.label != "supported" for c in claims])
    risk = -np.asarray(support, dtype=float)
    auc = auc_report(flagged_truth, risk, seed=seed)
    order = np.random.default_rng(seed).permutation(len(claims))
    dev, test = order[: len(order) // 2], order[len(order) // 2:]
    candidates = np.unique(risk[dev])
    threshold = max(candidates, key=lambda t: f1_score(flagged_truth[dev], risk[dev] >= t, zero_division=0))
    predicted, truth = risk[test] >= threshold, flagged_truth[test]
    per_kind = {}
    for kind in KINDS:
        picked = [bool(p) for p, i in zip(predicted, test, strict=True) if claims[i].kind == kind]
        if picked:
            per_kind[kind] = rate(sum(picked), len(picked)).as_dict()
    return {"auc": auc,
            "threshold": float(-threshold), "test_n": len(test),
            "precision": round(float(precision_score(flagged_truth[test], predicted, zero_division=0)), 4),
            "recall": round(float(recall_score(flagged_truth[test], predicted, zero_division=0)), 4),
            "f1": round(float(f1_score(flagged_truth[test], predicted, zero_division=0)), 4),
            "precision_rate": _share(predicted & truth, predicted), "recall_rate": _share(predicted & truth, truth),
            "flagged_by_kind": per_kind}


def _share(hits: np.ndarray, of: np.ndarray) -> dict[str, Any] | None:
    """``hits.sum()`` out of ``of.sum()`` as a Rate dict (with its interval), or None when n is 0."""
    from course_utils.stats import rate

    return rate(int(hits.sum()), int(of.sum())).as_dict() if of.sum() else None
