"""Guardrails around chapter 8's client: an input layer, an output layer, and every decision traced.

:class:`GuardedApp` wraps a :class:`course_utils.apps.fallback.ResilientClient`. For each request:

1. **input layer** (before any model call), in the order the application lists its checks:

   * ``injection``: the injection rules, and the classifier when the application gives one, on the
     user's text (a hit blocks the request) and on each retrieved passage (a passage with a hit is
     dropped: an indirect injection must not reach the prompt);
   * ``topic``: a :class:`TopicFilter` of what the application is for (off-topic requests are blocked);
   * ``pii``: personal data in the user's text is redacted (or, if the application says so, blocks);

2. the model call, with the application's system prompt and the passages that survived;
3. **output layer**, on what the model said: ``pii`` (redacted), ``prompt_leak`` (a fuzzy match of
   the system prompt: the reply is replaced by the fallback), ``refusal`` (flagged, not changed: a
   monitor counts it), ``schema`` (an invalid document is replaced by the fallback) and
   ``faithfulness`` (each sentence of the reply scored against the passages by a support scorer;
   any sentence under the threshold replaces the reply by the fallback; a refusal makes no claim).

Every check runs inside its own span (component ``guardrail``) under the request's span, with its
layer, check, verdict and score as attributes, so the third layer, **monitoring**, is built from
the traces alone (:mod:`course_utils.safety.monitoring`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry import trace

from course_utils.apps.fallback import Answer, Level, ResilientClient
from course_utils.apps.tracing import step_span
from course_utils.safety.injection import rule_hits, sentences
from course_utils.safety.output_checks import is_refusal, prompt_leak_score, schema_error
from course_utils.safety.pii import find_pii, redact

__all__ = ["GUARD", "INPUT_CHECKS", "OUTPUT_CHECKS", "Decision", "GuardConfig", "GuardedApp", "GuardedReply",
           "TopicFilter", "claim_support"]

INPUT_CHECKS = ("injection", "topic", "pii")
OUTPUT_CHECKS = ("pii", "prompt_leak", "refusal", "schema", "faithfulness")
GUARD = "llm_course.guard"  # the prefix of a guardrail span's attributes: .layer, .check, .verdict, .score
BLOCKED_TEXT = "I can't help with that request here."
FALLBACK_TEXT = "I could not give an answer I can stand behind; please rephrase, or ask a person."
_STOPS = {"block", "fallback"}  # verdicts that replace what the user gets


@dataclass(frozen=True)
class Decision:
    layer: str  # "input" or "output"
    check: str  # a name from INPUT_CHECKS or OUTPUT_CHECKS
    verdict: str  # "pass", "skip", "redact", "drop", "flag", "block" or "fallback"
    score: float | None = None
    detail: str = ""


@dataclass
class GuardedReply:
    text: str  # what the user gets
    decisions: list[Decision]
    raw: str | None = None  # what the model said; None when the input layer stopped the request
    answer: Answer | None = None

    @property
    def stopped_by(self) -> str | None:
        """``"layer:check"`` of the first decision that blocked the request or replaced the reply."""
        return next((f"{d.layer}:{d.check}" for d in self.decisions if d.verdict in _STOPS), None)

    def verdict(self, check: str, layer: str = "output") -> str | None:
        return next((d.verdict for d in self.decisions if d.check == check and d.layer == layer), None)


def claim_support(reply: str, context: str, support: Callable[[list[tuple[str, str]]], np.ndarray],
                  min_words: int = 4) -> tuple[np.ndarray | None, str]:
    """The support score of each claim of ``reply`` (its sentences of at least ``min_words``
    words) against ``context``, shape (n_claims,); or None and the reason there is nothing to score
    ("no context", "a refusal", "no claims")."""
    claims = [s for s in sentences(reply) if len(s.split()) >= min_words]
    why_not = "no context" if not context else "a refusal" if is_refusal(reply) else "no claims" if not claims else ""
    if why_not:
        return None, why_not
    return np.asarray(support([(context, claim) for claim in claims])), ""


class TopicFilter:
    """What an application is for, by example: a text's score is its highest cosine similarity to
    the allowed examples (MiniLM); below ``threshold`` it is off topic."""

    def __init__(self, embedder, allowed_examples: Sequence[str], threshold: float):
        from course_utils.context.retrieval import unit_embeddings

        if not allowed_examples:
            raise ValueError("a topic filter needs at least one allowed example")
        self.embedder, self.threshold = embedder, threshold
        self._allowed = unit_embeddings(embedder, list(allowed_examples))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) highest similarity of each text to an allowed example."""
        from course_utils.context.retrieval import unit_embeddings

        return (unit_embeddings(self.embedder, list(texts)) @ self._allowed.T).max(axis=1)


@dataclass(frozen=True)
class GuardConfig:
    """What one application turns on. ``support([(context, claim), ...]) -> (N,) scores`` is the
    faithfulness scorer, higher meaning better supported (e.g. ``claims.support_by_similarity``
    with its embedder bound by ``functools.partial``)."""

    system_prompt: str = ""
    input_checks: tuple[str, ...] = ("injection", "pii")
    output_checks: tuple[str, ...] = ("pii", "prompt_leak", "refusal")
    injection_classifier: Any = None  # a fitted InjectionClassifier; the rules run either way
    injection_threshold: float = 0.5
    topic_filter: TopicFilter | None = None
    pii_action: str = "redact"  # or "block"
    leak_threshold: float = 0.8
    schema: dict[str, Any] | None = None
    support: Callable[[list[tuple[str, str]]], np.ndarray] | None = None
    support_threshold: float = 0.5
    min_claim_words: int = 4
    blocked_text: str = BLOCKED_TEXT
    fallback_text: str = FALLBACK_TEXT

    def __post_init__(self):
        for given, known, layer in ((self.input_checks, INPUT_CHECKS, "input"),
                                    (self.output_checks, OUTPUT_CHECKS, "output")):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(f"unknown {layer} check(s) {unknown}; choose from {', '.join(known)}")
        needs = {"topic": ("topic_filter", self.topic_filter), "schema": ("schema", self.schema),
                 "faithfulness": ("support", self.support)}
        for check, (name, value) in needs.items():
            if check in (*self.input_checks, *self.output_checks) and value is None:
                raise ValueError(f"the {check!r} check needs GuardConfig.{name}")
        if self.pii_action not in ("redact", "block"):
            raise ValueError(f"pii_action is 'redact' or 'block', got {self.pii_action!r}")


class GuardedApp:
    """``await GuardedApp(client, config, tracer).ask(text, passages)`` -> :class:`GuardedReply`."""

    def __init__(self, client: ResilientClient, config: GuardConfig, tracer: trace.Tracer | None = None):
        self.client, self.config = client, config
        self.tracer = tracer or client.tracer
        self._passage_scores: dict[str, float] = {}  # each retrieved passage is scanned once, as at ingestion

    async def ask(self, text: str, passages: Sequence[str] = (), labels: dict[str, str] | None = None
                  ) -> GuardedReply:
        """The guarded answer to ``text`` given retrieved ``passages``; ``labels`` (e.g. the
        traffic's topic) are recorded on the request's span as ``llm_course.guard.label.<key>``."""
        attributes = {f"{GUARD}.label.{k}": v for k, v in (labels or {}).items()}
        with step_span(self.tracer, "guarded request", "guarded", **attributes) as span:
            reply = await self._ask(text, list(passages))
            span.set_attributes({f"{GUARD}.stopped_by": reply.stopped_by or "",
                                 f"{GUARD}.refusal": reply.verdict("refusal") == "flag",
                                 f"{GUARD}.level": reply.answer.level.name.lower() if reply.answer else "none"})
            return reply

    async def _ask(self, text: str, passages: list[str]) -> GuardedReply:
        decisions: list[Decision] = []
        for check in self.config.input_checks:
            decision, text, passages = self._traced("input", check, self._input, text, passages)
            decisions.append(decision)
            if decision.verdict == "block":
                return GuardedReply(self.config.blocked_text, decisions)
        prompt = text if not passages else (
            "Answer from these passages.\n\n" + "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
            + f"\n\nQuestion: {text}")
        answer = await self.client.answer(prompt, system=self.config.system_prompt or None)
        if answer.level is Level.ESCALATION:
            return GuardedReply(answer.text, decisions, None, answer)
        said = reply = answer.text
        context = "\n".join(passages)
        for check in self.config.output_checks:
            decision, reply = self._traced("output", check, self._output, reply, context)
            decisions.append(decision)
            if decision.verdict == "fallback":
                return GuardedReply(self.config.fallback_text, decisions, said, answer)
        return GuardedReply(reply, decisions, said, answer)

    def _traced(self, layer: str, check: str, run: Callable[..., tuple], *args: Any) -> tuple:
        """``run(check, *args)`` inside the check's span; its first result is the Decision."""
        with step_span(self.tracer, f"guard {layer}.{check}", "guardrail",
                       **{f"{GUARD}.layer": layer, f"{GUARD}.check": check}) as span:
            result = run(check, *args)
            decision: Decision = result[0]
            span.set_attribute(f"{GUARD}.verdict", decision.verdict)
            if decision.score is not None:
                span.set_attribute(f"{GUARD}.score", decision.score)
            if decision.detail:
                span.set_attribute(f"{GUARD}.detail", decision.detail)
            return result

    def _injection_scores(self, text: str, passages: list[str]) -> list[float]:
        """For the user's text, then each passage: 1.0 on a rule hit, else the classifier's
        probability (0.0 without one); a passage seen before keeps its score."""
        config = self.config
        fresh = [p for p in dict.fromkeys(passages) if p not in self._passage_scores]
        texts = [text, *fresh]
        learned = [0.0] * len(texts)
        if config.injection_classifier is not None:
            learned = config.injection_classifier.score(texts)
        scores = [1.0 if rule_hits(t) else float(p) for t, p in zip(texts, learned, strict=True)]
        self._passage_scores.update(zip(fresh, scores[1:], strict=True))
        return [scores[0], *(self._passage_scores[p] for p in passages)]

    def _input(self, check: str, text: str, passages: list[str]) -> tuple[Decision, str, list[str]]:
        config = self.config
        if check == "injection":
            scores = self._injection_scores(text, passages)
            if scores[0] >= config.injection_threshold:
                return Decision("input", check, "block", scores[0], ",".join(rule_hits(text)) or "classifier"), \
                    text, passages
            kept = [p for p, s in zip(passages, scores[1:], strict=True) if s < config.injection_threshold]
            if len(kept) < len(passages):
                return Decision("input", check, "drop", max(scores[1:]),
                                f"{len(passages) - len(kept)} passage(s) dropped"), text, kept
            return Decision("input", check, "pass", max(scores)), text, passages
        if check == "topic":
            score = float(config.topic_filter.score([text])[0])
            verdict = "block" if score < config.topic_filter.threshold else "pass"
            return Decision("input", check, verdict, score), text, passages
        found = find_pii(text)  # check == "pii"
        if not found:
            return Decision("input", check, "pass"), text, passages
        kinds = ",".join(sorted({s.kind for s in found}))
        if config.pii_action == "block":
            return Decision("input", check, "block", detail=kinds), text, passages
        return Decision("input", check, "redact", detail=kinds), redact(text), passages

    def _output(self, check: str, reply: str, context: str) -> tuple[Decision, str]:
        config = self.config
        if check == "pii":
            found = find_pii(reply)
            if not found:
                return Decision("output", check, "pass"), reply
            return Decision("output", check, "redact", detail=",".join(sorted({s.kind for s in found}))), redact(reply)
        if check == "prompt_leak":
            if not config.system_prompt:
                return Decision("output", check, "skip", detail="no system prompt"), reply
            score = prompt_leak_score(config.system_prompt, reply)
            return Decision("output", check, "fallback" if score >= config.leak_threshold else "pass", score), reply
        if check == "refusal":
            return Decision("output", check, "flag" if is_refusal(reply) else "pass"), reply
        if check == "schema":
            error = schema_error(reply, config.schema)
            return Decision("output", check, "fallback" if error else "pass", detail=error or ""), reply
        scores, why_not = claim_support(reply, context, config.support, config.min_claim_words)  # faithfulness
        if scores is None:  # nothing to hold against the passages
            return Decision("output", check, "skip", detail=why_not), reply
        weakest = float(scores.min())
        verdict = "fallback" if weakest < config.support_threshold else "pass"
        return Decision("output", check, verdict, weakest, f"{int((scores < config.support_threshold).sum())}"
                        f"/{len(scores)} claims under the threshold"), reply
