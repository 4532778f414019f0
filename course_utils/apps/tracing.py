"""Tracing an LLM application with OpenTelemetry: one trace per request, a span per step.

The SDK does the tracing (spans, context, parent links, exporters); this module adds what an LLM
application needs on top:

* :func:`llm_span`: a span per model call with the GenAI semantic-convention attributes
  (``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` and ``output_tokens``, the input and
  output messages, finish reasons) and the call's cost from the course's price table;
* :func:`step_span`: a span for any other step (a cache lookup, a retrieval, a tool call, a
  retry's wait), tagged with its component;
* :class:`RedactingExporter`: personal data (e-mail addresses, phone numbers, payment cards,
  IBANs, street addresses: chapter 9's :func:`course_utils.safety.pii.redact`) is replaced in every
  string attribute and event *before* a span leaves the process, whatever step recorded them;
* :func:`component_table`, :func:`waterfall` and :func:`replay_request`: the per-component figures,
  the timeline of one trace, and a model call rebuilt from its span.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from course_utils.safety.pii import redact
from course_utils.tokens import find_price

__all__ = ["COMPONENT", "RedactingExporter", "component_table", "llm_span", "make_tracing", "mark_error",
           "record_reply", "redact", "replay_request", "step_span", "waterfall"]

COMPONENT = "llm_course.component"  # llm, cache, retrieval, tool, retry, request
COST = "llm_course.cost_usd"
def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_clean(v) for v in value)
    return value


class RedactingExporter(SpanExporter):
    """Hands ``inner`` copies of the spans with every string attribute (span and events) redacted."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    @staticmethod
    def _redacted(span: ReadableSpan) -> ReadableSpan:
        events = [Event(e.name, {k: _clean(v) for k, v in (e.attributes or {}).items()}, e.timestamp)
                  for e in span.events]
        return ReadableSpan(name=redact(span.name), context=span.context, parent=span.parent, resource=span.resource,
                            attributes={k: _clean(v) for k, v in (span.attributes or {}).items()}, events=events,
                            links=span.links, kind=span.kind, status=span.status, start_time=span.start_time,
                            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


def make_tracing() -> tuple[trace.Tracer, InMemorySpanExporter]:
    """A tracer whose finished spans are redacted, then kept in memory (``exporter.get_finished_spans()``).

    A deployment would add an OTLP exporter (Jaeger, Grafana Tempo, Langfuse) behind the same
    redaction; nothing here sets the global tracer provider.
    """
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory)))
    return provider.get_tracer("llm-course.apps"), memory


@contextmanager
def step_span(tracer: trace.Tracer, name: str, component: str, **attributes: Any) -> Iterator[Span]:
    """A span for one non-model step; an exception marks it as an error and goes on up."""
    with tracer.start_as_current_span(name, attributes={COMPONENT: component, **attributes}) as span:
        yield span


@contextmanager
def llm_span(tracer: trace.Tracer, provider: str, model: str, messages: list[dict[str, str]], max_tokens: int,
             temperature: float, seed: int | None = None) -> Iterator[Span]:
    """A span for one model call, with the request's GenAI attributes; fill in the reply with
    :func:`record_reply`."""
    attributes = {COMPONENT: "llm", gen_ai.GEN_AI_OPERATION_NAME: "chat", gen_ai.GEN_AI_PROVIDER_NAME: provider,
                  gen_ai.GEN_AI_REQUEST_MODEL: model, gen_ai.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
                  gen_ai.GEN_AI_REQUEST_TEMPERATURE: temperature,
                  gen_ai.GEN_AI_INPUT_MESSAGES: json.dumps(messages)}
    if seed is not None:
        attributes[gen_ai.GEN_AI_REQUEST_SEED] = seed
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def record_reply(span: Span, text: str, input_tokens: int, output_tokens: int, finish_reason: str = "stop",
                 price_as: str | None = None) -> None:
    """The reply's attributes on a model call's span; the cost is priced as the price table's row
    ``price_as`` (the course's own model costs nothing, so a chapter prices it as some API model)."""
    span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": text}]))
    span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
    span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
    span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason])
    if price_as is not None:
        price = find_price(price_as)
        span.set_attribute(COST, (input_tokens * price.input_usd_per_m + output_tokens * price.output_usd_per_m) / 1e6)


def mark_error(span: Span, error: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
    span.record_exception(error)


def component_table(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """Per component (and model, for model calls): calls, tokens in and out, p50/p95 latency in
    ms, cost in dollars and the error rate, from finished spans."""
    groups: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        attrs = span.attributes or {}
        component = attrs.get(COMPONENT, "other")
        key = f"{component} ({attrs[gen_ai.GEN_AI_PROVIDER_NAME]})" if component == "llm" else component
        groups[key].append(span)
    rows = []
    for key, members in sorted(groups.items()):
        ms = [(s.end_time - s.start_time) / 1e6 for s in members]
        attrs = [s.attributes or {} for s in members]
        rows.append({"component": key, "calls": len(members),
                     "tokens in": sum(a.get(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, 0) for a in attrs),
                     "tokens out": sum(a.get(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for a in attrs),
                     "p50 ms": round(float(np.percentile(ms, 50)), 1), "p95 ms": round(float(np.percentile(ms, 95)), 1),
                     "cost $": round(sum(a.get(COST, 0.0) for a in attrs), 6),
                     "error rate": round(sum(s.status.status_code is StatusCode.ERROR for s in members)
                                         / len(members), 3)})
    return rows


def waterfall(spans: Sequence[ReadableSpan], ax) -> None:
    """One trace as a timeline on matplotlib ``ax``: a bar per span, children below their parent."""
    by_id = {s.context.span_id: s for s in spans}
    start = min(s.start_time for s in spans)

    def depth(span: ReadableSpan) -> int:
        return 0 if span.parent is None or span.parent.span_id not in by_id else 1 + depth(by_id[span.parent.span_id])

    ordered = sorted(spans, key=lambda s: s.start_time)
    colours = {"request": "tab:blue", "llm": "tab:orange", "cache": "tab:green", "retrieval": "tab:purple",
               "tool": "tab:brown", "retry": "tab:grey"}
    for row, span in enumerate(ordered):
        attrs = span.attributes or {}
        component = attrs.get(COMPONENT, "other")
        failed = span.status.status_code is StatusCode.ERROR
        where = f" @ {attrs[gen_ai.GEN_AI_PROVIDER_NAME]}" if gen_ai.GEN_AI_PROVIDER_NAME in attrs else ""
        ax.barh(row, (span.end_time - span.start_time) / 1e6, left=(span.start_time - start) / 1e6,
                color=colours.get(component, "tab:olive"), hatch="//" if failed else None, edgecolor="black")
        label = "  " * depth(span) + span.name + where + (" (error)" if failed else "")
        ax.text((span.start_time - start) / 1e6, row, label, va="center", ha="left", fontsize=8)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the request arrived")


def replay_request(span: ReadableSpan) -> dict[str, Any]:
    """The chat request a model call's span records, ready for ``client.chat.completions.create(**...)``."""
    attrs = span.attributes or {}
    if attrs.get(COMPONENT) != "llm":
        raise ValueError(f"span {span.name!r} is not a model call")
    request = {"model": attrs[gen_ai.GEN_AI_REQUEST_MODEL], "messages": json.loads(attrs[gen_ai.GEN_AI_INPUT_MESSAGES]),
               "max_tokens": attrs[gen_ai.GEN_AI_REQUEST_MAX_TOKENS],
               "temperature": attrs[gen_ai.GEN_AI_REQUEST_TEMPERATURE]}
    if gen_ai.GEN_AI_REQUEST_SEED in attrs:
        request["seed"] = attrs[gen_ai.GEN_AI_REQUEST_SEED]
    return request
