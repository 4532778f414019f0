"""A fault drill: one scripted fault schedule, replayed against each client strategy.

:func:`run_drill` sends questions at a fixed rate (open loop: request i leaves at i / rate_per_s
whether or not earlier ones came back, as users do), awaits every answer and summarises: the share
answered at each degradation level (with n and a 95% interval), p50/p95 latency, and provider
calls per question, counted at the fault proxies so that clients which retry on their own (the
openai client's ``max_retries``) are counted the same way as ours.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import numpy as np
import openai

from course_utils.apps.breaker import CircuitBreaker
from course_utils.apps.fallback import ESCALATION_TEXT, Answer, Level, ResilientClient
from course_utils.apps.faults import FaultPlan, FaultProxy, Outage
from course_utils.apps.providers import Provider
from course_utils.apps.retry import RetryPolicy
from course_utils.context.semantic_cache import SemanticCache
from course_utils.stats import rate
from course_utils.tasks import load_task

__all__ = ["CACHE_THRESHOLD", "STRATEGIES", "DrillResult", "drill_questions", "faq_cache", "run_drill",
           "standard_drill"]

STRATEGIES = ("no resilience", "openai max_retries=3", "retries only", "full stack")
CACHE_THRESHOLD = 0.8  # cosine similarity at which a drill question counts as a cached or FAQ one


@dataclass
class DrillResult:
    strategy: str
    levels: list[Level]  # one per question, in sending order
    latencies_s: list[float]
    provider_calls: int  # requests that reached the fault proxies
    faults: dict[str, int]  # what the proxies did with them ("none": forwarded)

    @property
    def n(self) -> int:
        return len(self.levels)

    def answered(self, worst: Level = Level.STATIC):
        """The share answered at ``worst`` or better (escalations are not answers), as a Rate."""
        return rate(sum(level <= worst for level in self.levels), self.n)

    def summary(self) -> dict[str, object]:
        counts = Counter(level.name.lower() for level in self.levels)
        return {
            "strategy": self.strategy, "n": self.n,
            "answered": self.answered().as_dict(),
            "answered_live": self.answered(Level.LIVE).as_dict(),
            "levels": {level.name.lower(): counts.get(level.name.lower(), 0) for level in Level},
            "latency_p50_s": round(float(np.percentile(self.latencies_s, 50)), 3),
            "latency_p95_s": round(float(np.percentile(self.latencies_s, 95)), 3),
            "calls_per_question": round(self.provider_calls / self.n, 3),
            "faults": self.faults,
        }


async def run_drill(strategy: str, ask: Callable[[str], Awaitable[Answer]], questions: Sequence[str],
                    rate_per_s: float, proxies: Sequence[FaultProxy]) -> DrillResult:
    """Send ``questions`` to ``ask`` at ``rate_per_s``; the proxies' clocks restart at the first send."""
    if rate_per_s <= 0 or not questions:
        raise ValueError("need a positive rate and at least one question")
    for proxy in proxies:
        proxy.restart_clock()
    start = time.monotonic()

    async def one(i: int, question: str) -> tuple[Level, float]:
        await asyncio.sleep(max(0.0, start + i / rate_per_s - time.monotonic()))
        sent = time.monotonic()
        answer = await ask(question)
        return answer.level, time.monotonic() - sent

    outcomes = await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    faults: Counter = Counter()
    for proxy in proxies:
        faults.update(proxy.counts())
    return DrillResult(strategy, [level for level, _ in outcomes], [latency for _, latency in outcomes],
                       sum(len(proxy.log) for proxy in proxies), dict(sorted(faults.items())))


def faq_cache(embedder, faq: Sequence[tuple[str, str]], threshold: float = CACHE_THRESHOLD) -> SemanticCache:
    """The static FAQ as a semantic cache: the last degradation level before escalation."""
    cache = SemanticCache(embedder, threshold)
    for question, answer in faq:
        cache.add(question, answer)
    return cache


def drill_questions(n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    """``n`` questions drawn from course_utils/data/cache_queries.jsonl (each FAQ item's question or
    its paraphrase, shuffled by ``seed``) and the static FAQ: the first half of the items' answers."""
    items = load_task("cache_queries")
    pool = [item[key] for item in items for key in ("question", "paraphrase")]
    rng = random.Random(seed)
    questions = [rng.choice(pool) for _ in range(n)]
    return questions, [(item["question"], item["answer"]) for item in items[: len(items) // 2]]


async def standard_drill(upstream: str, model: str, embedder, n: int = 200, rate_per_s: float = 8.0,
                         strategies: Sequence[str] = STRATEGIES, max_tokens: int = 8, seed: int = 0,
                         progress: Callable[[DrillResult], None] | None = None) -> list[DrillResult]:
    """The chapter's drill: provider A (the primary) is down for the middle half of the run and
    provider B answers 10% of its requests with 429 (Retry-After 0.5 s); both are fault proxies in
    front of the real server at ``upstream`` (its root URL). Each strategy gets fresh proxies with
    the same schedule and the same ``n`` questions at ``rate_per_s``.
    """
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategy {unknown}; choose from {', '.join(STRATEGIES)}")
    duration = n / rate_per_s
    plan_a = FaultPlan(outages=(Outage(0.25 * duration, 0.75 * duration, "unavailable"),), seed=seed)
    plan_b = FaultPlan({"rate_limit": 0.10}, seed=seed + 1, retry_after_s=0.5)
    questions, faq = drill_questions(n, seed)
    results = []
    for strategy in strategies:
        with ExitStack() as stack:
            a = stack.enter_context(FaultProxy(upstream, plan_a, "A"))
            b = stack.enter_context(FaultProxy(upstream, plan_b, "B"))
            providers = [Provider("A", a.url, model), Provider("B", b.url, model)]
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as http:
                ask = _strategy(strategy, providers, http, embedder, faq, max_tokens, seed)
                result = await run_drill(strategy, ask, questions, rate_per_s, [a, b])
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _strategy(name: str, providers: list[Provider], http: httpx.AsyncClient, embedder,
              faq: Sequence[tuple[str, str]], max_tokens: int, seed: int) -> Callable[[str], Awaitable[Answer]]:
    primary = providers[0]
    if name == "no resilience":
        return ResilientClient([primary], http, max_tokens=max_tokens).answer
    if name == "retries only":
        return ResilientClient([primary], http, RetryPolicy(), max_tokens=max_tokens, seed=seed).answer
    if name == "full stack":
        return ResilientClient(providers, http, RetryPolicy(max_attempts=3, base_s=0.5, deadline_s=10.0),
                               breakers=True, balance="p2c", semantic_cache=SemanticCache(embedder, CACHE_THRESHOLD),
                               static_answers=faq_cache(embedder, faq), max_tokens=max_tokens, seed=seed,
                               breaker_factory=lambda: CircuitBreaker(5, reset_timeout_s=2.0)).answer
    client = openai.AsyncOpenAI(base_url=primary.base_url, api_key="not-needed", max_retries=3,
                                timeout=primary.timeout_s, http_client=http)

    async def official(question: str) -> Answer:
        try:
            completion = await client.chat.completions.create(
                model=primary.model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
                temperature=0)
        except openai.OpenAIError as err:
            return Answer(ESCALATION_TEXT, Level.ESCALATION, errors=[str(err)])
        return Answer(completion.choices[0].message.content or "", Level.LIVE, primary.name)
    return official
