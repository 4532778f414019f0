"""course_utils: the code behind the LLM course.

Import what you need from the submodules, e.g. ``from course_utils.models import load_model``.
Nothing heavy is imported here, so ``import course_utils`` stays fast.
"""

__version__ = "0.1.0"
