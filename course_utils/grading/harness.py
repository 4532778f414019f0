"""Runs inside the sandbox: execute a notebook's cells, then call the graded functions.

A conversation with the grader, one JSON object per line each way:

1. stdin: ``{"cells": [{"index", "source"}], "cell_timeout": seconds}``; the cells run, and
   the channel gets ``{"type": "cells", "cells": [{"index", "status", "detail", "seconds"}],
   "exec_s"}``.
2. Then, case by case, stdin: ``{"id", "function", "args"}``; the channel gets ``{"type":
   "case", "id", "status", "value" | "detail"}``. The grader sends the next case only after
   this answer, public cases before hidden ones, and closes stdin after the last.

So while a cell runs no test argument is in this process at all, and while a case runs only its
own arguments are: hidden arguments cannot leak through a cell's output or a public case's
value. This process never sees expected values: scoring happens in the grader, which only
reads the values (and checks every message's shape).
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


def _call(namespace: dict, case: dict, timeout: float, timed_out: set[str]) -> dict:
    """Call one graded function on one case's arguments; the outcome as plain data."""
    fn = namespace.get(case["function"])
    if not callable(fn):
        return {"status": "missing", "detail": f"{case['function']}() is not defined"}
    if case["function"] in timed_out:  # one timeout per function is enough evidence
        return {"status": "timeout", "detail": "skipped after an earlier case timed out"}
    try:
        return {"status": "ok", "value": encode(_timed(timeout, fn, *decode(case["args"])))}
    except UnsupportedValue as err:
        return {"status": "error", "detail": str(err)}
    except BaseException as err:
        if isinstance(err, CellTimeout):
            timed_out.add(case["function"])
        return {"status": _status(err), "detail": _describe(err)}


def main(channel_fd: int) -> None:
    control = os.fdopen(os.dup(0), "rb")  # the grader's requests; it never sends ahead of our answers
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - student code gets an empty stdin
    channel = os.fdopen(channel_fd, "w")

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    root = os.getpid()
    job = json.loads(control.readline())
    namespace: dict = {"__name__": "__main__"}
    timeout = float(job["cell_timeout"])
    cells = []
    start = time.perf_counter()
    for cell in job.pop("cells"):
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
    send({"type": "cells", "cells": cells, "exec_s": time.perf_counter() - start})
    timed_out: set[str] = set()
    for line in iter(control.readline, b""):
        case = json.loads(line)
        outcome = _call(namespace, case, timeout, timed_out)
        if os.getpid() != root:
            os._exit(0)
        send({"type": "case", "id": case["id"], **outcome})
        del case, outcome
    os._exit(0)  # skip any atexit handler the student registered


if __name__ == "__main__":
    main(int(sys.argv[1]))
