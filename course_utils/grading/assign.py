"""Turn a solution notebook into the student version (``llm-course assign``).

* each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block becomes one line that raises
  NotImplementedError with the hint written after BEGIN SOLUTION;
* each ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block is removed (a cell left
  empty is dropped);
* outputs and execution counts are cleared; cell ids and the course metadata stay, so the grader
  can find the answer cells again.

The same function builds the release notebook the grader runs, so labs/ cannot drift from what
is graded; a test checks labs/ is exactly what this produces now.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from course_utils.grading.spec import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, course_meta, lint_lab

__all__ = ["assign_all", "make_student_version"]


def _strip(source: str, question: str) -> str:
    out, skipping = [], None
    for line in source.splitlines():
        text = line.strip()
        if text.startswith(BEGIN_SOLUTION):
            indent = line[: len(line) - len(line.lstrip())]
            hint = text[len(BEGIN_SOLUTION):].strip(" :-")
            message = f"Question {question}: write your answer here." + (f" Hint: {hint}" if hint else "")
            out.append(f"{indent}raise NotImplementedError({message!r})")
            skipping = END_SOLUTION
        elif text.startswith(BEGIN_HIDDEN):
            skipping = END_HIDDEN
        elif skipping and text.startswith(skipping):
            skipping = None
        elif not skipping:
            out.append(line)
    return "\n".join(out).strip("\n")


def make_student_version(solution: nbformat.NotebookNode, name: str = "lab") -> nbformat.NotebookNode:
    """The student notebook for a solution notebook (raises ValueError if the solution is malformed)."""
    problems = lint_lab(solution, name)
    if problems:
        raise ValueError("\n".join(problems))
    nb = copy.deepcopy(solution)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            meta = course_meta(cell)
            cell.source = _strip(cell.source, meta.get("question") or meta.get("tests") or "?")
            cell.outputs, cell.execution_count = [], None
            if not cell.source.strip() and "tests" in meta:
                continue  # a test cell that held only hidden tests
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb


def assign_all(solutions_dir: Path, labs_dir: Path, check_only: bool = False) -> list[str]:
    """Write labs/ from solutions/; with ``check_only``, list the labs that are out of date instead."""
    stale = []
    labs_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(solutions_dir.glob("*_lab.ipynb")):
        text = nbformat.writes(make_student_version(nbformat.read(str(path), as_version=4), path.name)) + "\n"
        target = labs_dir / path.name
        if not target.exists() or target.read_text() != text:
            stale.append(target.name)
            if not check_only:
                target.write_text(text)
    return stale
