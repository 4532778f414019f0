"""Lab 04's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import assert_hidden_cases_catch

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


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    assert_hidden_cases_catch("04_serving_lab.ipynb", MISTAKES, tmp_path, Limits(cell_timeout_s=60, wall_timeout_s=200))
