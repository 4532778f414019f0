"""A compiled kernel for decode attention over the paged KV pool, read in place.

The pure-PyTorch path of :class:`~course_utils.serving.model_runner.PagedKVCache` gathers each
decoding sequence's blocks into a contiguous tensor before calling attention: every layer of
every step copies the whole context. A kernel that follows the block table itself reads each key
and value row once where it lies; that is what vLLM's paged-attention kernels do on a GPU.
PyTorch has no such operator on the CPU, so the course compiles its own, ``paged_attention.c``
(C with OpenMP over sequences), the first time an engine needs it in a process.

The same build holds the engine's fused elementwise loops, ``fused_elementwise.c`` (wrapped by
:mod:`course_utils.serving.fused_elementwise`): both sources become one shared library, built once
per process by :func:`load_library`. Where no C compiler is found, or the build fails, it returns
``None`` and the engine keeps the gather path and PyTorch's operators (``kernel_status()`` says
why). The kernel is tested against the gather + ``F.scaled_dot_product_attention`` path it
replaces (``tests/test_serving_paged_kernel.py``).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["kernel_status", "load_kernel", "load_library", "paged_decode_attention"]

SOURCES = tuple(Path(__file__).with_name(name) for name in ("paged_attention.c", "fused_elementwise.c"))
_P, _I, _F, _T = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int  # pointer, size, float, threads
SIGNATURES = {  # each exported function's argument types; all return int (0: done) or nothing
    "paged_decode_attention": ([_P, _P, _P, _P, _I, _P, _I, _I, _I, _I, _I, _I, _F, _P, _T], ctypes.c_int),
    "add_rms_norm": ([_P, _P, _P, _I, _I, _F, _P, _T], None),
    "silu_mul": ([_P, _I, _I, _P, _T], None),
    "rope": ([_P, _I, _I, _I, _I, _P, _P, _T], None),
}
# tried in order: the fastest build this compiler accepts (no OpenMP: one thread, still no copies)
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"])
_ERRORS = {1: "scratch memory could not be allocated",
           2: "a context length exceeds its block table, or a block id is outside the pool"}
_status = "not built yet"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@functools.cache
def load_library() -> ctypes.CDLL | None:
    """The course's compiled CPU kernels (``SOURCES``, one shared library), built once per process;
    None if it cannot be built or loaded (``kernel_status()`` says why)."""
    global _status
    compiler = _compiler()
    if compiler is None:
        _status = "no C compiler found (set CC): decode attention gathers blocks instead"
        return None
    build = Path(tempfile.mkdtemp(prefix="llm-course-kernel-"))
    atexit.register(shutil.rmtree, build, ignore_errors=True)
    library, errors = build / "course_kernels.so", []
    for flags in FLAG_SETS:
        cmd = [compiler, *flags, "-shared", "-fPIC", *map(str, SOURCES), "-o", str(library), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            errors.append(f"{' '.join(flags)}: {error}")
            continue
        if done.returncode == 0:
            try:
                loaded = ctypes.CDLL(str(library))
            except OSError as error:  # built but not loadable (say, a temporary folder mounted noexec)
                _status = f"the built kernel could not be loaded ({error}): decode attention gathers blocks instead"
                return None
            for name, (argtypes, restype) in SIGNATURES.items():
                function = getattr(loaded, name)
                function.argtypes, function.restype = argtypes, restype
            _status = f"compiled with {Path(compiler).name} {' '.join(flags)}"
            return loaded
        errors.append(f"{' '.join(flags)}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    _status = f"the build failed ({'; '.join(map(str, errors))}): decode attention gathers blocks instead"
    return None


def load_kernel():
    """The compiled ``paged_decode_attention`` C function; None where :func:`load_library` could not build it."""
    library = load_library()
    return None if library is None else library.paged_decode_attention


def kernel_status() -> str:
    """How the kernel was built, or why it was not (after :func:`load_kernel` ran)."""
    return _status


def paged_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_tables: torch.Tensor,
                           context_lens: torch.Tensor, block_size: int) -> torch.Tensor:
    """One query per sequence against its paged context.

    q (n, H, hd) float32; k, v (num_blocks * block_size, H_kv, hd), one layer of the pool,
    contiguous; block_tables (n, width) and context_lens (n,) int64 -> (n, H, hd), softmax
    scaled by 1/sqrt(hd) as ``F.scaled_dot_product_attention``. Raises RuntimeError where the
    kernel is unavailable, ValueError on tensors it cannot read.
    """
    kernel = load_kernel()
    if kernel is None:
        raise RuntimeError(f"the paged attention kernel is unavailable: {_status}")
    n, heads, dim = q.shape
    slots, kv_heads, _ = k.shape
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise ValueError(f"{name} must be float32 on the CPU, got {t.dtype} on {t.device}")
    if not (k.is_contiguous() and v.is_contiguous()) or v.shape != k.shape or k.shape[2] != dim:
        raise ValueError(f"k and v must be contiguous (slots, H_kv, {dim}), got {tuple(k.shape)} and {tuple(v.shape)}")
    if heads % kv_heads or slots % block_size or block_tables.shape[0] != n or context_lens.shape != (n,):
        raise ValueError(f"shapes do not fit: q {tuple(q.shape)}, pool {tuple(k.shape)}, block_size {block_size}, "
                         f"tables {tuple(block_tables.shape)}, lens {tuple(context_lens.shape)}")
    q, tables, lens = q.contiguous(), block_tables.long().contiguous(), context_lens.long().contiguous()
    out = torch.empty_like(q)
    code = kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), tables.data_ptr(), tables.shape[1], lens.data_ptr(), n,
                  heads, kv_heads, dim, block_size, slots // block_size, dim ** -0.5, out.data_ptr(),
                  torch.get_num_threads())
    if code:
        raise ValueError(f"paged attention failed: {_ERRORS.get(code, code)}")
    return out
