"""A decoder layer's elementwise work in one compiled loop per piece (CPU, float32).

Between its matrix multiplies a layer adds the residual, normalises, applies SiLU and the gate,
and rotates queries and keys. PyTorch runs each as several operators (``F.rms_norm`` alone is a
square, a mean, a reciprocal square root and two products on the CPU), each one a pass over
memory with its own dispatch cost; at 64 decode rows these passes cost a 135M model about a tenth
of its step. ``fused_elementwise.c`` does each piece in one loop; these wrappers check what they
are given and call it. ``torch.compile`` of the same pieces (dynamic shapes) was tried first, as
the serving issue suggested: on the course's 2-core machine a 64-sequence decode step took as long
compiled as with the operators (115-118 against 111-116 ms, two tries each, not recorded by the
benchmark), after 8-17 s of compiling per process.

Each function has a PyTorch reference it must match to float32 rounding
(``tests/test_serving_fused_elementwise.py``): ``F.rms_norm``, ``F.silu(gate) * up`` and
:func:`~course_utils.architecture.rope.apply_rope`. :func:`available` is False where the course's
kernels could not be built (no C compiler); callers keep PyTorch's operators then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from course_utils.serving.paged_kernel import load_library

__all__ = ["ELEMENTWISE_SCOPE", "add_rms_norm_", "available", "labelled", "rope_", "silu_mul"]

ELEMENTWISE_SCOPE = "fused elementwise"  # the profiler scope a loop runs in while labelled()
_labelled = False


@contextlib.contextmanager
def labelled() -> Iterator[None]:
    """While active, each compiled loop runs inside a profiler scope named ``ELEMENTWISE_SCOPE``: no
    PyTorch operator times a C call, so without it a profile would count the loops as Python."""
    global _labelled
    before, _labelled = _labelled, True
    try:
        yield
    finally:
        _labelled = before


def _run(function, *args) -> None:
    if not _labelled:
        function(*args)
        return
    with torch.profiler.record_function(ELEMENTWISE_SCOPE):
        function(*args)


def available() -> bool:
    """Whether the compiled loops were built on this machine (a C compiler was found)."""
    return load_library() is not None


def _check(name: str, t: torch.Tensor) -> None:
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous float32 CPU tensor, got {t.dtype} on {t.device}"
                         f"{'' if t.is_contiguous() else ', not contiguous'}")


def add_rms_norm_(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                  out: torch.Tensor) -> torch.Tensor:
    """``x += delta`` in place (skipped when ``delta`` is None), then ``out = F.rms_norm(x, weight, eps)``.

    x, delta, out (..., d); weight (d,). Returns ``out``."""
    for name, t in (("x", x), ("weight", weight), ("out", out), *(() if delta is None else (("delta", delta),))):
        _check(name, t)
    d = x.shape[-1]
    if weight.shape != (d,) or out.shape != x.shape or (delta is not None and delta.shape != x.shape):
        given = "none" if delta is None else tuple(delta.shape)
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, delta {given}, weight {tuple(weight.shape)}, "
                         f"out {tuple(out.shape)}")
    _run(load_library().add_rms_norm, x.data_ptr(), None if delta is None else delta.data_ptr(), weight.data_ptr(),
         x.numel() // max(d, 1), d, eps, out.data_ptr(), torch.get_num_threads())
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(..., 2f) gate and up side by side -> (..., f) ``F.silu(gate) * up``."""
    _check("gate_up", gate_up)
    if gate_up.shape[-1] % 2:
        raise ValueError(f"gate_up's last dimension must hold gate and up, two equal halves; got {gate_up.shape[-1]}")
    f = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], f)
    _run(load_library().silu_mul, gate_up.data_ptr(), gate_up.numel() // max(2 * f, 1), f, out.data_ptr(),
         torch.get_num_threads())
    return out


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotated: int) -> torch.Tensor:
    """Rotate the first ``rotated`` heads of each token in place, as :func:`apply_rope` would.

    x (N, heads, hd): each token's heads (queries, then keys, then values, say); cos, sin (N, hd)
    from :func:`~course_utils.architecture.rope.rope_cos_sin`. Returns ``x``."""
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        _check(name, t)
    n, heads, dim = x.shape
    if cos.shape != (n, dim) or sin.shape != (n, dim) or dim % 2 or not 0 <= rotated <= heads:
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}, "
                         f"rotated {rotated} (an even head size and 0 <= rotated <= heads needed)")
    _run(load_library().rope, x.data_ptr(), n, heads, rotated, dim, cos.data_ptr(), sin.data_ptr(),
         torch.get_num_threads())
    return x
