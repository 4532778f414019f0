"""The fault proxy in front of a real course server: each fault as a client sees it, the schedule's
determinism, the official client's own retries, and the resilience stack stepping down its levels."""

import asyncio
import time

import httpx
import openai
import pytest

from course_utils.apps.breaker import BreakerState, CircuitBreaker
from course_utils.apps.caching import AnswerCache, normalise
from course_utils.apps.fallback import ESCALATION_TEXT, Level, ResilientClient
from course_utils.apps.faults import FAULT_KINDS, REFUSAL_TEXT, FaultPlan, FaultProxy, Outage
from course_utils.apps.providers import Provider, ProviderError, Rejected, Reply, chat
from course_utils.apps.retry import RetryPolicy
from course_utils.context.semantic_cache import SemanticCache
from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving import LLM
from course_utils.serving.server import background_server
from course_utils.stats import rate

QUESTION = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def upstream():
    llm = LLM(DEFAULT_MODEL, num_blocks=64, block_size=16, max_model_len=256, max_num_seqs=16)
    with background_server(llm.engine, DEFAULT_MODEL) as url:
        yield url.removesuffix("/v1")


@pytest.fixture(scope="module")
def embedder():
    from course_utils.models import load_embedder

    return load_embedder()


def provider(proxy: FaultProxy, timeout_s: float = 20.0, name: str | None = None) -> Provider:
    return Provider(name or proxy.name, proxy.url, DEFAULT_MODEL, timeout_s)


async def one_call(proxy: FaultProxy, timeout_s: float = 20.0):
    async with httpx.AsyncClient() as http:
        try:
            return await chat(http, provider(proxy, timeout_s), QUESTION, max_tokens=3)
        except ProviderError as err:
            return err


@pytest.mark.parametrize("fault, kind, status", [
    ("rate_limit", "rate_limit", 429), ("server_error", "server_error", 500), ("unavailable", "server_error", 503),
    ("reset", "connection", None), ("timeout", "timeout", None), ("truncated", "truncated", None),
    ("malformed", "malformed", 200)])
def test_each_injected_fault_reaches_the_client_as_its_kind(upstream, fault, kind, status):
    with FaultProxy(upstream, FaultPlan({fault: 1.0}, retry_after_s=0.25, hang_s=30)) as proxy:
        started = time.monotonic()
        outcome = asyncio.run(one_call(proxy, timeout_s=1.0))
        elapsed = time.monotonic() - started
    assert isinstance(outcome, ProviderError), outcome
    assert outcome.kind == kind and (status is None or outcome.status == status), outcome
    if fault == "rate_limit":
        assert outcome.retry_after_s == 0.25  # from retry-after-ms, as OpenAI sends it
    if fault == "timeout":
        assert 0.9 < elapsed < 5  # the client's own timeout ended it, not the proxy's 30 s hang
    assert [record.fault for record in proxy.log] == [fault]


def test_an_injected_refusal_is_a_well_formed_answer_that_declines(upstream):
    from course_utils.safety.output_checks import is_refusal

    with FaultProxy(upstream, FaultPlan({"refusal": 0.5}, seed=1)) as proxy:
        outcomes = [asyncio.run(one_call(proxy)) for _ in range(12)]
    refused = [o.text == REFUSAL_TEXT for o in outcomes]
    assert all(isinstance(o, Reply) for o in outcomes)  # a behaviour fault: the transport is fine
    assert refused == [record.fault == "refusal" for record in proxy.log] and 0 < sum(refused) < 12
    assert all(is_refusal(o.text) == r for o, r in zip(outcomes, refused, strict=True))


def test_untouched_and_slow_requests_reach_the_real_model(upstream):
    with FaultProxy(upstream, FaultPlan()) as clean:
        reply = asyncio.run(one_call(clean))
    assert isinstance(reply, Reply) and reply.completion_tokens == 3 and reply.text
    with FaultProxy(upstream, FaultPlan({"slow_first_byte": 1.0}, slow_s=1.0)) as slow:
        started = time.monotonic()
        slow_reply = asyncio.run(one_call(slow))
        assert time.monotonic() - started >= 1.0
    assert slow_reply.text == reply.text  # greedy: the same answer, one second later
    with FaultProxy(upstream, FaultPlan()) as clean:  # a 4xx from the server is passed through, not retried
        async def bad_model():
            async with httpx.AsyncClient() as http:
                return await chat(http, Provider("p", clean.url, "no-such-model"), QUESTION)
        with pytest.raises(Rejected) as err:
            asyncio.run(bad_model())
        assert err.value.status in (400, 404)


def test_a_truncated_stream_is_an_error_for_the_official_client_not_a_short_answer(upstream):
    with FaultProxy(upstream, FaultPlan({"truncated": 1.0})) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="x", max_retries=0)
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=8, stream=True):
                pass


def test_the_schedule_is_deterministic_by_seed_and_draws_at_the_configured_rates():
    plan = FaultPlan({"rate_limit": 0.10, "server_error": 0.05}, outages=(Outage(5.0, 7.0, "reset"),), seed=3)
    draws = [plan.fault_for(i, 1.0) for i in range(4000)]
    assert draws == [FaultPlan(plan.rates, plan.outages, seed=3).fault_for(i, 1.0) for i in range(4000)]
    assert draws != [FaultPlan(plan.rates, seed=4).fault_for(i, 1.0) for i in range(4000)]
    for kind, share in plan.rates.items():
        measured = rate(draws.count(kind), len(draws))
        assert measured.low <= share <= measured.high, (kind, measured)
    assert {plan.fault_for(i, 6.0) for i in range(100)} == {"reset"}  # inside the outage window
    assert plan.fault_for(0, 7.0) != "reset" or plan.fault_for(0, 1.0) == "reset"
    for bad in ({"gremlins": 0.1}, {"rate_limit": 1.5}, {"rate_limit": 0.6, "reset": 0.6}):
        with pytest.raises(ValueError):
            FaultPlan(bad)
    assert set(FAULT_KINDS) >= {"rate_limit", "reset", "timeout", "truncated", "malformed"}


def test_the_official_clients_max_retries_honours_retry_after_ms(upstream):
    with FaultProxy(upstream, FaultPlan({"rate_limit": 1.0}, retry_after_s=0.4)) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="x", max_retries=2)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=2)
        elapsed = time.monotonic() - started
    assert len(proxy.log) == 3  # the first call and its two retries
    assert elapsed >= 2 * 0.4  # it waited at least what the server asked, twice


def test_the_stack_fails_over_opens_the_breaker_and_steps_down_its_levels(upstream, embedder):
    # A is down for the whole test; B answers. Everything runs against the real model.
    with FaultProxy(upstream, FaultPlan(outages=(Outage(0, 3600, "unavailable"),)), "A") as a, \
            FaultProxy(upstream, FaultPlan(), "B") as b:
        static = SemanticCache(embedder, 0.8)
        static.add("What are your opening hours?", "9:00 to 17:00.")

        async def scenario():
            async with httpx.AsyncClient() as http:
                client = ResilientClient([provider(a), provider(b)], http,
                                         RetryPolicy(max_attempts=2, base_s=0.01, deadline_s=5.0), breakers=True,
                                         semantic_cache=SemanticCache(embedder, 0.85), static_answers=static,
                                         max_tokens=4, breaker_factory=lambda: CircuitBreaker(3, 60.0))
                first = [await client.answer(f"Say the number {i}.") for i in range(4)]
                state_after = client.breakers["A"].state
                calls_to_a = len(a.log)
                b.plan = FaultPlan(outages=(Outage(0, 3600, "reset"),))  # now B goes down too
                cached = await client.answer("Say the number 0.")
                static_hit = await client.answer("What are the opening hours?")
                nothing = await client.answer("Write a poem about rivers.")
                return first, state_after, calls_to_a, cached, static_hit, nothing

        first, state_after, calls_to_a, cached, static_hit, nothing = asyncio.run(scenario())
    assert all(answer.level is Level.LIVE and answer.provider == "B" for answer in first)
    assert state_after is BreakerState.OPEN and calls_to_a == 3  # 3 failures opened it; then A is skipped
    assert [answer.calls for answer in first] == [3, 2, 1, 1]  # A twice + B; A once (opens) + B; B; B
    assert cached.level is Level.SEMANTIC_CACHE and cached.text == first[0].text
    assert static_hit.level is Level.STATIC and static_hit.text == "9:00 to 17:00."
    assert nothing.level is Level.ESCALATION and nothing.text == ESCALATION_TEXT


def test_exact_then_semantic_cache_with_ttl_and_no_stale_answer_after_a_fact_changes(embedder):
    now = {"t": 0.0}
    cache = AnswerCache(SemanticCache(embedder, 0.85), ttl_s=100.0, clock=lambda: now["t"])
    prices = {"basic": "$10"}
    cache.put("How much is the Basic plan?", f"The Basic plan costs {prices['basic']} a month.", tags=["price:basic"])
    cache.put("What are your opening hours?", "9:00 to 17:00.", tags=["hours"])
    assert normalise("  HOW much is the BASIC plan??  ") == normalise("How much is the Basic plan?")
    assert cache.lookup("how much is the basic plan").layer == "exact"
    hit = cache.lookup("What does the Basic plan cost?")
    assert hit is not None and hit.layer == "semantic" and "$10" in hit.answer
    prices["basic"] = "$12"  # the fact changes: everything resting on it goes, from both layers
    assert cache.invalidate("price:basic") == 2
    assert cache.lookup("How much is the Basic plan?") is None
    assert cache.lookup("What does the Basic plan cost?") is None
    assert cache.lookup("What are your opening hours?").answer == "9:00 to 17:00."  # other facts stay
    now["t"] = 100.0  # and everything expires after the TTL
    assert cache.lookup("What are your opening hours?") is None
    assert cache.hits == {"exact": 2, "semantic": 1} and cache.misses == 3
