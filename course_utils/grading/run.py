"""Execute a lab notebook's code in the sandbox and bring back plain results."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import Any

from course_utils.grading.spec import Case
from course_utils.sandbox import Limits, run_sandboxed

__all__ = ["NotebookRun", "run_cells"]


@dataclass
class NotebookRun:
    """Outcome of one sandboxed run: per-cell statuses and per-case values."""

    cells: list[dict[str, Any]]
    cases: dict[str, dict[str, Any]]
    finished: bool  # the harness reported back
    failure: str  # why it did not, in words ("" when finished)
    failure_kind: str  # "" when finished, else "timeout", "memory" or "error"
    wall_s: float
    exec_s: float  # time the notebook's own cells took
    limits_in_force: dict[str, str] = field(default_factory=dict)
    output_truncated: bool = False


def run_cells(sources: list[tuple[int, str]], cases: list[Case], limits: Limits) -> NotebookRun:
    """Run ``(cell index, source)`` pairs in order in a fresh sandbox, then call every case."""
    job = {
        "cells": [{"index": i, "source": s} for i, s in sources],
        "cases": [{"id": c.id, "function": c.function, "args": c.args} for c in cases],
        "cell_timeout": limits.cell_timeout_s,
    }
    with tempfile.TemporaryDirectory(prefix="llm-course-job-") as workdir:
        run = run_sandboxed("course_utils.grading.harness", json.dumps(job).encode(), workdir, limits)
    # The harness writes exactly one results message, at the very end; take the first one, so
    # nothing the student's code writes afterwards on the same pipe is read.
    results = next((m for m in run.messages if m.get("type") == "results"), None)
    if results is not None and isinstance(results.get("cases"), dict) and isinstance(results.get("cells"), list):
        return NotebookRun(results["cells"], results["cases"], True, "", "", run.wall_s,
                           float(results.get("exec_s", 0)), run.limits_in_force, run.output_truncated)
    kind = "error"
    if run.timed_out:
        kind = "timeout"
        failure = f"the notebook did not finish within the {limits.wall_timeout_s:g} s wall-clock limit"
    elif run.returncode is not None and run.returncode < 0:
        failure = f"the process was killed by signal {-run.returncode}"
    else:
        failure = f"the process exited (code {run.returncode}) before reporting results"
        if "MemoryError" in run.stderr:
            kind, failure = "memory", failure + " after running out of memory"
    return NotebookRun([], {}, False, failure, kind, run.wall_s, run.wall_s, run.limits_in_force,
                       run.output_truncated)
