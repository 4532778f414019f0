"""Chapter 3, in-context learning: prompting strategies and the circuit that makes copying possible.

* :mod:`~course_utils.icl.prompting`: few-shot selection, chain of thought, self-consistency and
  program of thought (run in the sandbox);
* :mod:`~course_utils.icl.induction`: the copying task, induction-head scores and in-context loss.
"""
