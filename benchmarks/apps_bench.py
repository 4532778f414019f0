"""Chapter 8's fault drill at full size: does the resilience stack keep answering through an outage?

A real course server (SmolLM2) behind two fault proxies acting as providers: A, the primary, is
down (503) for the middle half of the run; B answers 10% of requests with 429 and Retry-After.
200 questions at 8 per second, open loop, for each strategy: no resilience, the openai client's
own max_retries=3, our retries only, and the full stack (retries + circuit breakers + fallback to
B + power-of-two-choices balancing + semantic cache + static FAQ). Goals (the issue's): the full
stack answers >= 99% where no resilience answers < 75%, with <= 2 provider calls per question.

Writes benchmarks/results/apps.json. About two minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "apps.json"
N, RATE_PER_S, MAX_TOKENS = 200, 8.0, 8


def main() -> None:
    from course_utils.apps.drill import standard_drill
    from course_utils.environment import record_benchmark
    from course_utils.models import load_embedder
    from course_utils.serving import LLM
    from course_utils.serving.server import background_server

    llm = LLM(DEFAULT_MODEL, num_blocks=256, block_size=16, max_model_len=256, max_num_seqs=64)

    def show(result) -> None:
        s = result.summary()
        print(f"{s['strategy']:>22}: answered {result.answered()}, live {s['answered_live']['rate']:.1%}, "
              f"p50 {s['latency_p50_s']} s, p95 {s['latency_p95_s']} s, calls/question {s['calls_per_question']}")

    with background_server(llm.engine, DEFAULT_MODEL) as url:
        results = asyncio.run(standard_drill(url.removesuffix("/v1"), DEFAULT_MODEL, load_embedder(), N, RATE_PER_S,
                                             max_tokens=MAX_TOKENS, progress=show))
    by_name = {r.strategy: r for r in results}
    full, none = by_name["full stack"], by_name["no resilience"]
    goals = {
        "full stack answers >= 99%": full.answered().value >= 0.99,
        "no resilience answers < 75%": none.answered().value < 0.75,
        "full stack makes <= 2 calls per question": full.summary()["calls_per_question"] <= 2,
    }
    for goal, met in goals.items():
        print(f"{'met' if met else 'NOT met'}: {goal}")
    record_benchmark(RESULTS, "apps", model=DEFAULT_MODEL, questions=N, rate_per_s=RATE_PER_S, max_tokens=MAX_TOKENS,
                     schedule="A: 503 outage over the middle half of the run; B: 10% 429 with Retry-After 0.5 s",
                     strategies=[r.summary() for r in results], goals=goals)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
