"""Lab 03's hidden cases catch ranking by raw dot product, which its public cases cannot."""

import pytest
from edited_solutions import grade_edited_solution

from course_utils.sandbox import Limits

NORMALISED = "similarity = p @ q / (np.linalg.norm(p, axis=1) * np.linalg.norm(q))"


def _dot_product(qid: str, source: str) -> str:
    assert qid != "top-k" or NORMALISED in source
    return source.replace(NORMALISED, "similarity = p @ q")  # longer vectors win regardless of direction


@pytest.mark.timeout(300)
def test_unnormalised_similarity_loses_points_on_selection(tmp_path):
    by_q = grade_edited_solution("03_icl_and_cot_lab.ipynb", _dot_product, tmp_path,
                                 Limits(cell_timeout_s=60, wall_timeout_s=200))
    assert by_q["messages"].status == by_q["vote"].status == "passed"
    top_k = by_q["top-k"]
    assert top_k.status == "failed" and 0 < top_k.points < top_k.max_points
    assert "hidden case" in top_k.reason
