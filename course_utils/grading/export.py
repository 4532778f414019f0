"""Gradescope: build a lab's autograder zip, and run it where Gradescope runs it.

``llm-course export gradescope --lab NAME`` writes ``NAME_gradescope.zip``::

    setup.sh         installs Python, this package (from the copy in the zip) and its assets
    run_autograder   grades /autograder/submission/*.ipynb into /autograder/results/results.json
    course/          pyproject.toml, constraints.txt and course_utils/ (the grader itself)
    lab/NAME.ipynb   the solution (stays on Gradescope's side: the sandbox never shows it)
    config.json      the lab's name, the limits and the visibility of hidden cases

On Gradescope the student's code runs through the same sandbox as ``llm-course grade``; each
question becomes two tests, its public cases (visible at once) and its hidden cases
(``after_published`` unless configured otherwise). ``AUTOGRADER_ROOT`` and ``AUTOGRADER_PYTHON``
move the tree and the interpreter, which is how the tests run it in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

from course_utils.grading.grade import grade_one, prepare_lab
from course_utils.grading.report import HIDDEN_VISIBILITY, gradescope_results
from course_utils.sandbox import Limits

__all__ = ["VISIBILITIES", "build_gradescope_zip", "run_autograder"]

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")

_SETUP = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image (Ubuntu, as root).
set -euo pipefail
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install -c /autograder/source/course/constraints.txt /autograder/source/course
/autograder/venv/bin/llm-course fetch
"""

_RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it writes $ROOT/results/results.json.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
export PYTHONPATH="$ROOT/source/course${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PYTHON" -m course_utils.grading.export --root "$ROOT"
"""


def _package_files(repo: Path) -> list[tuple[Path, str]]:
    """(file, name in the zip) for the grader's own code: course_utils without caches."""
    files = [(repo / "pyproject.toml", "course/pyproject.toml"), (repo / "constraints.txt", "course/constraints.txt")]
    for path in sorted((repo / "course_utils").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path, f"course/{path.relative_to(repo).as_posix()}"))
    return files


def build_gradescope_zip(solution: Path, out: Path, limits: Limits | None = None,
                         hidden_visibility: str = HIDDEN_VISIBILITY) -> Path:
    """Write the autograder zip for one lab (ValueError for an unknown visibility or a bad lab)."""
    if hidden_visibility not in VISIBILITIES:
        raise ValueError(f"hidden_visibility must be one of {', '.join(VISIBILITIES)}, got {hidden_visibility!r}")
    import nbformat

    from course_utils.grading.spec import parse_lab

    parse_lab(nbformat.read(str(solution), as_version=4), solution.name)  # LabFormatError before any zip
    repo = Path(__file__).resolve().parents[2]
    config = {"lab": solution.stem, "limits": asdict(limits or Limits()), "hidden_visibility": hidden_visibility}
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("setup.sh", _SETUP), ("run_autograder", _RUN)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable once unpacked
            archive.writestr(info, text)
        archive.writestr("config.json", json.dumps(config, indent=2))
        archive.write(solution, f"lab/{solution.name}")
        for path, name in _package_files(repo):
            archive.write(path, name)
    return out


def _results(root: Path, payload: dict) -> Path:
    target = root / "results" / "results.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2))
    return target


def run_autograder(root: Path) -> Path:
    """Grade the one notebook in ``root/submission`` and write ``root/results/results.json``."""
    source = root / "source"
    config = json.loads((source / "config.json").read_text())
    limits = Limits(**config["limits"])
    solution = source / "lab" / f"{config['lab']}.ipynb"
    notebooks = sorted((root / "submission").glob("*.ipynb"))
    preferred = [p for p in notebooks if p.name == solution.name]
    if len(preferred) != 1 and len(notebooks) != 1:
        found = ", ".join(p.name for p in notebooks) or "none"
        return _results(root, {"score": 0, "output": f"Submit exactly one notebook, ideally named {solution.name} "
                                                    f"(found: {found}).", "tests": []})
    ctx = prepare_lab(solution, limits)
    result = grade_one((preferred or notebooks)[0], ctx, "submission")
    payload = gradescope_results(result, ctx.grading_key, config["hidden_visibility"])
    payload["extra_data"] = {"grading_key": ctx.grading_key}  # the full record stays with the instructor
    return _results(root, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.grading.export")
    parser.add_argument("--root", default="/autograder", help="Gradescope's autograder folder")
    run_autograder(Path(parser.parse_args(argv).root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
