"""The lab format: how one solution notebook describes questions, answers, checks and hidden tests.

A lab is a notebook in ``solutions/``. Three kinds of cell matter to grading, each marked in its
metadata under the key ``"course"``:

* answer cells, ``{"question": "softmax-temperature", "points": 3}``: code the student writes.
  The reference solution sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (text
  after ``BEGIN SOLUTION`` becomes the hint in the student's stub);
* test cells, ``{"tests": "softmax-temperature"}``: public checks, ``check(QUESTION, FUNCTION,
  [(ARGS, EXPECTED), ...])``, which students see and run, and optionally a block between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` with ``hidden_cases(QUESTION, FUNCTION,
  [ARGS, ...])``, removed from the student version;
* everything else (set-up, explanations) is taken from the release version when grading.

Arguments and expected values are Python literals (see :mod:`course_utils.grading.values`), so
the grader reads them from the source without executing anything. The grader scores every case,
public and hidden, against the reference solution's own outputs.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BEGIN_HIDDEN", "BEGIN_SOLUTION", "END_HIDDEN", "END_SOLUTION",
    "Case", "LabFormatError", "LabSpec", "Question", "lint_lab", "parse_lab",
]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_MARKERS = {BEGIN_SOLUTION: END_SOLUTION, BEGIN_HIDDEN: END_HIDDEN}


class LabFormatError(ValueError):
    """A solution notebook breaks the lab format; the message lists every problem."""


@dataclass(frozen=True)
class Case:
    """One call of a student's function on arguments the grader chose."""

    id: str  # "question/public/0", "question/hidden/2"
    question: str
    function: str
    args: list[Any]
    public: bool
    expected: Any = None  # public cases only: the value shown to students
    rtol: float = 1e-5
    atol: float = 1e-6


@dataclass
class Question:
    id: str
    points: float
    cell_id: str  # nbformat cell id of the answer cell in the release


@dataclass
class LabSpec:
    name: str
    questions: dict[str, Question]
    cases: list[Case]

    @property
    def total_points(self) -> float:
        return sum(q.points for q in self.questions.values())


def course_meta(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("course", {})
    return meta if isinstance(meta, dict) else {}


def marker_problems(source: str, where: str) -> list[str]:
    """Unclosed, unopened or nested markers in one cell's source."""
    problems, open_marker = [], None
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        begin = next((m for m in _MARKERS if text.startswith(m)), None)
        end = next((e for e in _MARKERS.values() if text.startswith(e)), None)
        if begin:
            if open_marker:
                problems.append(f"{where}, line {number}: {begin!r} nested inside {open_marker!r}")
            open_marker = begin
        elif end:
            if open_marker is None or _MARKERS[open_marker] != end:
                problems.append(f"{where}, line {number}: {end!r} without its BEGIN marker")
            open_marker = None
    if open_marker:
        problems.append(f"{where}: {open_marker!r} is never closed")
    return problems


def _calls(source: str, name: str) -> list[ast.Call]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                found.append(node)
    return found


def _parse_call(call: ast.Call, where: str) -> tuple[str, str, list, dict]:
    """(question, function name, literal cases, keyword literals) of a check/hidden_cases call."""
    if len(call.args) != 3 or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[1], ast.Name):
        raise LabFormatError(f"{where}: write checks as NAME(\"question-id\", function, [cases...])")
    try:
        cases = ast.literal_eval(call.args[2])
        keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError as err:
        raise LabFormatError(f"{where}: test cases must be Python literals ({err})") from None
    if not isinstance(cases, list):
        raise LabFormatError(f"{where}: the cases must be a list")
    return call.args[0].value, call.args[1].id, cases, keywords


def _jsonable(value: Any, where: str) -> list:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise LabFormatError(f"{where}: arguments must be JSON-like literals, got {value!r}") from None


def _cases_in(source: str, where: str) -> list[Case]:
    cases = []
    for call in _calls(source, "check"):
        qid, fn, items, kw = _parse_call(call, where)
        for i, item in enumerate(items):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple)):
                raise LabFormatError(f"{where}: public case {i} of {qid!r} must be ((args...), expected)")
            cases.append(Case(f"{qid}/public/{len([c for c in cases if c.question == qid and c.public])}", qid, fn,
                              _jsonable(list(item[0]), where), True, _jsonable(item[1], where), **kw))
    for call in _calls(source, "hidden_cases"):
        qid, fn, items, kw = _parse_call(call, where)
        for i, item in enumerate(items):
            if not isinstance(item, tuple):
                raise LabFormatError(f"{where}: hidden case {i} of {qid!r} must be a tuple of arguments")
            n = len([c for c in cases if c.question == qid and not c.public])
            cases.append(Case(f"{qid}/hidden/{n}", qid, fn, _jsonable(list(item), where), False, **kw))
    return cases


def lint_lab(nb: dict, name: str) -> list[str]:
    """Every problem with a solution notebook's markers and metadata (empty list: fine)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    test_questions = set()
    for index, cell in enumerate(nb.get("cells", [])):
        where = f"{name}: cell {index}"
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        meta = course_meta(cell)
        problems += marker_problems(source, where)
        if cell.get("cell_type") != "code" and any(m in source for m in (BEGIN_SOLUTION, BEGIN_HIDDEN)):
            problems.append(f"{where}: markers are only allowed in code cells")
        if "question" in meta:
            qid = meta["question"]
            if not isinstance(qid, str) or not qid:
                problems.append(f"{where}: question id must be a non-empty string")
            elif qid in seen:
                problems.append(f"{where}: duplicate question id {qid!r} (also cell {seen[qid]})")
            else:
                seen[qid] = index
            points = meta.get("points")
            if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
                problems.append(f"{where}: question {qid!r} has no positive 'points'")
            if BEGIN_SOLUTION not in source:
                problems.append(f"{where}: question {qid!r} has no {BEGIN_SOLUTION!r} block")
        elif BEGIN_SOLUTION in source:
            problems.append(f"{where}: a solution block outside an answer cell (metadata course.question)")
        if BEGIN_HIDDEN in source and "tests" not in meta:
            problems.append(f"{where}: hidden tests outside a test cell (metadata course.tests)")
        if "tests" in meta:
            test_questions.add(meta["tests"])
            try:
                for case in _cases_in(source, where):
                    if case.question != meta["tests"]:
                        problems.append(f"{where}: a test cell for {meta['tests']!r} checks {case.question!r}")
            except LabFormatError as err:
                problems.append(str(err))
    for qid, index in seen.items():
        if qid not in test_questions:
            problems.append(f"{name}: question {qid!r} (cell {index}) has no test cell")
    return problems


def parse_lab(nb: dict, name: str) -> LabSpec:
    """The questions and test cases of a solution notebook; LabFormatError if it is malformed."""
    problems = lint_lab(nb, name)
    if problems:
        raise LabFormatError("\n".join(problems))
    questions, cases = {}, []
    for cell in nb["cells"]:
        meta = course_meta(cell)
        if "question" in meta:
            questions[meta["question"]] = Question(meta["question"], float(meta["points"]), cell.get("id", ""))
        if "tests" in meta:
            cases += _cases_in(cell["source"], name)
    for case in cases:
        if case.question not in questions:
            raise LabFormatError(f"{name}: tests for unknown question {case.question!r}")
    for q in questions.values():
        if not any(c.question == q.id for c in cases):
            raise LabFormatError(f"{name}: question {q.id!r} has no test cases")
    return LabSpec(name, questions, cases)
