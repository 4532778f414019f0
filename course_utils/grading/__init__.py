"""Labs and their autograder.

* :mod:`~course_utils.grading.spec`: the lab format (answer, test and hidden-test cells);
* :mod:`~course_utils.grading.assign`: solution notebook -> student version;
* :mod:`~course_utils.grading.harness`: runs inside the sandbox, cells then cases one at a time;
* :mod:`~course_utils.grading.run`: the grader's side of that conversation, every message checked;
* :mod:`~course_utils.grading.grade`: a folder of submissions -> scores, in the trusted process;
* :mod:`~course_utils.grading.results`: what grading produces, as plain data;
* :mod:`~course_utils.grading.report`: grades.csv, feedback and Gradescope's results JSON;
* :mod:`~course_utils.grading.export`: the Gradescope autograder zip and its runner.

Lab notebooks import only the public checks from here.
"""

from course_utils.grading.checks import check, hidden_cases

__all__ = ["check", "hidden_cases"]
