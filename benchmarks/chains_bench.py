"""Chapter 8's chains measurement: per-step accuracy against end to end, and the article's advice
(keep the original input at every step) tested by ablation.

Three chains of course_utils/apps/chains.py on SmolLM2 (greedy, every step's reply constrained to
a pydantic model's JSON schema and validated before the next step): summarise-then-answer and
decompose-then-solve over 100 passages with two people's locker codes inserted, and
draft-then-critique over 100 labelled reviews. Each chain runs with the previous step's output only,
with the original input kept at every step, and (passage chains) with content validation that sends
a failing item to the one-call answer. Reported per variant: each step's accuracy, over all items
and given that the earlier steps were right (n, 95% Wilson interval); the share with every step
right against the product of those conditional accuracies; end-to-end accuracy; how often a later
step recovered from an earlier error; tokens per item; McNemar's exact test of each variant against
the plain chain, and of one call against it; and the article's advice (errors compound, keep the
original input, validate intermediate outputs, use few steps) judged per chain from those figures.

Writes benchmarks/results/chains.json. About ten minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "chains.json"
ITEMS = 100


def main() -> None:
    from course_utils.apps.chains import chain_items, measure_chains
    from course_utils.environment import record_benchmark
    from course_utils.serving import LLM

    llm = LLM(DEFAULT_MODEL, num_blocks=4096, block_size=16, max_model_len=1024, max_num_seqs=64)
    report = measure_chains(llm, chain_items("passage", ITEMS), chain_items("review", ITEMS),
                            progress=lambda chain: print("running", chain, flush=True))
    for row in report["tables"]:
        steps = ", ".join(f"{name} {s['given_earlier_right']['rate']}" for name, s in row["steps"].items())
        print(f"{row['chain']} [{row['variant']}]: end to end {row['end_to_end']['rate']:.1%}, every step right "
              f"{row['every_step_right']['rate']:.1%} (given the earlier steps right: {steps})")
    for test in report["tests"]:
        print(test["verdict"])
    for advice, by_chain in report["article_advice"].items():
        print(f"{advice}: " + "; ".join(f"{chain}: {effect}" for chain, effect in by_chain.items()))
    record_benchmark(RESULTS, "chains", model=DEFAULT_MODEL, items_per_task=ITEMS, **report)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
