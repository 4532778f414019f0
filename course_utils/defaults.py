"""The course's defaults that several modules share, each defined once (and cheap to import).

* :data:`DEFAULT_MODEL`: the embedded model every notebook, benchmark and command uses unless told
  otherwise (SmolLM2-135M-Instruct, shipped offline; see :mod:`course_utils.assets`).

Defaults that belong to one object live on it and are read from there, never retyped:
the engine's sizes on :class:`course_utils.serving.config.EngineConfig`, the sandbox's limits on
:class:`course_utils.sandbox.Limits` (``llm-course serve`` and ``llm-course grade`` take their
flag defaults from those two).
"""

DEFAULT_MODEL = "smollm2-135m-instruct"
