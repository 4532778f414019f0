"""Lab 04's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import grade_edited_solution

from course_utils.sandbox import Limits

# one plausible mistake per question, each invisible to that question's public cases
MISTAKES = {
    # blocks go back in table order, so a sequence's first blocks are reused first
    "allocator": ("self.free_blocks.extend(reversed(table))", "self.free_blocks.extend(table)"),
    # a softmax without subtracting the largest logit overflows on large logits
    "top-p": ("probs = np.exp(z - z.max())", "probs = np.exp(z)"),
    # a cumulative sum that rounds below u runs off the end of the vocabulary
    "draw": ("return int(np.flatnonzero(np.asarray(probs) > 0)[-1])", "return len(cumulative)"),
}


def _with_mistakes(qid: str, source: str) -> str:
    right, wrong = MISTAKES[qid]
    assert right in source, f"the solution of {qid} changed: update MISTAKES"
    return source.replace(right, wrong)


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    by_q = grade_edited_solution("04_serving_lab.ipynb", _with_mistakes, tmp_path,
                                 Limits(cell_timeout_s=60, wall_timeout_s=200))
    for qid in MISTAKES:
        graded = by_q[qid]
        assert graded.status == "failed" and 0 < graded.points < graded.max_points, (qid, graded)
        assert "hidden case" in graded.reason
