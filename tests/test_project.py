"""The project's own wiring: packaging, set-up and binder files agree with each other."""

import re
import subprocess
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_dependency_is_pinned_in_constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    deps = project["dependencies"] + extras["dev"] + extras["anchor"]  # not gpu: vllm pins its own torch
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[;]", dep)[0]).lower()
        assert name in pins, f"{name} has no exact pin in constraints.txt"
    assert pins["torch"].startswith("2."), "torch must be pinned (a CPU build on CPU machines)"


def test_console_script_and_python_version():
    project = _pyproject()["project"]
    assert project["name"] == "llm-course"
    assert project["scripts"]["llm-course"] == "course_utils.cli:main"
    assert project["requires-python"] == ">=3.10"
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.(1[0-9])", runtime), runtime


def test_binder_installs_with_the_pins_and_fetches_assets():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "-c constraints.txt" in post_build and "llm-course fetch" in post_build
    subprocess.run(["bash", "-n", str(ROOT / "binder" / "postBuild")], check=True)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
