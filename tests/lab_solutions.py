"""The answer cells of a lab's solution notebook, run into one namespace, for reference tests."""

from pathlib import Path

import nbformat

from course_utils.grading.spec import course_meta

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def solution_namespace(notebook: str, preset: dict) -> dict:
    """Execute every answer cell of ``solutions/<notebook>`` in a namespace holding ``preset`` (the lab's imports)."""
    space = dict(preset)
    for cell in nbformat.read(SOLUTIONS / notebook, as_version=4).cells:
        if "question" in course_meta(cell):
            exec(cell.source, space)
    return space
