"""Lab 05's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import grade_edited_solution

from course_utils.sandbox import Limits

# one plausible mistake per question, each invisible to that question's public cases
MISTAKES = {
    # no guard for an all-zero input: 0 / 0 scales
    "absmax": ("    if scale == 0.0:\n        scale = 1.0\n    q = np.clip(np.round(x / scale), -top, top)",
               "    q = np.clip(np.round(x / scale), -top, top)"),
    # the range is not widened to include zero: data far from zero is clipped
    "zero-point": ("low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)",
                   "low, high = float(x.min()), float(x.max())"),
    # rounding instead of llama.cpp's truncation after + 8.5: differs only on exact halves
    "q4_0": ("np.trunc(x * inverse + np.float32(8.5))", "np.round(x * inverse + np.float32(8))"),
}


def _with_mistakes(qid: str, source: str) -> str:
    right, wrong = MISTAKES[qid]
    assert right in source, f"the solution of {qid} changed: update MISTAKES"
    return source.replace(right, wrong)


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    by_q = grade_edited_solution("05_quantization_lab.ipynb", _with_mistakes, tmp_path,
                                 Limits(cell_timeout_s=60, wall_timeout_s=200))
    for qid in MISTAKES:
        graded = by_q[qid]
        assert graded.status == "failed" and 0 < graded.points < graded.max_points, (qid, graded)
        assert "hidden case" in graded.reason
