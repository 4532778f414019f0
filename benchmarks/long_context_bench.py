"""SmolLM2's perplexity past its 8,192-token training context, with and without RoPE scalings.

The from-scratch model (course_utils.architecture.transformer) holds SmolLM2's weights; for each RoPE setting
we score the last quarter of 2K-, 8K- and 12K-token windows of one long plain document (Python's
own argparse.py, repeated). Notebook 01 runs the short windows in QUICK mode and shows this file's
long-window table. Expensive on a CPU (about 15 minutes on 2 cores), seconds on a GPU.

Writes benchmarks/results/long_context.json.
"""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "long_context.json"
WINDOWS = [2048, 8192, 12288]
TRAINED_CONTEXT = 8192


def main() -> None:
    from course_utils.architecture.rope import RopeScaling
    from course_utils.architecture.transformer import Llama
    from course_utils.environment import machine_info, record_benchmark
    from course_utils.evaluation import late_window_perplexity
    from course_utils.models import load_model

    hf_model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    model = Llama.from_hf(hf_model)
    ids = tokenizer(inspect.getsource(argparse) * 3, return_tensors="pt")["input_ids"][:, : max(WINDOWS)]
    settings = {"original RoPE": None, "linear x2": RopeScaling("linear", 2.0, TRAINED_CONTEXT),
                "dynamic NTK x2": RopeScaling("dynamic", 2.0, TRAINED_CONTEXT),
                "YaRN x2": RopeScaling("yarn", 2.0, TRAINED_CONTEXT)}
    table, start = {}, time.perf_counter()
    for name, scaling in settings.items():
        table[name] = {}
        for window in WINDOWS:
            model.set_rope(model.config.rope_base, scaling, seq_len=window)
            table[name][str(window)] = late_window_perplexity(model, ids, window)
            print(f"{name:>15} {window:>6} tokens: {table[name][str(window)]:.2f}", flush=True)
    versions = machine_info()["versions"]
    record_benchmark(RESULTS, "long_context",
                     document=f"argparse.py x3 ({inspect.getsourcefile(argparse).rsplit('/', 1)[-1]}), "
                              f"python {versions['python']}",
                     trained_context=TRAINED_CONTEXT, scored_fraction=0.25, perplexity=table,
                     seconds=time.perf_counter() - start)

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
