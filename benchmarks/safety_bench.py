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
* cost: the time each layer adds to one request, as a ratio to one SmolLM2 call that writes 32
  tokens, measured in the same run (CPU times are for ratios only).

Writes benchmarks/results/safety.json. About eight minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

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
    record_benchmark(RESULTS, "safety", model=DEFAULT_MODEL, personal_data={"examples": len(pii), **pii_report},
                     injection={"train": len(train), "held_out": len(held_out), **injection_report},
                     faithfulness={"claims": len(claims), **faithfulness}, self_consistency=consistency,
                     drift={"trials": 200, "window": 200, "alerts": drift}, cost_relative_to_one_model_call=cost)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
