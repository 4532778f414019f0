"""Sandbox entry point for model-written programs: run the Python source given on stdin.

Started by :func:`course_utils.sandbox.run_sandboxed` (which sets the limits); an exception
ends the process with a traceback on stderr and a non-zero exit status.
"""

import os
import sys


def main() -> None:
    source = sys.stdin.read()
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the program gets an empty stdin
    exec(compile(source, "<program>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
