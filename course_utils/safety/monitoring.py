"""Behavioural monitoring from traces: what a dashboard of a guarded application shows, read from spans.

A :class:`course_utils.safety.guardrails.GuardedApp` leaves one ``guarded request`` span per
request, a ``guard <layer>.<check>`` span per decision under it, and chapter 8's model-call spans
(tokens, cost) under those. Nothing else is logged: :func:`request_records` rebuilds each request
from its trace, :func:`over_time` turns the records into rates per block of consecutive requests
(each with its Wilson interval), :func:`dashboard` draws them, :func:`window_signals` hands two
windows to :func:`course_utils.safety.drift.compare_windows`, and :func:`guard_latency` says what
each check costs in time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from course_utils.apps.tracing import COMPONENT, COST
from course_utils.safety.guardrails import GUARD

__all__ = ["FLAGS", "dashboard", "guard_latency", "over_time", "request_records", "window_signals"]

FLAGS = ("input_triggered", "refusal", "unfaithful", "output_replaced")


def _ms(span: ReadableSpan) -> float:
    return (span.end_time - span.start_time) / 1e6


def request_records(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """One dict per guarded request, in order of arrival: ``start_s`` (since the first request),
    ``latency_s``, the labels it was asked with, ``input_triggered`` (an input check did anything
    but pass), ``refusal`` (the refusal check flagged the reply), ``unfaithful`` (the faithfulness
    check replaced it), ``output_replaced`` (any output check replaced it), ``tokens`` and
    ``cost_usd`` (its model calls)."""
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.context.trace_id].append(span)
    roots = sorted((s for s in spans if (s.attributes or {}).get(COMPONENT) == "guarded"), key=lambda s: s.start_time)
    if not roots:
        return []
    first = roots[0].start_time
    records = []
    for root in roots:
        members = by_trace[root.context.trace_id]
        guards = [s.attributes for s in members if (s.attributes or {}).get(COMPONENT) == "guardrail"]
        verdict = {(g[f"{GUARD}.layer"], g[f"{GUARD}.check"]): g[f"{GUARD}.verdict"] for g in guards}
        calls = [s.attributes for s in members if (s.attributes or {}).get(COMPONENT) == "llm"]
        labels = {k.rsplit(".", 1)[1]: v for k, v in (root.attributes or {}).items() if k.startswith(f"{GUARD}.label.")}
        records.append({
            "start_s": (root.start_time - first) / 1e9, "latency_s": _ms(root) / 1e3, **labels,
            "input_triggered": any(v not in ("pass", "skip") for (layer, _), v in verdict.items() if layer == "input"),
            "refusal": verdict.get(("output", "refusal")) == "flag",
            "unfaithful": verdict.get(("output", "faithfulness")) == "fallback",
            "output_replaced": any(v == "fallback" for (layer, _), v in verdict.items() if layer == "output"),
            "tokens": sum(c.get(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, 0) + c.get(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, 0)
                          for c in calls),
            "cost_usd": sum(c.get(COST, 0.0) for c in calls)})
    return records


def over_time(records: Sequence[dict[str, Any]], block: int) -> list[dict[str, Any]]:
    """Per block of ``block`` consecutive requests: the block's first request index, each flag of
    :data:`FLAGS` as a Rate (k/n with its 95% interval), the median latency and the mean cost."""
    from course_utils.stats import rate

    if block < 1:
        raise ValueError(f"a block holds at least one request, got {block}")
    out = []
    for start in range(0, len(records), block):
        part = records[start:start + block]
        out.append({"first": start, **{flag: rate(sum(r[flag] for r in part), len(part)) for flag in FLAGS},
                    "latency_p50_s": float(np.median([r["latency_s"] for r in part])),
                    "cost_usd_mean": float(np.mean([r["cost_usd"] for r in part]))})
    return out


def dashboard(blocks: Sequence[dict[str, Any]], axes: Sequence, switch_at: int | None = None) -> None:
    """Three panels on ``axes``: flag rates per block with 95% intervals, median latency, mean cost;
    a dashed line at request ``switch_at`` (where the second window starts)."""
    x = [b["first"] for b in blocks]
    for flag in FLAGS:
        values = np.asarray([b[flag].value for b in blocks]) * 100
        low = values - np.asarray([b[flag].low for b in blocks]) * 100
        high = np.asarray([b[flag].high for b in blocks]) * 100 - values
        axes[0].errorbar(x, values, yerr=[low, high], marker="o", capsize=3, label=flag.replace("_", " "))
    axes[0].set_ylabel("share of requests (%)")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [b["latency_p50_s"] for b in blocks], marker="o")
    axes[1].set_ylabel("median latency (s)")
    axes[2].plot(x, [b["cost_usd_mean"] * 1e6 for b in blocks], marker="o")
    axes[2].set_ylabel("mean cost per request (micro-$)")
    for ax in axes:
        ax.set_xlabel("request number (start of block)")
        if switch_at is not None:
            ax.axvline(switch_at, color="grey", linestyle="--")


def window_signals(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list]:
    """The columns ``keys`` of ``records``, as ``compare_windows`` takes them."""
    return {key: [r[key] for r in records] for key in keys}


def guard_latency(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """Per guardrail check (layer.check): how many ran, p50 and p95 milliseconds."""
    groups: dict[str, list[float]] = defaultdict(list)
    for span in spans:
        attrs = span.attributes or {}
        if attrs.get(COMPONENT) == "guardrail":
            groups[f"{attrs[f'{GUARD}.layer']}.{attrs[f'{GUARD}.check']}"].append(_ms(span))
    return [{"check": key, "runs": len(ms), "p50 ms": round(float(np.percentile(ms, 50)), 2),
             "p95 ms": round(float(np.percentile(ms, 95)), 2)} for key, ms in sorted(groups.items())]
