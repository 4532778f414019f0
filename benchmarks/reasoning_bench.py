"""Reasoning prompts on SmolLM2, large enough to test: direct, zero-shot and manual chain-of-thought,
program-of-thought and self-consistency on the first 40 arithmetic word problems of the task set.

Notebook 03 runs 4 problems with replies cut at 48 tokens in QUICK mode: it shows the methods but
cannot detect a gain. This run asks ten times as many problems, lets replies run to 256 tokens (long enough
for the chains to reach an answer) and takes 5 self-consistency votes, then tests each method
against direct answers on the same problems (McNemar's exact test). Greedy apart from the votes
(seeded). About ten minutes on 2 CPU cores.

Writes benchmarks/results/reasoning.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "reasoning.json"
PROBLEMS, MAX_NEW_TOKENS, VOTES, SEED = 40, 256, 5, 0


def main() -> None:
    from course_utils.environment import record_benchmark
    from course_utils.icl.reasoning import METHODS, compare_with_direct, run_reasoning
    from course_utils.models import load_model
    from course_utils.stats import rate
    from course_utils.tasks import load_task

    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    problems = load_task("arithmetic")[:PROBLEMS]
    start = time.perf_counter()
    run = run_reasoning(model, tokenizer, problems, MAX_NEW_TOKENS, VOTES, SEED)
    seconds = time.perf_counter() - start
    cut = {m: sum(r.finish_reason == "length" for r in run.replies[m]) for m in run.replies}
    methods = {m: {**rate(sum(run.right(m)), len(problems)).as_dict(), "right": [int(x) for x in run.right(m)],
                   "replies_cut_at_max_tokens": cut.get(m)} for m in METHODS}
    comparisons = compare_with_direct(run)
    for m, row in methods.items():
        print(f"{m:>20}: {row['k']}/{row['n']} right, 95% CI {row['ci95']}")
    for row in comparisons:
        print(f"{row['method']:>20} vs direct: {row['verdict']} (p = {row['McNemar exact p']})")
    record_benchmark(RESULTS, "reasoning", model=DEFAULT_MODEL, problems=len(problems), max_new_tokens=MAX_NEW_TOKENS,
                     votes=VOTES, seed=SEED, seconds=round(seconds, 1), methods=methods, against_direct=comparisons)


if __name__ == "__main__":
    main()
