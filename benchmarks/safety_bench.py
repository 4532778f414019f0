"""Chapter 9's detectors on their full labelled sets, and what each guardrail layer costs per request.

* personal data: recall per kind (common and hard spellings) and the false-positive rate on
  look-alikes, on 4,000 generated sentences;
* prompt injection: rules, the MiniLM classifier and either, on the held-out attack families
  (detection rate per kind, false-positive rate on benign text and look-alikes, ROC AUC with a
  bootstrap interval);
* faithfulness: MiniLM similarity and the SmolLM2 judge on all 166 claims (ROC AUC, precision,
  recall, F1, share caught per kind of claim);
* self-consistency: 7 samples (temperature 1) per review for all 200 sentiment reviews; the
  majority answer's accuracy at each agreement level, and the ROC AUC of agreement as a predictor
  of a right answer;
* drift: each check's false-alarm rate with no shift and its power against topic shifts, over 200
  pairs of 200-message windows;
* output checks: the refusal detector and the system-prompt leak score on their labelled sets;
  the chapter assistant's topic filter on held-out questions;
* citations: every chapter question under the four conditions (retrieval or not, the
  cite-every-sentence instruction or not) and after the verification gate;
* red team: 12 probes of each kind through the guarded assistant (the course server behind a
  fault proxy), which layer stopped each, and each check's time from the spans;
* monitoring: two windows of 150 requests (the second with a shifted mix, longer messages, pasted
  details and 25% injected refusals) through the guarded assistant, rates per block of 25 and the
  drift checks between the windows, all read from the traces;
* cost: the time each layer adds to one request, as a ratio to one SmolLM2 call that writes 32
  tokens, measured in the same run (CPU times are for ratios only).

Writes benchmarks/results/safety.json. About fifteen minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "safety.json"
SHIFTS = (0.0, 0.05, 0.1, 0.2)


def _seconds_per_call(fn, inputs, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for x in inputs:
            fn(x)
        best = min(best, (time.perf_counter() - started) / len(inputs))
    return best


def drift_power(tokenizer, trials: int = 200, n: int = 200) -> dict[str, dict[str, dict]]:
    from course_utils.safety.drift import compare_windows
    from course_utils.safety.traffic import signals, traffic_window
    from course_utils.stats import rate

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    reference = {"sentiment": 0.5, "arithmetic": 0.3, "chapter_questions": 0.2}
    alerts: dict[str, dict[str, list[bool]]] = {}
    for shift in SHIFTS:
        mix = {"sentiment": 0.5 - shift, "arithmetic": 0.3, "chapter_questions": 0.2 + shift}
        for t in range(trials):
            a = signals(traffic_window(n, reference, seed=20_000 + 2 * t), count)
            b = signals(traffic_window(n, mix, seed=20_001 + 2 * t), count)
            for check in compare_windows(a, b):
                alerts.setdefault(check.statistic, {}).setdefault(f"{shift:.2f}", []).append(check.alert)
    return {stat: {shift: rate(sum(flags), len(flags)).as_dict() for shift, flags in by_shift.items()}
            for stat, by_shift in alerts.items()}


def guarded_runs(embedder, classifier, support_threshold: float, per_kind: int = 12, window: int = 150
                 ) -> dict[str, object]:
    """Output checks, citations, the red team and the monitoring windows (see the module docstring)."""
    from course_utils.apps.faults import FaultPlan
    from course_utils.apps.tracing import COMPONENT, make_tracing
    from course_utils.context.corpus import load_questions
    from course_utils.safety.assistant import (
        ChapterRetriever,
        calibrate_faithfulness,
        fit_topic_filter,
        run_guarded,
        traffic_asks,
        tutor_config,
    )
    from course_utils.safety.citations import measure_citations
    from course_utils.safety.claims import SimilaritySupport
    from course_utils.safety.drift import compare_windows
    from course_utils.safety.monitoring import guard_latency, over_time, request_records, window_signals
    from course_utils.safety.output_checks import evaluate_output_checks
    from course_utils.safety.red_team import probes, red_team_table
    from course_utils.safety.traffic import traffic_window
    from course_utils.serving import LLM
    from course_utils.serving.server import background_server

    checks = evaluate_output_checks(1200, 600)
    questions = load_questions()
    retrieve = ChapterRetriever(embedder, questions)
    topics, topic_report = fit_topic_filter(embedder, retrieve.chunks, questions)
    llm = LLM(DEFAULT_MODEL, num_blocks=2048, block_size=16, max_model_len=2048, max_num_seqs=64)
    citations = measure_citations(llm, questions, retrieve, SimilaritySupport(embedder),
                                  support_threshold, max_tokens=48)
    print("citations:", {k: v.get("bad_citation_rate") for k, v in citations["conditions"].items()})
    config = tutor_config(embedder, classifier, topics, support_threshold)
    with background_server(llm.engine, DEFAULT_MODEL) as url:
        upstream = url.removesuffix("/v1")
        items = [(q.question, p) for q in questions if (p := retrieve.answering(q))]
        gate_threshold, gate = asyncio.run(calibrate_faithfulness(upstream, DEFAULT_MODEL, config, items[::2]))
        print("faithfulness gate:", gate)
        config = replace(config, support_threshold=gate_threshold)
        suite = probes(per_kind, items[1::2])
        tracer, exporter = make_tracing()
        replies = asyncio.run(run_guarded(upstream, DEFAULT_MODEL, config,
                                          [(p.text, p.passages, {"kind": p.kind}) for p in suite], tracer))
        spans = exporter.get_finished_spans()
        table = [{k: v.as_dict() if hasattr(v, "as_dict") else v for k, v in row.items()}
                 for row in red_team_table(suite, replies)]
        print("red team, through untouched:", {row["kind"]: row["through"]["rate"] for row in table})
        model_ms = [(s.end_time - s.start_time) / 1e6 for s in spans if (s.attributes or {}).get(COMPONENT) == "llm"]
        latency = guard_latency(spans)
        mixes = {"first": ({"chapter_questions": 0.8, "sentiment": 0.1, "arithmetic": 0.1}, 0.0, 0.0, FaultPlan()),
                 "second": ({"chapter_questions": 0.5, "sentiment": 0.3, "arithmetic": 0.2}, 0.3, 0.15,
                            FaultPlan({"refusal": 0.25}))}
        tracer, exporter = make_tracing()
        for i, (name, (mix, long_share, pii_share, plan)) in enumerate(mixes.items()):
            asks = traffic_asks(traffic_window(window, mix, seed=5 + i, long_share=long_share, pii_share=pii_share),
                                retrieve, name)
            asyncio.run(run_guarded(upstream, DEFAULT_MODEL, config, asks, tracer, plan, max_tokens=24))
    records = sorted(request_records(exporter.get_finished_spans()),
                     key=lambda r: (r["window"] != "first", r["start_s"]))
    keys = ["topic", "input_triggered", "refusal", "unfaithful", "output_replaced", "tokens", "latency_s"]
    drift_checks = compare_windows(*(window_signals([r for r in records if r["window"] == w], keys)
                                     for w in ("first", "second")))
    print("monitoring alerts:", [str(c) for c in drift_checks if c.alert])
    blocks = [{k: v.as_dict() if hasattr(v, "as_dict") else v for k, v in b.items()} for b in over_time(records, 25)]
    return {"output_checks": checks, "topic_filter": topic_report, "citations": citations,
            "faithfulness_gate": gate, "red_team": {"per_kind": per_kind, "table": table, "guard_latency_ms": latency,
                         "model_call_ms_p50": round(float(np.median(model_ms)), 1)},
            "monitoring": {"window": window, "blocks": blocks,
                           "checks": [c.__dict__ for c in drift_checks]}}


def main() -> None:
    from course_utils.environment import record_benchmark
    from course_utils.models import load_embedder, load_model
    from course_utils.safety.claims import claim_set, judge_scores, score_report, similarity_scores
    from course_utils.safety.consistency import agreement, calibration, sample_answers
    from course_utils.safety.injection import InjectionClassifier, evaluate_detectors, rule_hits, training_units
    from course_utils.safety.injection_set import injection_examples
    from course_utils.safety.pii import find_pii
    from course_utils.safety.pii_set import evaluate_detector, pii_examples
    from course_utils.serving import LLM, SamplingParams, StructuredOutputs
    from course_utils.stats import bootstrap_auc, rate
    from course_utils.tasks import load_task

    embedder = load_embedder()
    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")

    pii = pii_examples(4000, seed=0)
    pii_report = evaluate_detector(pii)
    print("personal data:", {k: v for k, v in pii_report.items()})

    train, held_out = injection_examples(seed=0)
    classifier = InjectionClassifier(embedder).fit(*training_units(train))
    injection_report = evaluate_detectors(held_out, classifier.score([e.text for e in held_out]))
    print("injection AUC:", injection_report["classifier_auc"])

    claims = claim_set(seed=0)
    faithfulness = {"similarity": score_report(claims, similarity_scores(claims, embedder)),
                    "judge": score_report(claims, judge_scores(claims, model, tokenizer))}
    for name, report in faithfulness.items():
        print(f"faithfulness, {name}: AUC {report['auc']}, F1 {report['f1']}")

    llm = LLM(DEFAULT_MODEL, num_blocks=1024, block_size=16, max_model_len=512, max_num_seqs=64)
    reviews = load_task("sentiment")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Is this review positive or negative?"
                                                                         f"\n\n{r['text']}"}],
                                             tokenize=False, add_generation_prompt=True) for r in reviews]
    samples = sample_answers(llm, prompts, StructuredOutputs(choice=["positive", "negative"]), k=7)
    majority = [agreement(s) for s in samples]
    right = [m == r["label"] for (m, _), r in zip(majority, reviews, strict=True)]
    auc, low, high = bootstrap_auc(right, [a for _, a in majority])
    consistency = {"reviews": len(reviews), "samples": 7, "temperature": 1.0,
                   "majority_accuracy": rate(sum(right), len(right)).as_dict(),
                   "calibration": calibration([a for _, a in majority], right),
                   "auc": {"auc": round(auc, 4), "ci95": [round(low, 4), round(high, 4)]}}
    print("self-consistency:", consistency["auc"], [(r["agreement"], r["accuracy"]["rate"])
                                                    for r in consistency["calibration"]])

    drift = drift_power(tokenizer)
    print("drift chi2 alerts by shift:", {s: r["rate"] for s, r in drift["chi2"].items()})

    messages = [e.text for e in held_out[:40]]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": messages[0]}], tokenize=False,
                                           add_generation_prompt=True)
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    llm.generate([prompt], params)
    model_call = _seconds_per_call(lambda _: llm.generate([prompt], params), range(3), repeat=2)
    layers = {"personal data (find_pii)": _seconds_per_call(find_pii, messages),
              "injection rules": _seconds_per_call(rule_hits, messages),
              "injection classifier": _seconds_per_call(lambda m: classifier.score([m]), messages[:20]),
              "faithfulness, similarity (one claim)": _seconds_per_call(
                  lambda c: similarity_scores([c], embedder), claims[:20])}
    cost = {name: float(f"{seconds / model_call:.3g}") for name, seconds in layers.items()}  # 3 significant digits
    print("time per request as a share of one 32-token model call:", cost)
    guarded = guarded_runs(embedder, classifier, faithfulness["similarity"]["threshold"])
    record_benchmark(RESULTS, "safety", model=DEFAULT_MODEL, personal_data={"examples": len(pii), **pii_report},
                     injection={"train": len(train), "held_out": len(held_out), **injection_report},
                     faithfulness={"claims": len(claims), **faithfulness}, self_consistency=consistency,
                     drift={"trials": 200, "window": 200, "alerts": drift}, cost_relative_to_one_model_call=cost,
                     **guarded)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
