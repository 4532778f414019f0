"""Plain data in and out of the sandbox, and the one comparison every check and grade uses.

Test-case arguments are Python literals (so the grader can read them with ``ast.literal_eval``,
without running anything). Two dict forms stand for tensors:

* ``{"__tensor__": [[1.0, 2.0]], "dtype": "float32"}``: that exact tensor;
* ``{"__randn__": [2, 4, 8], "seed": 3}``: ``torch.randn(2, 4, 8)`` from a fixed seed.

Return values go back as JSON: numbers, strings, booleans, None, lists, dicts with string keys,
and tensors / NumPy arrays as ``{"__tensor__": nested lists, "shape": [...]}``. Nothing else
crosses the boundary (no pickles).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["UnsupportedValue", "clip", "compare", "decode", "encode"]

_MAX_DEPTH = 20


class UnsupportedValue(TypeError):
    """A value that cannot be sent back as plain data."""


def decode(value: Any) -> Any:
    """Turn a literal test-case argument into the object the student's function receives."""
    if isinstance(value, dict) and "__randn__" in value:
        import torch

        gen = torch.Generator().manual_seed(int(value.get("seed", 0)))
        return torch.randn(*value["__randn__"], generator=gen, dtype=getattr(torch, value.get("dtype", "float32")))
    if isinstance(value, dict) and "__tensor__" in value:
        import torch

        return torch.tensor(value["__tensor__"], dtype=getattr(torch, value.get("dtype", "float32")))
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode(v) for v in value)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value


def encode(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy of a return value; raises UnsupportedValue for anything else."""
    if _depth > _MAX_DEPTH:
        raise UnsupportedValue("value is nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch.Tensor
        value = value.detach().cpu()
        return {"__tensor__": value.float().tolist() if value.is_floating_point() else value.tolist(),
                "shape": list(value.shape)}
    if type(value).__module__ == "numpy":
        if hasattr(value, "shape") and value.shape != ():
            return {"__tensor__": value.tolist(), "shape": list(value.shape)}
        return encode(value.item(), _depth + 1)
    if isinstance(value, (list, tuple)):
        return [encode(v, _depth + 1) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode(v, _depth + 1) for k, v in value.items()}
    raise UnsupportedValue(f"a {type(value).__name__} cannot be graded; return numbers, strings, lists or tensors")


def _flat(value: Any) -> tuple[list[int] | None, Any]:
    if isinstance(value, dict) and "__tensor__" in value:
        return value.get("shape"), value["__tensor__"]
    return None, value


def clip(text: str, limit: int = 200) -> str:
    """Text shortened to ``limit`` characters (an ellipsis marks the cut): for what a student controls."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, int) and abs(value) >= 10**60:
        return f"an integer of {len(str(abs(value)))} digits"
    return clip(repr(value), limit)


def compare(expected: Any, actual: Any, rtol: float = 1e-5, atol: float = 1e-6, _path: str = "") -> tuple[bool, str]:
    """(equal, reason): numbers within tolerance, everything else exactly; reason names the first difference.

    A tensor and a plain list of the same values compare equal, so a student may return either.
    """
    where = _path or "the result"
    shape_e, expected = _flat(expected)
    shape_a, actual = _flat(actual)
    if shape_e is not None and shape_a is not None and shape_e != shape_a:
        return False, f"{where} has shape {shape_a}, expected {shape_e}"
    if isinstance(expected, bool) or isinstance(actual, bool):
        return (expected is actual), f"{where} is {actual!r}, expected {expected!r}"
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        try:
            if math.isnan(expected) and math.isnan(actual):
                return True, ""
            ok = math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol)
        except OverflowError:  # an integer too large for a float: only exact equality counts
            ok = type(expected) is type(actual) and expected == actual
        return ok, "" if ok else f"{where} is {_short(actual)}, expected {_short(expected)}"
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return False, f"{where} has length {len(actual)}, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            ok, reason = compare(e, a, rtol, atol, f"{_path}[{i}]")
            if not ok:
                return False, reason
        return True, ""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return False, f"{where} has keys {sorted(actual)}, expected {sorted(expected)}"
        for key in expected:
            ok, reason = compare(expected[key], actual[key], rtol, atol, f"{_path}[{key!r}]")
            if not ok:
                return False, reason
        return True, ""
    ok = type(expected) is type(actual) and expected == actual
    return ok, "" if ok else f"{where} is {actual!r}, expected {expected!r}"
