"""Perplexity and memory of every quantization scheme on the same held-out text, in one run.

The model is the embedded SmolLM2-135M-Instruct. Its weights come from a Q4_1 GGUF file,
de-quantized to float32 when it is loaded: that float32 model is the baseline, and every scheme
is measured against it. Re-quantizing to Q4_1 therefore costs nothing (the weights are already
on Q4_1's grid); the other formats add their own error on top of Q4_1's.

* held-out text: the 10 passages of ``course_utils/data/passages.jsonl`` (written for the course,
  about 2,700 tokens), each scored as its own sequence;
* calibration for GPTQ and AWQ: the course's other task texts (arithmetic problems, reviews, quiz
  questions), joined into sequences of 512 tokens: disjoint from the held-out text;
* the output head (tied to the embeddings) stays in float32 for every scheme, as GPTQ does;
  "linear bits per weight" counts the quantized layers' stored bytes, "model MB" everything.

Checks, as in the issue: GPTQ 4-bit raises perplexity less than round-to-nearest 4-bit with the
same groups of 128; Q8_0 raises it by less than 0.5%. Quantization time per scheme is recorded, and
GPTQ is run a second time on 4 of the calibration sequences, as notebook 05 does in QUICK mode.
GPTQ and AWQ are each compared with round-to-nearest passage by passage (``against_rtn``: the mean
difference of log-perplexity with a 95% paired bootstrap interval; negative is better).
Writes benchmarks/results/quantization.json.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "quantization.json"
Q8_0_LIMIT = 0.005  # relative perplexity increase
QUICK_SEQUENCES = 4  # calibration sequences of notebook 05 in QUICK mode


def main() -> None:
    from course_utils.architecture.transformer import Llama
    from course_utils.defaults import DEFAULT_MODEL
    from course_utils.environment import record_benchmark
    from course_utils.models import load_model
    from course_utils.quantization.measuring import measure_scheme, measure_schemes
    from course_utils.quantization.texts import calibration_batch, held_out_passages
    from course_utils.stats import paired_difference

    hf_model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    base = Llama.from_hf(hf_model).eval()
    del hf_model
    passages, calibration = held_out_passages(tokenizer), calibration_batch(tokenizer)
    rows = measure_schemes(base, passages, calibration)
    # GPTQ again with the 4 calibration sequences notebook 05 uses in QUICK mode
    less_calibration = measure_scheme(base, "gptq4-g128", passages, rows[0]["perplexity"],
                                      calibration[:QUICK_SEQUENCES])

    by = {r["scheme"]: r for r in rows}
    against_rtn = {}
    for scheme in ("gptq4-g128", "awq4-g128"):
        ours, rtn = by[scheme]["passage_nll"], by["rtn4-g128"]["passage_nll"]
        diff = paired_difference(ours, rtn, seed=0)
        against_rtn[scheme] = {"mean_log_perplexity_difference": diff.value, "ci95": [diff.low, diff.high],
                               "passages_lower": sum(a < b for a, b in zip(ours, rtn, strict=True)),
                               "passages": len(rtn)}
    checks = {
        "gptq_beats_rtn_at_4_bits_groups_of_128": by["gptq4-g128"]["perplexity"] < by["rtn4-g128"]["perplexity"],
        "q8_0_increase_below_0.5%": by["q8_0"]["increase"] < Q8_0_LIMIT,
    }
    result = record_benchmark(
        RESULTS, "quantization",
        model=f"{DEFAULT_MODEL}, float32 de-quantized from its Q4_1 GGUF",
        held_out={"text": "course_utils/data/passages.jsonl", "sequences": len(passages),
                  "scored_tokens": sum(len(p) - 1 for p in passages)},
        calibration={"text": "arithmetic, sentiment and multiple_choice task sets",
                     "sequences": calibration.shape[0], "tokens_each": calibration.shape[1]},
        schemes=rows,
        gptq_with_less_calibration={"sequences": QUICK_SEQUENCES, **less_calibration},
        against_rtn=against_rtn,
        checks=checks,
        meets_target=all(checks.values()),
    )
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "schemes")}, indent=2))
    if not result["meets_target"]:
        raise SystemExit("a quantization check failed")


if __name__ == "__main__":
    main()
