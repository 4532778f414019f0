"""Labs and their autograder.

* :mod:`~course_utils.grading.spec`: the lab format (answer, test and hidden-test cells);
* :mod:`~course_utils.grading.assign`: solution notebook -> student version;
* :mod:`~course_utils.grading.run`: one notebook's cells in the sandbox, results as plain data;
* :mod:`~course_utils.grading.grade`: a folder of submissions -> scores, in the trusted process;
* :mod:`~course_utils.grading.report`: grades.csv, feedback and Gradescope-style JSON.

Lab notebooks import only the public checks from here.
"""

from course_utils.grading.checks import check, hidden_cases

__all__ = ["check", "hidden_cases"]
