"""Lab 01's hidden cases catch the classic GQA mistake that its public case cannot."""

import pytest
from edited_solutions import grade_edited_solution

from course_utils.sandbox import Limits


def _repeat_not_interleave(qid: str, source: str) -> str:
    if qid != "gqa-attention":  # heads 0,1,2,3 -> kv 0,1,0,1 instead of 0,0,1,1
        return source
    source = source.replace("k.repeat_interleave(group, dim=1)", "k.repeat(1, group, 1, 1)")
    return source.replace("v.repeat_interleave(group, dim=1)", "v.repeat(1, group, 1, 1)")


@pytest.mark.timeout(300)
def test_repeat_instead_of_repeat_interleave_loses_points(tmp_path):
    by_q = grade_edited_solution("01_transformer_architecture_lab.ipynb", _repeat_not_interleave, tmp_path,
                                 Limits(cell_timeout_s=30, wall_timeout_s=120))
    assert by_q["rope"].status == by_q["decode-step"].status == "passed"
    gqa = by_q["gqa-attention"]
    # The public case has 2 query heads sharing 1 KV head, where both mappings agree; the
    # hidden MHA and MQA cases agree too; the hidden grouped cases with H_kv > 1 do not.
    assert gqa.status == "failed" and 0 < gqa.points < gqa.max_points
    assert "hidden case" in gqa.reason
