"""The whole resilience stack, stepping down through degradation levels instead of failing.

For each question :class:`ResilientClient` tries the live providers (the balancer picks which to
try first, each behind its circuit breaker, each call retried by the retry policy), then steps
down: an earlier live answer to a similar question (the semantic cache), a static FAQ answer, and
last a hand-over to a person. Each step down is a level of :class:`Level`; an :class:`Answer`
says which level answered and how many provider calls it took.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from opentelemetry import trace

from course_utils.apps.balancer import Balancer
from course_utils.apps.breaker import BreakerState, CircuitBreaker
from course_utils.apps.providers import Provider, ProviderError, Rejected, Reply, chat
from course_utils.apps.retry import RetryPolicy, call_with_retries
from course_utils.apps.tracing import llm_span, mark_error, record_reply, step_span
from course_utils.context.semantic_cache import SemanticCache

__all__ = ["Answer", "BreakerOpen", "Level", "ResilientClient"]

ESCALATION_TEXT = "We could not answer this right now; a person will get back to you."


class Level(enum.IntEnum):
    LIVE = 0  # a provider answered now
    SEMANTIC_CACHE = 1  # an earlier live answer to a question that means the same
    STATIC = 2  # the published FAQ
    ESCALATION = 3  # no answer: handed to a person


@dataclass
class Answer:
    text: str
    level: Level
    provider: str | None = None
    calls: int = 0  # provider calls made for this question, retries included
    errors: list[str] = field(default_factory=list)
    reply: Reply | None = None


class BreakerOpen(Exception):
    """The provider's breaker refused the call: go to the next one at once."""


class ResilientClient:
    """Ask ``providers`` a question with the resilience features one turns on.

    ``retry=None`` makes one attempt per provider; ``breakers`` puts a CircuitBreaker (made by
    ``breaker_factory``) in front of each; ``balance`` picks the first provider to try (None: in
    the order given); ``semantic_cache`` stores live answers and serves them when every provider
    fails; ``static_answers`` is the FAQ of last resort. With one provider and everything off this
    is the plain client: one call, and an escalation when it fails.
    """

    def __init__(self, providers: Sequence[Provider], http: httpx.AsyncClient, retry: RetryPolicy | None = None,
                 breakers: bool = False, balance: str | None = None,
                 semantic_cache: SemanticCache | None = None, static_answers: SemanticCache | None = None,
                 max_tokens: int = 16, seed: int = 0,
                 breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker, tracer: trace.Tracer | None = None):
        if not providers:
            raise ValueError("need at least one provider")
        self.providers, self.http = list(providers), http
        self.retry = retry or RetryPolicy(max_attempts=1, deadline_s=None)
        self.breakers = {p.name: breaker_factory() for p in providers} if breakers else {}
        self.balancer = Balancer([p.name for p in providers], balance or "first", random.Random(seed))
        self.semantic_cache, self.static_answers = semantic_cache, static_answers
        self.max_tokens, self.rng = max_tokens, random.Random(seed + 1)
        self.tracer = tracer or trace.NoOpTracer()  # course_utils.apps.tracing.make_tracing() for real spans

    async def answer(self, question: str, system: str | None = None) -> Answer:
        """The best answer available now, to ``question`` under an optional ``system`` prompt; with a
        tracer, one trace: a span for the request, each model call, each retry's wait and each cache
        lookup (inside the caller's span when there is one)."""
        with step_span(self.tracer, "answer", "request", question=question) as span:
            result = await self._answer(question, system)
            span.set_attributes({"llm_course.level": result.level.name.lower(), "llm_course.calls": result.calls})
            return result

    async def _answer(self, question: str, system: str | None) -> Answer:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        result = Answer("", Level.ESCALATION)
        for provider in self._order():
            try:
                reply = await self._call(provider, messages, result)
            except (ProviderError, Rejected, BreakerOpen) as err:
                result.errors.append(str(err))
                continue
            if self.semantic_cache is not None:
                self.semantic_cache.add(question, reply.text)
            result.text, result.level, result.provider, result.reply = reply.text, Level.LIVE, provider.name, reply
            return result
        for level, store in ((Level.SEMANTIC_CACHE, self.semantic_cache), (Level.STATIC, self.static_answers)):
            if store is None:
                continue
            with step_span(self.tracer, f"{level.name.lower().replace('_', ' ')} lookup", "cache") as span:
                text = store.lookup(question)
                span.set_attribute("llm_course.hit", text is not None)
            if text is not None:
                result.text, result.level = text, level
                return result
        result.text = ESCALATION_TEXT
        return result

    def _order(self) -> list[Provider]:
        """Providers to try: the balancer's pick first, then the rest in the order given."""
        allowed = [p.name for p in self.providers
                   if p.name not in self.breakers or self.breakers[p.name].state is not BreakerState.OPEN]
        if not allowed:
            return list(self.providers)  # every breaker open: each will refuse at once, in order
        first = self.balancer.choose(allowed)
        return sorted(self.providers, key=lambda p: p.name != first)

    async def _call(self, provider: Provider, messages: list[dict[str, str]], result: Answer) -> Reply:
        breaker = self.breakers.get(provider.name)

        async def attempt() -> Reply:
            if breaker is not None and not breaker.allow():
                raise BreakerOpen(f"{provider.name}: circuit open")
            result.calls += 1
            with self.balancer.in_flight(provider.name), \
                    llm_span(self.tracer, provider.name, provider.model, messages, self.max_tokens, 0.0) as span:
                try:
                    reply = await chat(self.http, provider, messages, self.max_tokens)
                except ProviderError as err:
                    mark_error(span, err)
                    if breaker is not None:
                        breaker.record_failure()
                    raise
                except Rejected as err:  # the provider is up: it answered, only not this request
                    mark_error(span, err)
                    if breaker is not None:
                        breaker.record_success()
                    raise
                record_reply(span, reply.text, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason,
                             provider.price_as)
            if breaker is not None:
                breaker.record_success()
            return reply

        async def traced_sleep(seconds: float) -> None:
            with step_span(self.tracer, "retry backoff", "retry", **{"llm_course.delay_s": seconds}):
                await asyncio.sleep(seconds)

        return await call_with_retries(attempt, self.retry, self.rng, sleep=traced_sleep, clock=time.monotonic)
