"""What batching and prefix reuse buy when evaluating prompts on SmolLM2 (CPU).

Two measurements, each against the plain way, in one process on the same machine:

* **generation**: 8 different prompts, greedy, exactly 32 new tokens each (no early stop):
  one ``generate`` call per prompt against one ``generate_batch`` call for all 8. The
  completions must be identical token for token.
* **likelihood scoring**: 16 sentiment reviews under one 8-shot prompt (the examples are the
  same for every review, only the review at the end differs), two labels each:
  ``option_logprobs`` per prompt against ``option_logprobs_batch``, which computes the shared
  prefix once. The scores must agree to 1e-4 and give the same labels.

Writes benchmarks/results/prompting.json. Targets on 2 CPU cores: batched generation at least
2x faster, prefix reuse at least 2x faster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "prompting.json"
TARGET_SPEEDUP = 2.0


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    import numpy as np

    from course_utils.chat import generate, generate_batch
    from course_utils.environment import record_benchmark
    from course_utils.evaluation import option_logprobs, option_logprobs_batch
    from course_utils.icl.prompting import Example, few_shot_messages
    from course_utils.models import load_model
    from course_utils.tasks import load_task

    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    questions = [r["question"] for r in load_task("arithmetic")[:8]]
    generate(model, tokenizer, questions[0], max_new_tokens=4)  # warm-up
    fixed = {"max_new_tokens": 32}
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # every completion runs the full 32 tokens
    try:
        one_by_one, t_loop = _timed(lambda: [generate(model, tokenizer, q, **fixed)[0] for q in questions])
        batched, t_batch = _timed(lambda: [g[0] for g in generate_batch(model, tokenizer, questions, **fixed)])
    finally:
        model.generation_config.eos_token_id = eos
    same_tokens = [a.token_ids for a in one_by_one] == [b.token_ids for b in batched]

    reviews = load_task("sentiment")
    examples = [Example(r["text"], r["label"]) for r in reviews[:8]]
    labels = ["positive", "negative"]
    prompts = [tokenizer.apply_chat_template(few_shot_messages(examples, r["text"], "Label the sentiment."),
                                             tokenize=False, add_generation_prompt=True) for r in reviews[100:116]]
    singly, t_single = _timed(lambda: [option_logprobs(model, tokenizer, p, labels) for p in prompts])
    shared, t_shared = _timed(lambda: option_logprobs_batch(model, tokenizer, prompts, labels))
    max_difference = float(np.max(np.abs(np.array(singly) - np.array(shared))))
    same_labels = [int(np.argmax(s)) for s in singly] == [int(np.argmax(s)) for s in shared]
    prompt_tokens = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])

    result = {
        "generation": {"prompts": len(questions), "new_tokens_each": 32, "one_by_one_s": round(t_loop, 2),
                       "batched_s": round(t_batch, 2), "speedup": round(t_loop / t_batch, 2),
                       "identical_tokens": same_tokens},
        "likelihood": {"prompts": len(prompts), "shots": len(examples), "tokens_per_prompt": prompt_tokens,
                       "per_prompt_s": round(t_single, 2), "shared_prefix_s": round(t_shared, 2),
                       "speedup": round(t_single / t_shared, 2), "max_abs_difference": max_difference,
                       "same_labels": same_labels},
        "target_speedup": TARGET_SPEEDUP,
    }
    result["meets_target"] = (result["generation"]["speedup"] >= TARGET_SPEEDUP and same_tokens
                              and result["likelihood"]["speedup"] >= TARGET_SPEEDUP
                              and max_difference < 1e-4 and same_labels)
    result = record_benchmark(RESULTS, "prompting", **result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if not result["meets_target"]:
        raise SystemExit("a speedup is below target or the batched results differ")


if __name__ == "__main__":
    main()
