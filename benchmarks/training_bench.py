"""Throughput of the scaling chapter's trainer: serial runs against two worker processes.

Tiny models are limited by per-operation overhead, not arithmetic, so ``train_many`` runs
several of them side by side, one thread each. This benchmark trains the same four configurations
(widths 8-32, 300K tokens each) with ``workers=1`` and ``workers=2`` in one process and reports
the ratio, and checks that both give identical losses. The worker pool is started (and warmed with
one tiny run) before timing, as it is in the notebook after its first sweep.

Writes benchmarks/results/training.json. Target: at least 1.6x with 2 workers on 2 cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "training.json"
TARGET_SPEEDUP = 1.6


def main() -> None:
    from course_utils.environment import machine_info
    from course_utils.training import model_ladder, stdlib_corpus, train_many

    corpus = stdlib_corpus()
    configs = model_ladder([8, 12, 16, 32], tokens=300_000)
    train_many(model_ladder([8], tokens=4096), corpus, workers=2, progress=False)  # start the pool
    timings, losses = {}, {}
    for workers in (1, 2):
        start = time.perf_counter()
        runs = train_many(configs, corpus, workers=workers, progress=False)
        timings[workers] = time.perf_counter() - start
        losses[workers] = [r.held_out_loss for r in runs]
    speedup = timings[1] / timings[2]
    result = {
        "machine": machine_info(),
        "configs": [{"width": c.dim, "parameters": c.n_params, "tokens": c.tokens} for c in configs],
        "serial_s": round(timings[1], 2),
        "two_workers_s": round(timings[2], 2),
        "speedup": round(speedup, 2),
        "identical_losses": losses[1] == losses[2],
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP and losses[1] == losses[2],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if not result["meets_target"]:
        raise SystemExit(f"speedup {speedup:.2f}x (target {TARGET_SPEEDUP}x) or losses differ")


if __name__ == "__main__":
    main()
