"""Prompt-injection detection: rules, a small learned classifier, and their scores on held-out text.

* :func:`rule_hits`: hand-written patterns for the moves injections make (override the
  instructions, reveal the system prompt, adopt an unrestricted persona, fake a role marker,
  address "AI assistants" from inside a document), matched on :func:`normalise`d text so that
  leetspeak (``1gn0re``), spaced-out letters and unicode look-alikes do not slip past;
* :class:`InjectionClassifier`: a logistic regression on MiniLM sentence embeddings, trained on
  labelled units (an injection's instruction; benign sentences), scoring a text by its most
  suspicious sentence, so that one instruction hidden in a long retrieved passage still counts;
* :func:`evaluate_detectors`: detection rate per attack kind, false-positive rate on benign traffic
  and on look-alikes, and the classifier's ROC AUC with a bootstrap interval, on held-out families.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RULES", "InjectionClassifier", "evaluate_detectors", "normalise", "rule_hits", "sentences",
           "training_units"]

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACED = re.compile(r"\b(?:[a-z] ){2,}[a-z]\b")

_TARGET = r"(?:instructions?|rules|guidelines|polic(?:y|ies)|system (?:prompt|message)|(?:what )?you were told|prompt)"
RULES: dict[str, re.Pattern] = {
    "override": re.compile(rf"\b(?:ignore|disregard|forget|override|bypass|set aside|skip)\b[^.]{{0,40}}?"
                           rf"\b(?:all |the |your |any |my |previous |prior |earlier |above |every |these )*"
                           rf"(?:previous |prior |earlier |above |original )?{_TARGET}"),
    "everything_before": re.compile(r"\b(?:ignore|forget|disregard)\b[^.]{0,20}\b(?:everything|all)\b[^.]{0,30}"
                                    r"\b(?:before|above|told|so far)\b"),
    "no_longer_apply": re.compile(rf"{_TARGET}[^.]{{0,20}}\b(?:no longer apply|are revoked|is revoked|do not apply)"),
    "reveal": re.compile(r"\b(?:repeat|print|show|reveal|output|display)\b[^.]{0,40}\b(?:system prompt|initial "
                         r"instructions|hidden instructions|instructions verbatim|text above|word for word)"),
    "persona": re.compile(r"\b(?:you are now|pretend (?:you are|to be)|developer mode|jailbreak|dan\b|without any "
                          r"rules|no restrictions|no rules)"),
    "role_marker": re.compile(r"</?(?:system|user|assistant)>|#+ ?system|system override|\[admin\]|new instructions"),
    "addresses_ai": re.compile(r"\b(?:note to (?:ai|assistants)|if you are (?:a|an) (?:language model|ai)|automated "
                               r"readers|assistants? (?:that|who) reads?|ai assistants reading)"),
    "other_language": re.compile(r"\b(?:ignora|ignore[sz]?|ignoriere|olvida|oublie|vergiss)\b[^.]{0,30}"
                                 r"\b(?:instrucciones|instructions|anweisungen|regeln|reglas|règles)\b"),
}


def normalise(text: str) -> str:
    """Lower case, unicode folded (NFKC, accents kept), leetspeak digits read as letters, runs of
    single spaced-out letters joined ("i g n o r e" -> "ignore"), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=[a-z])[013457@$]|[013457@$](?=[a-z])", lambda m: m.group().translate(_LEET), text)
    text = _SPACED.sub(lambda m: m.group().replace(" ", ""), text)
    return re.sub(r"\s+", " ", text).strip()


def rule_hits(text: str) -> list[str]:
    """The names of the :data:`RULES` that match ``text`` (after :func:`normalise`)."""
    clean = normalise(text)
    return [name for name, pattern in RULES.items() if pattern.search(clean)]


def sentences(text: str) -> list[str]:
    """``text`` split after . ! ? and at line breaks (a passage's units for the classifier)."""
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s]


class InjectionClassifier:
    """Logistic regression on MiniLM embeddings of single instructions and sentences; a text's
    score is the highest probability among its sentences (and the text as a whole)."""

    def __init__(self, embedder, seed: int = 0):
        self.embedder, self.seed, self.model = embedder, seed, None

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        from course_utils.context.retrieval import unit_embeddings

        return unit_embeddings(self.embedder, list(texts))

    def fit(self, units: Sequence[str], labels: Sequence[bool]) -> InjectionClassifier:
        from sklearn.linear_model import LogisticRegression

        if len(set(labels)) < 2:
            raise ValueError("the classifier needs examples of both injections and benign text")
        self.model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=self.seed)
        self.model.fit(self._embed(units), np.asarray(labels, dtype=int))
        return self

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) probabilities that each text carries an injection."""
        if self.model is None:
            raise RuntimeError("fit the classifier before scoring")
        pieces = [[t, *sentences(t)] for t in texts]
        flat = [p for ps in pieces for p in ps]
        probs = self.model.predict_proba(self._embed(flat))[:, 1]
        out, i = [], 0
        for ps in pieces:
            out.append(float(probs[i:i + len(ps)].max()))
            i += len(ps)
        return np.asarray(out)


def training_units(examples) -> tuple[list[str], list[bool]]:
    """Units to learn from: each injection's instruction (its payload), and each sentence of the
    benign examples."""
    units, labels = [], []
    for example in examples:
        if example.injection:
            units.append(example.payload)
            labels.append(True)
        else:
            parts = sentences(example.text)
            units += parts
            labels += [False] * len(parts)
    return units, labels


def evaluate_detectors(held_out, classifier_scores: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Rules, the classifier at ``threshold``, and either, on ``held_out`` examples: the share
    flagged per kind (a detection rate for "direct" and "indirect", a false-positive rate for
    "benign" and "look-alike"), each a Rate as a dict; and the classifier's ROC AUC with its
    bootstrap interval."""
    from course_utils.stats import auc_report, rate

    flags = {"rules": [bool(rule_hits(e.text)) for e in held_out],
             "classifier": [bool(s >= threshold) for s in classifier_scores]}
    flags["either"] = [a or b for a, b in zip(flags["rules"], flags["classifier"], strict=True)]
    report: dict[str, Any] = {}
    for detector, flagged in flags.items():
        report[detector] = {}
        for kind in ("direct", "indirect", "benign", "look-alike"):
            picked = [f for f, e in zip(flagged, held_out, strict=True) if e.kind == kind]
            if picked:
                report[detector][kind] = rate(sum(picked), len(picked)).as_dict()
    report["classifier_auc"] = auc_report([e.injection for e in held_out], classifier_scores)
    return report
