"""Runs inside the sandbox: execute a notebook's cells, then call the graded functions.

Input (stdin, JSON): ``{"cells": [{"index", "source"}], "cases": [{"id", "function", "args"}],
"cell_timeout": seconds}``. Output (the channel pipe, one JSON line): each cell's status and
each case's return value, encoded as plain data. This process never sees expected values:
scoring happens in the grader, which only reads the values.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

from course_utils.grading.values import UnsupportedValue, decode, encode


class CellTimeout(BaseException):
    """Raised by the timer when a cell or a test call runs too long."""


def _on_alarm(signum, frame):
    raise CellTimeout()


def _status(err: BaseException) -> str:
    if isinstance(err, CellTimeout):
        return "timeout"
    if isinstance(err, MemoryError):
        return "memory"
    if isinstance(err, SystemExit):
        return "exit"
    return "error"


def _describe(err: BaseException) -> str:
    if isinstance(err, CellTimeout):
        return "ran past the time limit"
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r})"
    return f"{type(err).__name__}: {str(err)[:300]}"


def _student_frames(err: BaseException) -> str:
    """The traceback lines that point into the notebook's cells (none of the harness's)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith("<cell")]
    return "".join(f"\n  {f.filename}, line {f.lineno}, in {f.name}" for f in frames[-3:])


def _timed(seconds: float, fn, *args):
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main(channel_fd: int) -> None:
    job = json.loads(sys.stdin.buffer.read())
    sys.stdin = open(os.devnull)  # noqa: SIM115 - student code gets an empty stdin
    channel = os.fdopen(channel_fd, "w")
    root = os.getpid()
    namespace: dict = {"__name__": "__main__"}
    timeout = float(job["cell_timeout"])
    cells, cases = [], {}
    start = time.perf_counter()
    for cell in job["cells"]:
        t0 = time.perf_counter()
        status, detail = "ok", ""
        try:
            code = compile(cell["source"], f"<cell {cell['index']}>", "exec")
            _timed(timeout, exec, code, namespace)
        except BaseException as err:  # anything the student's cell does is data to report
            status, detail = _status(err), _describe(err)
            if status == "error":
                detail += _student_frames(err)
        if os.getpid() != root:  # a fork of the student's: never let it report
            os._exit(0)
        cells.append({"index": cell["index"], "status": status, "detail": detail,
                      "seconds": time.perf_counter() - t0})
    exec_s = time.perf_counter() - start
    timed_out: set[str] = set()
    for case in job["cases"]:
        fn = namespace.get(case["function"])
        if not callable(fn):
            cases[case["id"]] = {"status": "missing", "detail": f"{case['function']}() is not defined"}
            continue
        if case["function"] in timed_out:  # one timeout per function is enough evidence
            cases[case["id"]] = {"status": "timeout", "detail": "skipped after an earlier case timed out"}
            continue
        try:
            value = encode(_timed(timeout, fn, *decode(case["args"])))
            cases[case["id"]] = {"status": "ok", "value": value}
        except UnsupportedValue as err:
            cases[case["id"]] = {"status": "error", "detail": str(err)}
        except BaseException as err:
            cases[case["id"]] = {"status": _status(err), "detail": _describe(err)}
            if isinstance(err, CellTimeout):
                timed_out.add(case["function"])
        if os.getpid() != root:
            os._exit(0)
    channel.write(json.dumps({"type": "results", "cells": cells, "cases": cases, "exec_s": exec_s,
                              "cases_s": time.perf_counter() - start - exec_s}) + "\n")
    channel.flush()
    os._exit(0)  # skip any atexit handler the student registered


if __name__ == "__main__":
    main(int(sys.argv[1]))
