"""Throughput of the autograder: 20 submissions of lab 00 graded with --jobs 2.

Half the submissions are the reference solution, half the untouched student version, so both
the full run and the early-failure path are in the mix. Reported:

* submissions per minute (wall clock of the whole grading call, reference run excluded);
* per submission, the notebook's own run time (its cells, timed inside the sandbox) and the
  overhead beyond it: process start, lock-down, test calls and reporting.

Writes benchmarks/results/grading.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "grading.json"
LAB = "00_getting_started_lab"
N_SUBMISSIONS, JOBS = 20, 2


def main() -> None:
    from course_utils.environment import machine_info
    from course_utils.grading.assign import make_student_version
    from course_utils.grading.grade import grade_submissions, prepare_lab
    from course_utils.sandbox import Limits

    solution = ROOT / "solutions" / f"{LAB}.ipynb"
    limits = Limits()  # the defaults of `llm-course grade`
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        subs.mkdir()
        student = make_student_version(nbformat.read(str(solution), as_version=4), solution.name)
        for i in range(N_SUBMISSIONS):
            target = subs / f"student{i:02d}.ipynb"
            if i % 2 == 0:
                shutil.copy(solution, target)
            else:
                nbformat.write(student, target)
        start = time.perf_counter()
        ctx = prepare_lab(solution, limits)
        prepared = time.perf_counter()
        results = grade_submissions(sorted(subs.iterdir()), ctx, Path(tmp) / "out", jobs=JOBS, force=True)
        done = time.perf_counter()
    grading_s = done - prepared
    overhead = [r.wall_s - r.exec_s for r in results]
    result = {
        "benchmark": "grading",
        "lab": LAB,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "submissions": N_SUBMISSIONS,
        "jobs": JOBS,
        "reference_run_s": prepared - start,
        "grading_wall_s": grading_s,
        "submissions_per_minute": N_SUBMISSIONS / grading_s * 60,
        "per_submission": {
            "sandbox_wall_s_median": statistics.median(r.wall_s for r in results),
            "notebook_exec_s_median": statistics.median(r.exec_s for r in results),
            "overhead_s_median": statistics.median(overhead),
            "overhead_s_max": max(overhead),
        },
        "scores": sorted({r.total for r in results}),
        "limits_in_force": results[0].limits_in_force,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    p = result["per_submission"]
    print(f"{N_SUBMISSIONS} submissions, --jobs {JOBS}: {result['submissions_per_minute']:.0f}/min; per submission "
          f"notebook {p['notebook_exec_s_median']:.2f}s + overhead {p['overhead_s_median']:.2f}s (median) -> {RESULTS}")
    if result["scores"] != [0.0, 10.0]:
        sys.exit(f"unexpected scores {result['scores']}")


if __name__ == "__main__":
    main()
