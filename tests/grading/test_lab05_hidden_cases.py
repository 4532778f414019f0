"""Lab 05's hidden cases catch the mistakes its public cases let through."""

import pytest
from edited_solutions import assert_hidden_cases_catch

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


@pytest.mark.timeout(300)
def test_each_mistake_passes_the_public_checks_and_fails_a_hidden_case(tmp_path):
    assert_hidden_cases_catch("05_quantization_lab.ipynb", MISTAKES, tmp_path,
                              Limits(cell_timeout_s=60, wall_timeout_s=200))
