"""Throughput of the scaling chapter's trainer: serial runs against two worker processes.

Tiny models are limited by per-operation overhead, not arithmetic, so ``train_many`` runs
several of them side by side, one thread each. This benchmark trains the same four configurations
(widths 8-32, 300K tokens each) three ways in one process: one after the other with torch's
default threads (what a plain loop over ``train`` does), one after the other on one thread
(``workers=1``), and in two worker processes (``workers=2``). It reports the ratios and checks
that the two ``train_many`` variants give identical losses. The worker pool is started (and
warmed with one tiny run) before timing, as it is in the notebook after its first sweep.

Writes benchmarks/results/training.json. Target: two workers at least 1.3x faster than the
plain loop on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "training.json"
TARGET_SPEEDUP = 1.3


def main() -> None:
    import torch

    from course_utils.environment import record_benchmark
    from course_utils.scaling.training import model_ladder, stdlib_corpus, train, train_many

    corpus = stdlib_corpus()
    configs = model_ladder([8, 12, 16, 32], tokens=300_000)
    train_many(model_ladder([8], tokens=4096), corpus, workers=2, progress=False)  # start the pool
    timings, losses = {}, {}
    start = time.perf_counter()
    for cfg in configs:
        train(cfg, corpus, progress=False)
    timings["loop"] = time.perf_counter() - start
    for workers in (1, 2):
        start = time.perf_counter()
        runs = train_many(configs, corpus, workers=workers, progress=False)
        timings[workers] = time.perf_counter() - start
        losses[workers] = [r.held_out_loss for r in runs]
    speedup = timings["loop"] / timings[2]
    result = {
        "configs": [{"width": c.dim, "parameters": c.n_params, "tokens": c.tokens} for c in configs],
        "loop_default_threads_s": round(timings["loop"], 2),
        "default_threads": torch.get_num_threads(),
        "serial_one_thread_s": round(timings[1], 2),
        "two_workers_s": round(timings[2], 2),
        "speedup_vs_loop": round(speedup, 2),
        "speedup_vs_one_thread": round(timings[1] / timings[2], 2),
        "identical_losses": losses[1] == losses[2],
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP and losses[1] == losses[2],
    }
    result = record_benchmark(RESULTS, "training", **result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if not result["meets_target"]:
        raise SystemExit(f"speedup {speedup:.2f}x (target {TARGET_SPEEDUP}x) or losses differ")


if __name__ == "__main__":
    main()
