"""Tracing with the OpenTelemetry SDK: one trace per request with GenAI attributes, PII redacted
before export, the per-component table, and a model call replayed exactly from its span."""

import asyncio
import json

import httpx
import openai
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import StatusCode

from course_utils.apps.fallback import Level, ResilientClient
from course_utils.apps.faults import FaultPlan, FaultProxy
from course_utils.apps.providers import Provider
from course_utils.apps.retry import RetryPolicy
from course_utils.apps.tracing import COMPONENT, COST, component_table, make_tracing, redact, replay_request
from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving import LLM
from course_utils.serving.server import background_server
from course_utils.tokens import load_prices

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"


def test_redaction_catches_emails_and_luhn_valid_cards_only():
    text = f"Mail {EMAIL} or a.b+c@mail.co.uk; card {CARD}, 5500-0000-0000-0004; order 1234567890123456; tel 555 0100"
    cleaned = redact(text)
    assert EMAIL not in cleaned and "a.b+c@mail.co.uk" not in cleaned and cleaned.count("[EMAIL]") == 2
    assert CARD not in cleaned and "5500-0000-0000-0004" not in cleaned and cleaned.count("[CARD]") == 2
    assert "1234567890123456" in cleaned and "555 0100" in cleaned  # not a valid card number, not an e-mail


@pytest.fixture(scope="module")
def upstream():
    llm = LLM(DEFAULT_MODEL, num_blocks=64, block_size=16, max_model_len=256, max_num_seqs=8)
    with background_server(llm.engine, DEFAULT_MODEL) as url:
        yield url.removesuffix("/v1")


def every_string(spans):
    for span in spans:
        yield span.name
        events = [v for e in span.events for v in (e.attributes or {}).values()]
        for value in list((span.attributes or {}).values()) + events:
            if isinstance(value, str):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, str))


def test_one_trace_per_request_with_genai_attributes_costs_and_no_pii(upstream):
    tracer, exporter = make_tracing()
    with FaultProxy(upstream, FaultPlan({"rate_limit": 1.0}, retry_after_s=0.01), "A") as a, \
            FaultProxy(upstream, FaultPlan(), "B") as b:
        async def run():
            async with httpx.AsyncClient() as http:
                client = ResilientClient([Provider("A", a.url, DEFAULT_MODEL, price_as="gpt-4o"),
                                          Provider("B", b.url, DEFAULT_MODEL, price_as="gpt-4o-mini")], http,
                                         RetryPolicy(max_attempts=2, base_s=0.01, deadline_s=5), max_tokens=8,
                                         tracer=tracer)
                return await client.answer(f"My e-mail is {EMAIL} and my card is {CARD}. Say hello.")
        answer = asyncio.run(run())
    assert answer.level is Level.LIVE and answer.provider == "B" and answer.calls == 3
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one trace for the request
    root = [s for s in spans if s.parent is None]
    assert len(root) == 1 and root[0].name == "answer" and root[0].attributes["llm_course.calls"] == 3
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:  # every span hangs under the request's span
        while span.parent is not None:
            span = by_id[span.parent.span_id]
        assert span is root[0]
    llm = sorted((s for s in spans if s.attributes[COMPONENT] == "llm"), key=lambda s: s.start_time)
    assert [s.attributes[gen_ai.GEN_AI_PROVIDER_NAME] for s in llm] == ["A", "A", "B"]
    assert [s.status.status_code for s in llm][:2] == [StatusCode.ERROR] * 2
    assert sum(s.attributes[COMPONENT] == "retry" for s in spans) == 1  # one backoff between A's two attempts
    ok = next(s for s in llm if s.attributes[gen_ai.GEN_AI_PROVIDER_NAME] == "B")
    assert ok.attributes[gen_ai.GEN_AI_REQUEST_MODEL] == DEFAULT_MODEL
    assert ok.attributes[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == answer.reply.prompt_tokens
    assert ok.attributes[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == answer.reply.completion_tokens
    mini = next(p for p in load_prices() if p.model == "gpt-4o-mini")
    assert ok.attributes[COST] == pytest.approx((answer.reply.prompt_tokens * mini.input_usd_per_m
                                                 + answer.reply.completion_tokens * mini.output_usd_per_m) / 1e6)
    strings = list(every_string(spans))
    assert not any(EMAIL in s or CARD in s or CARD.replace(" ", "") in s for s in strings)
    assert any("[EMAIL]" in s and "[CARD]" in s for s in strings)  # the prompt is kept, redacted
    table = {row["component"]: row for row in component_table(spans)}
    assert table["llm (A)"]["calls"] == 2 and table["llm (A)"]["error rate"] == 1.0
    assert table["llm (B)"]["error rate"] == 0.0 and table["llm (B)"]["tokens out"] == answer.reply.completion_tokens


def test_a_traced_call_replays_exactly(upstream):
    tracer, exporter = make_tracing()

    async def run():
        async with httpx.AsyncClient() as http:
            client = ResilientClient([Provider("B", upstream + "/v1", DEFAULT_MODEL)], http, max_tokens=12,
                                     tracer=tracer)
            return await client.answer("Name a colour of the sky.")
    answer = asyncio.run(run())
    span = next(s for s in exporter.get_finished_spans() if s.attributes[COMPONENT] == "llm")
    request = replay_request(span)
    assert request["messages"] == [{"role": "user", "content": "Name a colour of the sky."}]
    again = openai.OpenAI(base_url=upstream + "/v1", api_key="x", max_retries=0).chat.completions.create(**request)
    assert again.choices[0].message.content == answer.text  # greedy: the same reply from its trace alone
    assert json.loads(span.attributes[gen_ai.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == answer.text
    with pytest.raises(ValueError):
        replay_request(next(s for s in exporter.get_finished_spans() if s.attributes[COMPONENT] == "request"))
