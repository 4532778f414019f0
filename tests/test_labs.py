"""Every lab: labs/ is generated from solutions/, solutions score full marks, student versions zero."""

import shutil
from pathlib import Path

import nbformat
import pytest

from course_utils.grading import check
from course_utils.grading.assign import assign_all, make_student_version
from course_utils.grading.grade import grade_submissions, prepare_lab
from course_utils.grading.spec import LabFormatError, lint_lab, parse_lab
from course_utils.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*_lab.ipynb"))


def test_there_is_at_least_one_lab():
    assert SOLUTIONS


def test_labs_folder_is_exactly_what_assign_produces(tmp_path):
    assert assign_all(ROOT / "solutions", ROOT / "labs", check_only=True) == []
    assert sorted(p.name for p in (ROOT / "labs").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_scores_full_marks_and_student_version_zero(solution, tmp_path):
    ctx = prepare_lab(solution, Limits(cell_timeout_s=60, wall_timeout_s=240))
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(solution, subs / "reference.ipynb")
    shutil.copy(ROOT / "labs" / solution.name, subs / "student.ipynb")
    results = {r.student: r for r in grade_submissions(sorted(subs.iterdir()), ctx, tmp_path / "out", jobs=2)}
    assert results["reference"].total == results["reference"].max_total == ctx.spec.total_points
    assert all(q.status == "passed" for q in results["reference"].questions)
    assert results["student"].total == 0
    assert {q.status for q in results["student"].questions} == {"missing"}
    assert all("NotImplementedError" in q.reason for q in results["student"].questions)


def test_student_version_hides_solutions_and_hidden_tests():
    for solution in SOLUTIONS:
        text = (ROOT / "labs" / solution.name).read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "hidden_cases("):
            assert marker not in text, f"{marker} leaked into labs/{solution.name}"
        assert "raise NotImplementedError" in text


def _lab(*cells):
    nb = nbformat.v4.new_notebook()
    for source, meta in cells:
        cell = nbformat.v4.new_code_cell(source)
        if meta:
            cell.metadata["course"] = meta
        nb.cells.append(cell)
    return nb


ANSWER = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"
TESTS = "check('q1', f, [((1,), 1)])"


@pytest.mark.parametrize(
    "cells, problem",
    [
        ([("def f(x):\n    ### BEGIN SOLUTION\n    return x", {"question": "q1", "points": 1}),
          (TESTS, {"tests": "q1"})], "never closed"),
        ([("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION",
           {"question": "q1", "points": 1}), (TESTS, {"tests": "q1"})], "nested"),
        ([(ANSWER, {"question": "q1", "points": 1}), (ANSWER, {"question": "q1", "points": 2}),
          (TESTS, {"tests": "q1"})], "duplicate question id"),
        ([(ANSWER, {"question": "q1"}), (TESTS, {"tests": "q1"})], "no positive 'points'"),
        ([(ANSWER, {"question": "q1", "points": 1}), (TESTS, {"tests": "q1"}),
          ("### BEGIN HIDDEN TESTS\nhidden_cases('q1', f, [(2,)])\n### END HIDDEN TESTS", None)],
         "hidden tests outside a test cell"),
        ([(ANSWER, {"question": "q1", "points": 1})], "has no test cell"),
        ([(ANSWER, {"question": "q1", "points": 1}), ("check('q1', f, [((x,), 1)])", {"tests": "q1"})],
         "literals"),
    ],
)
def test_lab_linter_rejects_malformed_labs(cells, problem):
    nb = _lab(*cells)
    assert any(problem in p for p in lint_lab(nb, "bad_lab.ipynb")), lint_lab(nb, "bad_lab.ipynb")
    with pytest.raises(LabFormatError, match=problem):
        parse_lab(nb, "bad_lab.ipynb")
    with pytest.raises(ValueError):
        make_student_version(nb, "bad_lab.ipynb")


def test_stub_carries_the_hint_and_keeps_indentation():
    nb = _lab(("def f(x):\n    ### BEGIN SOLUTION use the identity\n    return x\n    ### END SOLUTION",
               {"question": "q1", "points": 1}), (TESTS, {"tests": "q1"}))
    source = make_student_version(nb, "lab").cells[0].source
    assert source == ("def f(x):\n    raise NotImplementedError('Question q1: write your answer here. "
                      "Hint: use the identity')")


def test_check_reports_public_checks_only(capsys):
    assert check("q", lambda x: x * 2, [((1,), 2), ((2,), 4)]) is True
    out = capsys.readouterr().out
    assert "2/2 public checks passed" in out and "Hidden tests run when the lab is graded" in out
    assert "all tests passed" not in out.lower()
    assert check("q", lambda x: x, [((1,), 2)]) is False
    assert "0/1 public checks passed" in capsys.readouterr().out


def test_check_explains_an_unanswered_question(capsys):
    def stub(x):
        raise NotImplementedError("Question q: write your answer here.")

    assert check("q", stub, [((1,), 1)]) is False
    assert "not answered yet" in capsys.readouterr().out
