"""Needle in a haystack on SmolLM2 up to its 8K window: the lost-in-the-middle grid.

For each context length and needle depth, one trial (course_utils.context.needle): the course's
own chapter prose as the haystack, a four-digit code planted at the depth, and the code's
log-probability after the answer lead. Notebook 07 runs a short grid in QUICK mode and shows this
file's full grid as a heatmap. About 10 minutes on 2 CPU cores.

Writes benchmarks/results/needle.json.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "needle.json"
LENGTHS = [500, 1000, 2000, 4000, 8000]
DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


def main() -> None:
    from course_utils.context.corpus import course_text
    from course_utils.context.needle import needle_grid
    from course_utils.environment import record_benchmark
    from course_utils.models import load_model

    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    start = time.perf_counter()
    trials = needle_grid(model, tokenizer, course_text(), LENGTHS, DEPTHS, seed=0)
    for t in trials:
        print(f"{t.length:>6} tokens, depth {t.depth:.2f}: log P = {t.log_prob:7.2f}, found {t.found}")
    record_benchmark(RESULTS, "needle", model=DEFAULT_MODEL, haystack="chapters 00-06 prose (course_text())",
                     lengths=LENGTHS, depths=DEPTHS, trials=[asdict(t) for t in trials],
                     seconds=time.perf_counter() - start)

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
