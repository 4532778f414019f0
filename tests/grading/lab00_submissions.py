"""Build lab-00 submissions (good, blank and hostile) from the real solution and release."""

import copy
from pathlib import Path

import nbformat

from course_utils.grading.assign import make_student_version
from course_utils.grading.spec import course_meta
from course_utils.sandbox import Limits

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "solutions" / "00_getting_started_lab.ipynb"
# Tight limits keep the hostile cases quick; the defaults of `llm-course grade` are looser.
TEST_LIMITS = Limits(cell_timeout_s=3, wall_timeout_s=60, memory_bytes=2 << 30, max_processes=16)


def solution_answers() -> dict[str, str]:
    nb = nbformat.read(SOLUTION, as_version=4)
    return {course_meta(c)["question"]: c.source for c in nb.cells if "question" in course_meta(c)}


def release() -> nbformat.NotebookNode:
    return make_student_version(nbformat.read(SOLUTION, as_version=4), SOLUTION.name)


def answer_index(nb, question: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if course_meta(c).get("question") == question)


def submission(answers: dict[str, str] | None = None, correct: bool = True) -> nbformat.NotebookNode:
    """The release with answer cells filled: the solution's (if ``correct``), overridden by ``answers``."""
    nb = release()
    sources = solution_answers() if correct else {}
    sources.update(answers or {})
    for qid, source in sources.items():
        nb.cells[answer_index(nb, qid)].source = source
    return copy.deepcopy(nb)
