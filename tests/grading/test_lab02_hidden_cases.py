"""Lab 02's hidden cases catch a fit that stops early with scipy's default tolerances."""

import pytest
from edited_solutions import grade_edited_solution

from course_utils.sandbox import Limits

TIGHT = 'options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 50}'


def _default_tolerances(qid: str, source: str) -> str:
    assert qid != "fit" or TIGHT in source
    return source.replace(TIGHT, "options={}")  # the paper's recipe, with scipy's defaults


@pytest.mark.timeout(300)
def test_default_lbfgs_tolerances_lose_points_on_the_fit(tmp_path):
    by_q = grade_edited_solution("02_scaling_laws_lab.ipynb", _default_tolerances, tmp_path,
                                 Limits(cell_timeout_s=60, wall_timeout_s=200))
    assert by_q["loss"].status == by_q["allocation"].status == "passed"
    fit = by_q["fit"]
    assert fit.status == "failed" and fit.points < fit.max_points
