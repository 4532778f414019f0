"""Measuring attention's cost: wall time and peak memory of one call.

CPU tensors do not go through an allocator that torch reports on, so peak memory comes from the
operating system. On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the process's
high-water mark of resident memory (``VmHWM``); the peak of a call is then ``VmHWM`` after it
minus the resident size (``VmRSS``) before it, after freed memory has gone back to the OS (see
:func:`course_utils.environment.release_freed_memory`). The mark is the whole process's, so memory
another thread takes meanwhile counts too: of several calls the least peak is reported. Elsewhere
the memory column is None.

Used by notebook 01 and benchmarks/attention_bench.py.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from course_utils.architecture import attention
from course_utils.environment import release_freed_memory

__all__ = ["attention_cost", "fit_slope", "peak_memory_supported"]

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent k in y ~ x^k."""
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_supported() -> bool:
    """Reset the high-water mark; False where /proc/self/clear_refs does not exist."""
    release_freed_memory(pin_threshold=True)
    try:
        _CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def attention_cost(impl: str, t: int, heads: int = 4, head_dim: int = 64, causal: bool = True,
                   window: int | None = None, repeats: int = 3, tile: int = 256, device: str = "cpu") -> dict:
    """Median seconds over ``repeats`` calls and the least of their peak extra bytes.

    Inputs are (1, heads, t, head_dim) float32 on ``device``; ``tile`` sets both tile sizes of the
    tiled kernel. On CUDA, time is taken after synchronising and peak memory comes from torch's
    allocator statistics.
    """
    impls = {
        "naive": attention.naive_attention,
        "sdpa": attention.sdpa_attention,
        "tiled": lambda q, k, v, c, w: attention.tiled_attention(q, k, v, c, w, q_tile=tile, k_tile=tile),
    }
    if impl not in impls:
        raise ValueError(f"impl must be one of {sorted(impls)}, got {impl!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(1, heads, t, head_dim, generator=gen).to(dev) for _ in range(3))
    impls[impl](*(x[:, :, :8] for x in (q, k, v)), causal, window)  # warm-up, tiny
    sync()
    times, peaks = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
        else:
            measure_memory = peak_memory_supported()  # also resets the high-water mark for this call
            before = _status_kib("VmRSS") * 1024 if measure_memory else 0
        start = time.perf_counter()
        out = impls[impl](q, k, v, causal, window)
        sync()
        times.append(time.perf_counter() - start)
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated(dev) - before)
        elif measure_memory:
            peaks.append(_status_kib("VmHWM") * 1024 - before)
        del out
    peak = min(peaks) if peaks else None  # another thread's allocations can only add to a call's peak
    return {"impl": impl, "T": t, "window": window, "seconds": statistics.median(times),
            "peak_bytes": None if peak is None else max(peak, 0)}
