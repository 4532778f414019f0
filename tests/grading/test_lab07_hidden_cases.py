"""Lab 07's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import assert_hidden_cases_catch

from course_utils.sandbox import Limits

# one plausible mistake per question, each invisible to that question's public cases
MISTAKES = {
    # words[-tail:] keeps every word when tail is 0
    "middle": ("(words[len(words) - tail:] if tail else [])", "words[-tail:]"),
    # the oldest turns kept instead of the newest
    "budget": ("    for turn in reversed(history):\n", "    for turn in history:\n"),
    # ties broken by the smaller id instead of first appearance
    "rrf": ("sorted(scores, key=lambda item: -scores[item])", "sorted(scores, key=lambda item: (-scores[item], item))"),
}


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    assert_hidden_cases_catch("07_context_management_lab.ipynb", MISTAKES, tmp_path,
                              Limits(cell_timeout_s=60, wall_timeout_s=200))
