"""Lab 01's hidden cases catch the classic GQA mistake that its public case cannot."""

from pathlib import Path

import nbformat
import pytest

from course_utils.grading.assign import make_student_version
from course_utils.grading.grade import grade_submissions, prepare_lab
from course_utils.grading.spec import course_meta
from course_utils.sandbox import Limits

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "solutions" / "01_transformer_architecture_lab.ipynb"


@pytest.mark.timeout(300)
def test_repeat_instead_of_repeat_interleave_loses_points(tmp_path):
    solution = nbformat.read(SOLUTION, as_version=4)
    answers = {course_meta(c)["question"]: c.source for c in solution.cells if "question" in course_meta(c)}
    nb = make_student_version(solution, SOLUTION.name)
    for cell in nb.cells:
        qid = course_meta(cell).get("question")
        if qid:
            cell.source = answers[qid]
            if qid == "gqa-attention":  # heads 0,1,2,3 -> kv 0,1,0,1 instead of 0,0,1,1
                cell.source = cell.source.replace("k.repeat_interleave(group, dim=1)", "k.repeat(1, group, 1, 1)")
                cell.source = cell.source.replace("v.repeat_interleave(group, dim=1)", "v.repeat(1, group, 1, 1)")
    nbformat.write(nb, tmp_path / "student.ipynb")
    ctx = prepare_lab(SOLUTION, Limits(cell_timeout_s=30, wall_timeout_s=120))
    [result] = grade_submissions([tmp_path / "student.ipynb"], ctx, tmp_path / "out")
    by_q = {q.question: q for q in result.questions}
    assert by_q["rope"].status == by_q["decode-step"].status == "passed"
    gqa = by_q["gqa-attention"]
    # The public case has 2 query heads sharing 1 KV head, where both mappings agree; the
    # hidden MHA and MQA cases agree too; the hidden grouped cases with H_kv > 1 do not.
    assert gqa.status == "failed" and 0 < gqa.points < gqa.max_points
    assert "hidden case" in gqa.reason
