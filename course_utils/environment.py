"""What this machine is and what is installed: for the environment-check cell, `llm-course
doctor`, and the machine record every benchmark JSON carries."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from course_utils import assets
from course_utils.models import best_device, resolve_device, seed_everything

__all__ = ["asset_report", "cpu_model", "machine_info", "package_versions", "record_benchmark", "setup_notebook"]

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
