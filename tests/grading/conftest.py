"""Shared fixture: lab 00 prepared once (its reference solution run in the sandbox)."""

import pytest
from lab00_submissions import SOLUTION, TEST_LIMITS

from course_utils.grading.grade import prepare_lab


@pytest.fixture(scope="session")
def lab_context():
    return prepare_lab(SOLUTION, TEST_LIMITS)
