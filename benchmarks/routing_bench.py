"""Chapter 8's routing measurement: does a learned router beat always-cheap and always-expensive?

A mixed workload of 100 sentiment reviews and 100 arithmetic word problems (the course's task
sets), each answered by SmolLM2 on both paths of course_utils/apps/routing.py (cheap: the bare
question, constrained answer; expensive: eight-shot for reviews, the calculator tool for word
problems). The router is a logistic regression on MiniLM embeddings predicting "the expensive path
is right where the cheap one is wrong", scored out of fold (5-fold). Reported: accuracy (n, 95%
Wilson interval), mean billed tokens and latency for always-cheap, always-expensive, the router
and the oracle router; McNemar's exact test of the router against each fixed path; a threshold
sweep; and the article's claim (40-70% cost reduction with < 2% quality loss) checked against the
router's figures relative to always-expensive.

Writes benchmarks/results/routing.json. About two minutes on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "routing.json"
PER_TASK = 100


def main() -> None:
    from course_utils.apps.routing import compare_policies, route_items, router_scores, run_paths
    from course_utils.context.retrieval import unit_embeddings
    from course_utils.environment import record_benchmark
    from course_utils.models import load_embedder
    from course_utils.serving import LLM

    items = route_items(PER_TASK)
    llm = LLM(DEFAULT_MODEL, num_blocks=2048, block_size=16, max_model_len=512, max_num_seqs=64)
    outcomes = run_paths(llm, items)
    needs = [not c.correct and e.correct for c, e in zip(outcomes["cheap"], outcomes["expensive"], strict=True)]
    scores = router_scores(unit_embeddings(load_embedder(), [item.query for item in items]), needs)
    report = compare_policies(outcomes, scores, needs)
    for name, row in report["policies"].items():
        accuracy = row["accuracy"]
        print(f"{name:>18}: accuracy {accuracy['rate']:.1%} {accuracy['ci95']}, tokens {row['tokens']:.0f}, "
              f"expensive share {row['share_expensive']:.0%}")
    print(report["verdict"])
    by_task = {task: {path: float(np.mean([o.correct for o, i in zip(outcomes[path], items, strict=True)
                                          if i.task == task])) for path in ("cheap", "expensive")}
               for task in ("sentiment", "arithmetic")}
    record_benchmark(RESULTS, "routing", model=DEFAULT_MODEL, items=len(items), per_task=PER_TASK,
                     accuracy_by_task=by_task, **report)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
