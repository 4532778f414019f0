"""tools/install_torch.py: which torch build set-up installs, decided without any network."""

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("install_torch", ROOT / "tools" / "install_torch.py")
install_torch = importlib.util.module_from_spec(_spec)
sys.modules["install_torch"] = install_torch  # dataclasses look their module up there
_spec.loader.exec_module(install_torch)


@pytest.mark.parametrize(("env", "system", "driver", "variant"), [
    ({}, "Linux", False, "cpu"),                              # a laptop without a GPU: never the CUDA build
    ({}, "Linux", True, "default"),                           # a GPU box: the index's CUDA build
    ({"TORCH_VARIANT": "cpu"}, "Linux", True, "cpu"),         # override: CPU even with a driver
    ({"TORCH_VARIANT": "cuda"}, "Linux", False, "default"),   # override: CUDA without a driver (a build box)
    ({"TORCH_VARIANT": "AUTO"}, "Linux", False, "cpu"),
    ({}, "Darwin", False, "default"),                         # macOS: the index's wheel is the CPU/MPS one
    ({}, "Windows", False, "default"),
])
def test_the_build_follows_the_driver_the_system_and_the_override(env, system, driver, variant):
    choice = install_torch.choose_variant(env, system, driver)
    assert choice.variant == variant
    assert choice.reason  # always says why


def test_an_unknown_variant_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="TORCH_VARIANT='rocm' is not one of auto, cpu, cuda"):
        install_torch.choose_variant({"TORCH_VARIANT": "rocm"}, "Linux", False)


def test_the_cpu_build_asks_for_the_cpu_label_and_the_cpu_index_only_when_reachable():
    cpu = install_torch.Choice("cpu", "test")
    assert install_torch.pip_command(cpu, "2.13.0", True)[-3:] == ["torch==2.13.0+cpu", "--extra-index-url",
                                                                   install_torch.CPU_INDEX]
    offline = install_torch.pip_command(cpu, "2.13.0", False)
    assert offline[-1] == "torch==2.13.0+cpu" and install_torch.CPU_INDEX not in offline
    assert install_torch.pip_command(install_torch.Choice("default", "t"), "2.13.0", True)[-1] == "torch==2.13.0"


def test_the_pins_carry_no_build_label_so_make_constraints_cannot_lose_the_variant():
    pinned = install_torch.pinned_torch()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    assert "+cpu" not in (ROOT / "constraints.txt").read_text()
    assert "sed 's/+cpu$$//'" in (ROOT / "Makefile").read_text()  # make constraints strips the label


def test_installed_builds_are_recognised():
    cpu, default = install_torch.Choice("cpu", "t"), install_torch.Choice("default", "t")
    assert install_torch.already_satisfied("2.13.0+cpu", cpu, "2.13.0")
    assert not install_torch.already_satisfied("2.13.0", cpu, "2.13.0")       # the CUDA build on a CPU laptop
    assert not install_torch.already_satisfied("2.12.0+cpu", cpu, "2.13.0")
    assert install_torch.already_satisfied("2.13.0+cu128", default, "2.13.0")
    assert not install_torch.already_satisfied(None, default, "2.13.0")


def test_an_unreachable_index_is_given_up_quickly():
    start = time.perf_counter()
    assert not install_torch.index_reachable("http://127.0.0.1:9", timeout_s=2.0)  # closed port (loopback only)
    assert time.perf_counter() - start < 5


def test_make_setup_installs_torch_before_the_course(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("tools/install_torch.py") < makefile.index("-c constraints.txt -e '.[dev]'")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "install_torch.py")],
                         env={"TORCH_VARIANT": "bogus", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "TORCH_VARIANT" in run.stderr
