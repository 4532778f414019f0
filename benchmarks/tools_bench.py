"""Chapter 8's tool-calling measurement: what a grammar constraint buys a small model, and costs.

All 48 requests of course_utils/data/tool_requests.jsonl, each with the three tools of
course_utils/apps/toolbox.py, sent to the course's server (SmolLM2, greedy) twice: with
``tool_choice="auto"`` (the model must write the call format on its own) and ``"required"`` (a Lark
grammar forces one call with schema-valid arguments). Reported per mode with n and 95% Wilson
intervals: replies holding a call, valid calls, the right tool, the right arguments; McNemar's exact
test on the paired outcomes. Then the per-token cost of the constraint (constrained decode against
unconstrained decode of the same length, request by request) and the time of one mask step for
llguidance and for the course's from-scratch DFA on a flat schema.

Writes benchmarks/results/tools.json. About four minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "tools.json"
FLAT = {"type": "object", "properties": {"unit": {"enum": ["km", "mi", "kg", "lb"]}, "value": {"type": "integer"},
                                          "exact": {"type": "boolean"}},
        "required": ["unit", "value", "exact"], "additionalProperties": False}


def mask_step_us(factory, backend: str, walks: int = 30) -> float:
    """Mean microseconds of one allowed() + consume() along random walks through FLAT's grammar."""
    from course_utils.serving.structured import StructuredOutputs

    rng, steps, total = random.Random(0), 0, 0.0
    for _ in range(walks):
        matcher = factory.create(StructuredOutputs(json=FLAT, backend=backend))
        for _ in range(24):
            start = time.perf_counter()
            ids = matcher.allowed().nonzero().flatten().tolist()
            choices = [i for i in ids if i != factory.tokenizer.eos_token_id]
            if not choices:
                break
            token = rng.choice(choices)
            matcher.consume(token)
            total += time.perf_counter() - start
            steps += 1
    return round(1e6 * total / steps, 1)


def main() -> None:
    from scipy.stats import binomtest

    from course_utils.apps.toolbox import constraint_cost, evaluate_calls, load_requests
    from course_utils.environment import record_benchmark
    from course_utils.serving import LLM
    from course_utils.serving.server import background_server
    from course_utils.serving.structured import MatcherFactory
    from course_utils.stats import rate

    tasks = load_requests()
    llm = LLM(DEFAULT_MODEL, num_blocks=512, block_size=16, max_model_len=1024, max_num_seqs=16)
    modes = {}
    with background_server(llm.engine, DEFAULT_MODEL) as url:
        for mode in ("auto", "required"):
            scores = asyncio.run(evaluate_calls(url, DEFAULT_MODEL, tasks, mode))
            modes[mode] = scores
            n = len(scores)
            valid, tool = rate(sum(s.valid for s in scores), n), rate(sum(s.right_tool for s in scores), n)
            print(f"{mode:>9}: valid {valid}, right tool {tool}, right arguments "
                  f"{rate(sum(s.right_arguments for s in scores), n)}")
    summary = {}
    for mode, scores in modes.items():
        n = len(scores)
        summary[mode] = {key: rate(sum(getattr(s, key) for s in scores), n).as_dict()
                         for key in ("called", "valid", "right_tool", "right_arguments")}
    tests = {}
    for key in ("valid", "right_tool", "right_arguments"):
        pairs = [(getattr(a, key), getattr(b, key)) for a, b in zip(modes["auto"], modes["required"], strict=True)]
        only_required, only_auto = sum(b and not a for a, b in pairs), sum(a and not b for a, b in pairs)
        p = binomtest(only_required, only_required + only_auto).pvalue if only_required + only_auto else 1.0
        tests[key] = {"only_required": only_required, "only_auto": only_auto, "mcnemar_exact_p": p}
        print(f"{key}: required-only {only_required}, auto-only {only_auto}, McNemar exact p = {p:.2g}")
    constraint_cost(llm, tasks[:2])  # warm-up
    cost = constraint_cost(llm, tasks)
    print(f"constrained / unconstrained time per token: {cost['ratio_mean']} (95% CI {cost['ratio_ci95']}, "
          f"n = {cost['n']})")
    factory = MatcherFactory(llm.engine.tokenizer, llm.engine.model.config.vocab_size)
    masks = {backend: mask_step_us(factory, backend) for backend in ("llguidance", "course")}
    print(f"one mask step on a flat schema: {masks} microseconds")
    record_benchmark(RESULTS, "tools", model=DEFAULT_MODEL, requests=len(tasks), tools=3, modes=summary,
                     paired_tests=tests, constraint_cost=cost, mask_step_us=masks)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
