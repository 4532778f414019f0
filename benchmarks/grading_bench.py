"""Throughput of the autograder: 20 submissions of lab 00 graded with --jobs 2, beside a baseline.

Half the submissions are the reference solution, half the untouched student version, so both
the full run and the early-failure path are in the mix. Reported:

* submissions per minute (wall clock of the whole grading call, reference run excluded);
* per submission, the notebook's own run time (its cells, timed inside the sandbox) and the
  overhead beyond it: process start, lock-down, test calls and reporting;
* with ``--baseline REV``, the same measurement of an earlier revision of the grader (checked
  out with ``git worktree`` into a temporary folder), run right before ours on the same machine,
  and the ratio of the two throughputs: what a change of the grader costs or gains.

Writes benchmarks/results/grading.json.

    python benchmarks/grading_bench.py [--baseline REV] [--measure-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "grading.json"
LAB = "00_getting_started_lab"
N_SUBMISSIONS, JOBS = 20, 2


def measure() -> dict:
    """Grade the class once with the grader importable as ``course_utils``; the figures."""
    import nbformat

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
    return {
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


def measure_baseline(revision: str) -> dict:
    """The same measurement with the grader of ``revision`` (a git worktree in a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
        try:
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure-only"],
                                  env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, capture_output=True,
                                  text=True, check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a git revision of the grader to measure beside this one")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:  # the child of --baseline: print the figures, write nothing
        print(json.dumps(measure()))
        return
    from course_utils.environment import record_benchmark

    baseline = measure_baseline(args.baseline) if args.baseline else None
    ours = measure()
    fields = {"lab": LAB, "submissions": N_SUBMISSIONS, "jobs": JOBS, **ours}
    if baseline is not None:
        fields["baseline"] = {"revision": args.baseline, **baseline}
        fields["throughput_vs_baseline"] = ours["submissions_per_minute"] / baseline["submissions_per_minute"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record_benchmark(RESULTS, "grading", **fields)
    p = ours["per_submission"]
    print(f"{N_SUBMISSIONS} submissions, --jobs {JOBS}: {ours['submissions_per_minute']:.0f}/min; per submission "
          f"notebook {p['notebook_exec_s_median']:.2f}s + overhead {p['overhead_s_median']:.2f}s (median)")
    if baseline is not None:
        print(f"baseline {args.baseline}: {baseline['submissions_per_minute']:.0f}/min; "
              f"ours / baseline = {fields['throughput_vs_baseline']:.2f}")
    if ours["scores"] != [0.0, 10.0]:
        sys.exit(f"unexpected scores {ours['scores']}")


if __name__ == "__main__":
    main()
