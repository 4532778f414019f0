"""Install the pinned torch in the build this machine needs, before the rest of the course.

    python tools/install_torch.py            (make setup runs it with the virtual environment's python)

The package index resolves ``torch==X`` on Linux to the CUDA build: a 500 MB wheel plus several GB
of NVIDIA libraries, useless on a laptop without a GPU. So on Linux without an NVIDIA driver this
script installs ``torch==X+cpu`` from PyTorch's CPU wheel index. ``TORCH_VARIANT`` overrides the
choice: ``cpu``, ``cuda`` (the index's default build) or ``auto`` (the default). It uses only the
standard library: it runs before anything else is installed.

Where the CPU index cannot be reached, pip is left to find the CPU wheel where it can (a local
``PIP_FIND_LINKS`` folder, a mirror); if it cannot, set-up stops at once with what to do, instead
of downloading gigabytes. ``constraints.txt`` pins torch without the ``+cpu`` label (``make
constraints`` strips it), so the pins fit both builds and the build is chosen here, every time.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
VARIANTS = ("auto", "cpu", "cuda")
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


@dataclass(frozen=True)
class Choice:
    """The torch build to install and the reason, in words a learner can check."""

    variant: str  # "cpu" (PyTorch's CPU index) or "default" (whatever the package index serves)
    reason: str


def choose_variant(env: Mapping[str, str], system: str, nvidia_driver: bool) -> Choice:
    """Decide the build from ``TORCH_VARIANT``, the operating system and the NVIDIA driver.

    ValueError for a ``TORCH_VARIANT`` that is not one of auto, cpu, cuda.
    """
    asked = env.get("TORCH_VARIANT", "auto").strip().lower() or "auto"
    if asked not in VARIANTS:
        raise ValueError(f"TORCH_VARIANT={asked!r} is not one of {', '.join(VARIANTS)}")
    if asked == "cpu":
        return Choice("cpu", "TORCH_VARIANT=cpu")
    if asked == "cuda":
        return Choice("default", "TORCH_VARIANT=cuda: the package index's default build (CUDA on Linux)")
    if system != "Linux":
        return Choice("default", f"{system}: the package index's build is the right one there")
    if nvidia_driver:
        return Choice("default", "an NVIDIA driver is present: the CUDA build (TORCH_VARIANT=cpu to avoid it)")
    return Choice("cpu", "Linux without an NVIDIA driver (TORCH_VARIANT=cuda to install the CUDA build anyway)")


def nvidia_driver_present() -> bool:
    """True when this machine has an NVIDIA driver loaded or its command-line tool."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def pinned_torch(constraints: Path = CONSTRAINTS) -> str:
    """The torch version pinned in constraints.txt, without a local label (e.g. ``2.13.0``)."""
    for line in constraints.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower() == "torch":
            return version.strip().split("+")[0]
    raise ValueError(f"{constraints} pins no torch version (a line torch==X)")


def index_reachable(url: str = CPU_INDEX, timeout_s: float = 5.0) -> bool:
    """True when ``url`` answers within ``timeout_s`` (never waits longer)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/torch/", method="HEAD"), timeout=timeout_s):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pip_command(choice: Choice, version: str, cpu_index_reachable: bool) -> list[str]:
    """The pip arguments (after ``python -m pip``) that install this torch build.

    torch's own dependencies are held to the pins too (``-c constraints.txt``).
    """
    args = ["install", "--progress-bar", "on", "-c", str(CONSTRAINTS)]
    if choice.variant == "cpu":
        args.append(f"torch=={version}+cpu")
        return args + (["--extra-index-url", CPU_INDEX] if cpu_index_reachable else [])
    return [*args, f"torch=={version}"]


def installed_torch() -> str | None:
    """The installed torch version with its label (``2.13.0+cpu``), or None."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def already_satisfied(installed: str | None, choice: Choice, version: str) -> bool:
    """True when the installed torch is the pinned version in the chosen build."""
    if installed is None or installed.split("+")[0] != version:
        return False
    return installed.endswith("+cpu") if choice.variant == "cpu" else True


def main() -> int:
    try:
        choice = choose_variant(os.environ, platform.system(), nvidia_driver_present())
        version = pinned_torch()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label = "CPU build" if choice.variant == "cpu" else "default build"
    installed = installed_torch()
    if already_satisfied(installed, choice, version):
        print(f"torch: {installed} already installed ({label}: {choice.reason})")
        return 0
    reachable = choice.variant == "cpu" and index_reachable()
    print(f"torch: installing the {label} of torch {version}: {choice.reason}")
    if choice.variant == "cpu" and not reachable:
        print(f"torch: {CPU_INDEX} cannot be reached; looking for torch {version}+cpu where pip finds packages "
              "(PIP_FIND_LINKS, a mirror)")
    result = subprocess.run([sys.executable, "-m", "pip", *pip_command(choice, version, reachable)])
    if result.returncode == 0:
        return 0
    if choice.variant == "cpu":
        print(f"error: no CPU build of torch {version} was found. Either let pip reach {CPU_INDEX}, or put "
              f"its wheel in a folder and set PIP_FIND_LINKS=that-folder, or set TORCH_VARIANT=cuda to "
              "install the package index's default build (several GB on Linux)", file=sys.stderr)
    else:
        print(f"error: pip could not install torch {version} (see above); on an Intel Mac there is no wheel "
              "for it: use a Linux machine, WSL2, or Binder (see the README)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
