"""What this machine is and what is installed: for the environment-check cell, `llm-course
doctor`, and the machine record every benchmark JSON carries. Also ``release_freed_memory``: freed
memory handed back to the operating system (engines and peak-memory measurements use it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import platform
import time
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

from course_utils import assets
from course_utils.models import best_device, resolve_device, seed_everything

__all__ = ["asset_report", "cpu_model", "machine_info", "package_versions", "record_benchmark",
           "release_freed_memory", "setup_notebook"]

KEY_PACKAGES = (
    "llm-course", "torch", "transformers", "tokenizers", "peft", "tiktoken", "gguf", "numpy", "scipy",
    "matplotlib", "papermill", "sentence-transformers",
)


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, or "not installed"."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _memory_bytes() -> int:
    """Physical memory; psutil where installed (every course install), else the POSIX page count
    (a bare GPU image running ``benchmarks/gpu_check.py`` has torch and transformers, maybe not psutil)."""
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return psutil.virtual_memory().total


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14", "Intel(R) Xeon(R) ...") where the system tells it,
    else the architecture: two runs of one benchmark compare only on the same CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # Linux
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """CPU, memory, accelerator and library versions: recorded beside every measurement."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_vector_isa": torch.backends.cpu.get_cpu_capability(),  # the kernels PyTorch picked: AVX2, AVX512, ...
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(_memory_bytes() / 1e9, 1),
        "device": best_device(),
        "versions": package_versions(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 1e9, 1),
                       "cuda": torch.version.cuda}
    return info


def record_benchmark(path: str | Path, name: str, **fields: object) -> dict[str, object]:
    """Write a benchmark's result to ``path`` as JSON, with its name, today's date and this machine
    (:func:`machine_info`) ahead of ``fields``; returns what was written."""
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": machine_info(), **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {path}")
    return result


def asset_report() -> list[dict[str, str]]:
    """One row per registered asset: name, source package, expected sha256 prefix, status."""
    rows = []
    for name, asset in sorted(assets.ASSETS.items()):
        ok, message = assets.verify(name)
        rows.append({
            "asset": name,
            "from": f"{asset.package}=={asset.version}",
            "sha256": asset.sha256[:16] + "...",
            "status": "ok" if ok else message,
        })
    return rows


def setup_notebook(seed: int, device: str = "auto") -> str:
    """The second cell of every notebook: seed everything, pick the device, quiet library chatter.

    Returns the device to use (``"cpu"``, ``"cuda"``, ``"mps"``) for ``DEVICE="auto"``.
    """
    import transformers

    seed_everything(seed)
    transformers.logging.set_verbosity_error()  # keep loader notices out of committed outputs
    transformers.utils.logging.disable_progress_bar()
    return str(resolve_device(device))


# Freed memory handed back to the operating system, so that a notebook's resident size tracks what it holds.
#
# glibc serves an allocation above a size threshold with a mapping of its own, unmapped when freed.
# After each such free it raises that threshold (up to 32 MB) to the freed size, so later tensors of
# a few megabytes land in its heap instead; freed there, they stay resident until the heap is trimmed.
# A notebook that builds and drops several serving engines (each with its own packed weights and KV
# pool) then grows by about an engine's worth each time, as if it had kept them: notebook 04's kernel
# reached 8.9 GB that way. release_freed_memory trims the heaps; with ``pin_threshold`` it
# also fixes the threshold so that later large frees are unmapped at once.
#
# Elsewhere than on glibc (macOS, musl) both are no-ops: those allocators behave otherwise.
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
_PINNED_THRESHOLD_BYTES = 128 * 1024  # glibc's starting threshold


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def release_freed_memory(pin_threshold: bool = False) -> None:
    """Collect unreachable objects, then hand every free page of glibc's heaps back to the OS.

    ``pin_threshold``: also fix the mapping threshold at glibc's starting 128 KB for the rest of
    the process, so that a later large tensor is mapped afresh and unmapped when freed (a peak
    measured afterwards counts every byte; the price is a page fault per fresh page: a serving
    step at 64 sequences took about 4% longer with it, so the engine does not pin).
    """
    gc.collect()
    libc = _glibc()
    if libc is None:
        return
    if pin_threshold:
        libc.mallopt(_M_MMAP_THRESHOLD, _PINNED_THRESHOLD_BYTES)
    libc.malloc_trim(0)
