"""Attention's cost as the sequence grows: naive vs tiled (online softmax) vs torch SDPA.

For T = 256 ... 8192 (one batch, 4 heads of 64, causal, float32) each implementation is timed
(median of 3 calls) and its peak extra memory read from the OS (course_utils.architecture.measure), all in
one process on one machine, so the ratios are comparable. Sliding-window attention (w = 256) is
timed for the tiled kernel, which skips the tiles the window hides.

Writes benchmarks/results/attention.json. Target (issue #4): the tiled kernel's peak memory at
T = 8192 is at most 5% of the naive one's.
"""

from __future__ import annotations

import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "attention.json"
LENGTHS = [256, 512, 1024, 2048, 4096, 8192]
WINDOW = 256


def main() -> None:
    from course_utils.architecture.measure import attention_cost, fit_slope, peak_memory_supported
    from course_utils.environment import record_benchmark

    if not peak_memory_supported():
        sys.exit("peak memory needs Linux's /proc/self/clear_refs")
    rows = []
    for t in LENGTHS:
        row = {"T": t}
        for impl in ("sdpa", "naive", "tiled"):
            cost = attention_cost(impl, t)
            row[f"{impl}_s"], row[f"{impl}_peak_bytes"] = cost["seconds"], cost["peak_bytes"]
        row["tiled_window_s"] = attention_cost("tiled", t, window=WINDOW)["seconds"]
        row["naive_over_sdpa"] = row["naive_s"] / row["sdpa_s"]
        row["tiled_over_sdpa"] = row["tiled_s"] / row["sdpa_s"]
        rows.append(row)
        print(f"T={t}: sdpa {row['sdpa_s']:.3f}s, naive x{row['naive_over_sdpa']:.1f}, tiled "
              f"x{row['tiled_over_sdpa']:.1f}; peak naive {row['naive_peak_bytes'] / 2**20:.0f} MiB, "
              f"tiled {row['tiled_peak_bytes'] / 2**20:.0f} MiB", flush=True)
    last = rows[-1]
    ratio = last["tiled_peak_bytes"] / last["naive_peak_bytes"]
    big = [r for r in rows if r["T"] >= 1024]  # small T is dominated by fixed overheads
    result = {
        "setup": {"batch": 1, "heads": 4, "head_dim": 64, "dtype": "float32", "causal": True, "tile": 256,
                  "window": WINDOW, "repeats": 3},
        "rows": rows,
        "slopes_log_time_vs_log_T_from_1024": {
            impl: fit_slope([r["T"] for r in big], [r[f"{impl}_s"] for r in big])
            for impl in ("naive", "tiled", "sdpa", "tiled_window")
        },
        "slope_log_peak_vs_log_T_naive": fit_slope([r["T"] for r in big], [r["naive_peak_bytes"] for r in big]),
        "tiled_over_naive_peak_at_8192": ratio,
        "target_tiled_over_naive_peak": 0.05,
        "meets_target": ratio <= 0.05,
    }
    result = record_benchmark(RESULTS, "attention", **result)
    print(f"tiled/naive peak memory at T=8192: {ratio:.1%} -> {RESULTS}")
    if not result["meets_target"]:
        sys.exit("tiled attention's peak memory is over 5% of naive attention's")


if __name__ == "__main__":
    main()
