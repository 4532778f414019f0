"""Execute a lab notebook's code in the sandbox and bring back plain results."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.grading.spec import Case
from course_utils.sandbox import Limits, StopRun, remove_tree, run_sandboxed

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
    notes: list[str] = field(default_factory=list)  # for the instructor: e.g. a job folder left behind


_CELL_STATUSES = ("ok", "error", "timeout", "memory", "exit")
_CASE_STATUSES = ("ok", "error", "timeout", "memory", "exit", "missing")
MAX_DETAIL_CHARS = 500  # student-controlled text kept from any one message field


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _detail(message: dict) -> str:
    detail = message.get("detail", "")
    if not isinstance(detail, str):
        raise StopRun("a result whose 'detail' is not a string")
    return detail[:MAX_DETAIL_CHARS]


class _Conversation:
    """The grader's side of the harness protocol: checks each message, then sends the next case.

    Any message out of turn or of the wrong shape raises :class:`StopRun` (the run is killed
    and graded as this student's error).
    """

    def __init__(self, sources: list[tuple[int, str]], cases: list[Case]) -> None:
        self.indices = [i for i, _ in sources]
        self.todo = [c for c in cases if c.public] + [c for c in cases if not c.public]  # public first
        self.stage = "sandbox"
        self.cells: list[dict[str, Any]] = []
        self.cases: dict[str, dict[str, Any]] = {}
        self.exec_s = 0.0

    def _next_case(self) -> bytes | None:
        if len(self.cases) == len(self.todo):
            self.stage = "done"
            return None
        case = self.todo[len(self.cases)]
        return (json.dumps({"id": case.id, "function": case.function, "args": case.args}) + "\n").encode()

    def _take_cells(self, message: dict) -> None:
        cells, exec_s = message.get("cells"), message.get("exec_s")
        if not isinstance(cells, list) or len(cells) != len(self.indices) or not _number(exec_s):
            raise StopRun("a cells message of the wrong shape")
        for index, cell in zip(self.indices, cells, strict=True):
            if (not isinstance(cell, dict) or cell.get("index") != index or cell.get("status") not in _CELL_STATUSES
                    or not _number(cell.get("seconds"))):
                raise StopRun(f"a malformed report for cell {index}")
            self.cells.append({"index": index, "status": cell["status"], "detail": _detail(cell),
                               "seconds": float(cell["seconds"])})
        self.exec_s = float(exec_s)

    def _take_case(self, message: dict) -> None:
        expected = self.todo[len(self.cases)].id
        if message.get("id") != expected or message.get("status") not in _CASE_STATUSES:
            raise StopRun(f"a malformed result for case {expected}")
        if message["status"] == "ok":
            if "value" not in message:
                raise StopRun(f"a result for case {expected} without a value")
            self.cases[expected] = {"status": "ok", "value": message["value"]}
        else:
            self.cases[expected] = {"status": message["status"], "detail": _detail(message)}

    def __call__(self, message: dict[str, Any]) -> bytes | None:
        kind = message.get("type")
        if kind == "sandbox" and self.stage == "sandbox":
            self.stage = "cells"
            return b""
        if kind == "cells" and self.stage == "cells":
            self._take_cells(message)
            self.stage = "cases"
            return self._next_case()
        if kind == "case" and self.stage == "cases":
            self._take_case(message)
            return self._next_case()
        raise StopRun(f"an unexpected {str(kind)[:40]!r} message")


def run_cells(sources: list[tuple[int, str]], cases: list[Case], limits: Limits) -> NotebookRun:
    """Run ``(cell index, source)`` pairs in order in a fresh sandbox, then call every case."""
    talk = _Conversation(sources, cases)
    job = {"cells": [{"index": i, "source": s} for i, s in sources], "cell_timeout": limits.cell_timeout_s}
    workdir = Path(tempfile.mkdtemp(prefix="llm-course-job-"))
    try:
        run = run_sandboxed("course_utils.grading.harness", (json.dumps(job) + "\n").encode(), workdir, limits,
                            on_message=talk)
    finally:
        leftover = remove_tree(workdir)
    notes = [f"the job folder could not be removed: {leftover}"] if leftover else []
    if talk.stage == "done" and not run.malformed:
        return NotebookRun(talk.cells, talk.cases, True, "", "", run.wall_s, talk.exec_s, run.limits_in_force,
                           run.output_truncated, notes)
    kind = "error"
    if run.malformed:
        failure = f"the notebook's process sent {run.malformed[0]} on the result channel"
    elif run.timed_out:
        kind = "timeout"
        failure = f"the notebook did not finish within the {limits.wall_timeout_s:g} s wall-clock limit"
    elif run.out_of_memory:
        kind, failure = "memory", "a process was killed for going over the memory limit"
    elif run.returncode is not None and run.returncode < 0:
        failure = f"the process was killed by signal {-run.returncode}"
    else:
        failure = f"the process exited (code {run.returncode}) before reporting results"
        if "MemoryError" in run.stderr:
            kind, failure = "memory", failure + " after running out of memory"
    return NotebookRun(talk.cells, talk.cases, False, failure, kind, run.wall_s, run.wall_s, run.limits_in_force,
                       run.output_truncated, notes)
