"""Grade a lab's own solution with one deliberate mistake: do the hidden cases catch it?"""

from collections.abc import Callable
from pathlib import Path

import nbformat

from course_utils.grading.assign import make_student_version
from course_utils.grading.grade import grade_submissions, prepare_lab
from course_utils.grading.spec import course_meta
from course_utils.sandbox import Limits

ROOT = Path(__file__).resolve().parents[2]


def grade_edited_solution(lab: str, edit: Callable[[str, str], str], tmp_path: Path, limits: Limits) -> dict:
    """The release of ``solutions/<lab>`` answered with ``edit(question, solution source)``, graded.

    Returns the graded questions by id.
    """
    solution_path = ROOT / "solutions" / lab
    solution = nbformat.read(solution_path, as_version=4)
    answers = {course_meta(c)["question"]: c.source for c in solution.cells if "question" in course_meta(c)}
    nb = make_student_version(solution, solution_path.name)
    for cell in nb.cells:
        qid = course_meta(cell).get("question")
        if qid:
            cell.source = edit(qid, answers[qid])
    nbformat.write(nb, tmp_path / "student.ipynb")
    [result] = grade_submissions([tmp_path / "student.ipynb"], prepare_lab(solution_path, limits), tmp_path / "out")
    return {q.question: q for q in result.questions}


def assert_hidden_cases_catch(lab: str, mistakes: dict[str, tuple[str, str]], tmp_path: Path, limits: Limits) -> None:
    """Grade ``lab``'s solution with ``mistakes[question] = (right, wrong)`` replaced in each answer:
    each question must fail a hidden case and keep some of its points (the public checks passed)."""

    def edit(qid: str, source: str) -> str:
        right, wrong = mistakes[qid]
        assert right in source, f"the solution of {qid} changed: update the mistakes"
        return source.replace(right, wrong)

    by_q = grade_edited_solution(lab, edit, tmp_path, limits)
    for qid in mistakes:
        graded = by_q[qid]
        assert graded.status == "failed" and 0 < graded.points < graded.max_points, (qid, graded)
        assert "hidden case" in graded.reason
