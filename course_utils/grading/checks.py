"""What lab notebooks call: public checks with honest feedback.

``check`` tells a student how many *public* checks their function passes. It never says "all
tests passed": the hidden tests run only when the lab is graded, outside the student's notebook.
``hidden_cases`` appears only in solution notebooks; there it runs the reference function on the
hidden arguments, so a broken hidden test shows up when the solution is executed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from course_utils.grading.values import UnsupportedValue, compare, decode, encode

__all__ = ["check", "hidden_cases"]


def check(question: str, function: Callable, cases: Sequence[tuple[tuple, Any]],
          rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Run ``function`` on each public case ``((args...), expected)`` and print what passed.

    Returns True if every public check passed.
    """
    passed, notes = 0, []
    for i, (args, expected) in enumerate(cases, 1):
        try:
            actual = encode(function(*decode(list(args))))
        except NotImplementedError as err:
            print(f"{question}: not answered yet ({err})")
            return False
        except UnsupportedValue as err:
            notes.append(f"  public check {i}: {err}")
            continue
        except Exception as err:  # the student's bug: report it, keep checking
            notes.append(f"  public check {i}: raised {type(err).__name__}: {err}")
            continue
        ok, reason = compare(encode(decode(expected)), actual, rtol, atol)
        if ok:
            passed += 1
        else:
            notes.append(f"  public check {i}: {reason}")
    print(f"{question}: {passed}/{len(cases)} public checks passed. "
          "Hidden tests run when the lab is graded.")
    for note in notes:
        print(note)
    return passed == len(cases)


def hidden_cases(question: str, function: Callable, cases: Sequence[tuple], rtol: float = 1e-5,
                 atol: float = 1e-6) -> None:
    """Solution notebooks only: make sure the reference runs on every hidden case."""
    for args in cases:
        encode(function(*decode(list(args))))
    print(f"{question}: the reference solution ran on {len(cases)} hidden cases")
